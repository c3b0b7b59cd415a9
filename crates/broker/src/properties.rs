//! The AMQP properties fedq's messages carry, built here so that publishers name what a message
//! is, never lapin's property types.

use crate::protocol::Kind;

/// A message's AMQP properties.
pub use lapin::BasicProperties as Properties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

/// An envelope's: persistent, its id and kind as the message id and type (for the management
/// UI and the dead-letter listing), and, from a node, the broker user that publishes it
/// (RabbitMQ refuses a `user_id` other than the connection's, so the router can trust it).
pub fn envelope(message_id: &str, kind: Kind, user_id: Option<&str>) -> Properties {
    let properties = Properties::default()
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
        .with_type(kind.as_str().into());
    match user_id {
        Some(user) => properties.with_user_id(user.into()),
        None => properties,
    }
}

/// A dead letter's: persistent, with why it was refused (`code`, `reason`), who published it
/// and its size, in the `x-fedq-…` headers.
pub fn dead_letter(code: &str, reason: &str, publisher: &str, size: usize) -> Properties {
    let mut headers = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    headers.insert(ShortString::from(crate::REASON_CODE_HEADER), text(code));
    headers.insert(ShortString::from(crate::REASON_HEADER), text(reason));
    headers.insert(ShortString::from(crate::PUBLISHER_HEADER), text(publisher));
    headers.insert(
        ShortString::from(crate::SIZE_HEADER),
        AMQPValue::LongLongInt(i64::try_from(size).unwrap_or(i64::MAX)),
    );
    Properties::default().with_delivery_mode(2).with_headers(headers)
}
