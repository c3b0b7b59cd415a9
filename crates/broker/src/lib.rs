//! RabbitMQ: the topology fedq uses, declaring it, and the management API that creates and
//! revokes node users; and the one seam between fedq and lapin: connections supervised with one
//! backoff (`supervisor`, `backoff`), the current publishing channel (`link`), publishing with
//! one reading of the broker's confirm (`publish`), and deliveries with their settlement
//! (`delivery`).
//!
//! ```text
//! nodes ──publish──▶ exchange fedq.ingress (fanout) ──▶ queue fedq.ingress ──▶ router
//! router ──publish──▶ exchange fedq.deliver (direct, key = organization id)
//!                        ──▶ queue fedq.org.<organization id> ──▶ that organization's nodes
//! router ──refused──▶ exchange fedq.dead (fanout) ──▶ queue fedq.dead-letters
//! ```
//!
//! Queues are quorum queues: replicated when the broker is a cluster, durable always. A message
//! that keeps failing is dead-lettered by RabbitMQ itself after `DELIVERY_LIMIT` deliveries.

use fedq_core::{ids, protocol};
use fedq_tls as tls;

pub mod backoff;
pub mod delivery;
pub mod endpoints;
pub mod link;
pub mod management;
pub mod publish;
pub mod supervisor;

pub mod properties;

pub use delivery::{AckWindow, Acker, BrokerError, Consumer, Delivery};
/// A connection to the broker, as [`endpoints::Endpoints::connect`] opens it.
pub use lapin::Connection;
/// An AMQP failure, shown to people and otherwise opaque.
pub use lapin::Error as AmqpError;
pub use link::Link;
pub use properties::Properties;
pub use publish::{Channel as PublishChannel, PublishError, Target, publish_confirmed};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::ids::OrgId;

/// The exchange nodes publish to.
pub const INGRESS_EXCHANGE: &str = "fedq.ingress";
/// The queue the router consumes.
pub const INGRESS_QUEUE: &str = "fedq.ingress";
/// The exchange the router publishes to, keyed by recipient organization.
pub const DELIVER_EXCHANGE: &str = "fedq.deliver";
/// The dead-letter exchange.
pub const DEAD_EXCHANGE: &str = "fedq.dead";
/// The dead-letter queue.
pub const DEAD_QUEUE: &str = "fedq.dead-letters";
/// Deliveries of one message before RabbitMQ dead-letters it (a poison message).
pub const DELIVERY_LIMIT: i64 = 10;
/// Header of a dead letter: the stable reason code.
pub const REASON_CODE_HEADER: &str = "x-fedq-reason-code";
/// Header of a dead letter: the reason for people.
pub const REASON_HEADER: &str = "x-fedq-reason";
/// Header of a dead letter: the validated broker user that published it.
pub const PUBLISHER_HEADER: &str = "x-fedq-publisher";
/// Header of a dead letter: the size in bytes of the refused envelope.
pub const SIZE_HEADER: &str = "x-fedq-size";
/// What a dead letter keeps of a refused envelope: its first bytes, enough for the largest
/// header block (6 + 2048), never its ciphertext. A flood of refused envelopes costs the broker
/// this much per envelope, not their size.
pub const DEAD_LETTER_KEEP_BYTES: usize = 6 + 2048;
/// The RabbitMQ policy that bounds the dead-letter queue.
pub const DEAD_LETTER_POLICY: &str = "fedq-dead-letters";

/// The definition of the dead-letter queue's policy: at most `messages` and `bytes`, the
/// oldest dropped first.
pub fn dead_letter_policy(messages: u64, bytes: u64) -> serde_json::Value {
    serde_json::json!({ "max-length": messages, "max-length-bytes": bytes, "overflow": "drop-head" })
}

/// The RabbitMQ policy that bounds the ingress queue and every organization's queue.
pub const QUEUE_POLICY: &str = "fedq-queues";

/// The queues [`QUEUE_POLICY`] applies to, as a RabbitMQ pattern.
pub const QUEUE_POLICY_PATTERN: &str = "^fedq\\.(ingress|org\\..+)$";

/// The definition of [`QUEUE_POLICY`]: at most `bytes` of messages in each queue; a publish
/// past it is refused (a negative confirm), so nothing already queued is lost and the publisher
/// tries again later (a node's link does; the router retries, then dead-letters it as
/// `undeliverable`).
pub fn queue_policy(bytes: u64) -> serde_json::Value {
    serde_json::json!({ "max-length-bytes": bytes, "overflow": "reject-publish" })
}

/// What every organization's queue name starts with.
pub const ORG_QUEUE_PREFIX: &str = "fedq.org.";

/// The queue of one organization.
pub fn org_queue(org: OrgId) -> String {
    format!("{ORG_QUEUE_PREFIX}{org}")
}

/// The routing key of one organization on the delivery exchange.
pub fn org_routing_key(org: OrgId) -> String {
    org.to_string()
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString("quorum".into()));
    args.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString(DEAD_EXCHANGE.into()));
    args.insert(ShortString::from("x-delivery-limit"), AMQPValue::LongLongInt(DELIVERY_LIMIT));
    args
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

/// Declares the static topology. Idempotent: every server replica does it at start-up.
pub async fn declare_topology(channel: &Channel) -> Result<(), lapin::Error> {
    for (name, kind) in [
        (INGRESS_EXCHANGE, ExchangeKind::Fanout),
        (DELIVER_EXCHANGE, ExchangeKind::Direct),
        (DEAD_EXCHANGE, ExchangeKind::Fanout),
    ] {
        channel.exchange_declare(name.into(), kind, durable_exchange(), FieldTable::default()).await?;
    }
    let mut dead_args = FieldTable::default();
    dead_args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString("quorum".into()));
    channel.queue_declare(DEAD_QUEUE.into(), durable_queue(), dead_args).await?;
    channel
        .queue_bind(
            DEAD_QUEUE.into(),
            DEAD_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel.queue_declare(INGRESS_QUEUE.into(), durable_queue(), quorum_args()).await?;
    channel
        .queue_bind(
            INGRESS_QUEUE.into(),
            INGRESS_EXCHANGE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// How many messages wait in `queue`, by a passive declare: an error if the queue does not exist
/// or this connection's user may not read it. The channel is closed with the connection.
pub async fn waiting_messages(connection: &Connection, queue: &str) -> Result<u32, lapin::Error> {
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}

/// Declares an organization's queue and binds it. Idempotent.
pub async fn declare_org_queue(channel: &Channel, org: OrgId) -> Result<(), lapin::Error> {
    let queue = org_queue(org);
    channel.queue_declare(queue.as_str().into(), durable_queue(), quorum_args()).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            DELIVER_EXCHANGE.into(),
            org_routing_key(org).as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// The permissions of a node's broker user, as RabbitMQ regular expressions: configure nothing,
/// write (publish) only to the ingress exchange, read (consume) only its organization's queue.
pub fn node_permissions(org: OrgId) -> management::Permissions {
    management::Permissions {
        configure: "^$".into(),
        write: format!("^{}$", regex_escape(INGRESS_EXCHANGE)),
        read: format!("^{}$", regex_escape(&org_queue(org))),
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { vec![c] } else { vec!['\\', c] })
        .collect()
}

/// Publishes a control message (from the server, in the clear) to an organization's queue, with
/// the server's broker user as validated user id, and waits for the confirm.
pub async fn publish_control(
    channel: &PublishChannel,
    server_user: &str,
    org: OrgId,
    control: &crate::protocol::control::Control,
) -> Result<(), PublishError> {
    let properties = lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_type(crate::protocol::control::CONTROL_TYPE.into())
        .with_user_id(server_user.into());
    let key = org_routing_key(org);
    let target = Target { exchange: DELIVER_EXCHANGE, routing_key: &key, mandatory: false };
    channel.publish(target, &control.to_bytes(), properties, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_permissions_match_exactly_one_name_each() {
        let org = OrgId::new();
        let p = node_permissions(org);
        assert_eq!(p.configure, "^$");
        assert_eq!(p.write, "^fedq\\.ingress$");
        assert_eq!(p.read, format!("^fedq\\.org\\.{org}$"));
    }
}
