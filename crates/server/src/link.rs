//! The server's broker link: the publishing channel the API uses, kept up by the supervisor
//! with the router's consumer on the same connection.

use std::sync::Arc;

use tokio::sync::watch;

use crate::app::AppError;
use crate::broker::supervisor::SessionEnd;
use crate::broker::{self, endpoints::Endpoints};
use crate::config::ServerConfig;
use crate::db;
use crate::ids::OrgId;
use crate::protocol::control::Control;
use crate::router::Router;

/// The broker as the application sees it: the current publishing channel (replaced after
/// reconnects by the supervisor) and what nodes are told about it.
#[derive(Clone)]
pub struct ServerLink {
    link: broker::Link,
    inner: Arc<LinkFacts>,
}

struct LinkFacts {
    server_user: String,
    node_url: String,
}

impl ServerLink {
    pub(crate) fn new(server_user: String, node_url: String) -> Self {
        Self { link: broker::Link::default(), inner: Arc::new(LinkFacts { server_user, node_url }) }
    }

    /// The current channel (in confirm mode), or `unavailable` while the broker is down.
    pub fn channel(&self) -> Result<broker::PublishChannel, AppError> {
        self.link.channel().map_err(|_| AppError::unavailable("the broker is unavailable; retry later"))
    }

    /// Whether a channel is open.
    pub fn is_connected(&self) -> bool {
        self.link.is_connected()
    }

    /// Declares an organization's queue.
    pub async fn declare_org_queue(&self, org: OrgId) -> Result<(), AppError> {
        let channel = self.channel()?;
        broker::declare_org_queue(channel.amqp(), org).await.map_err(|e| {
            tracing::warn!(error = %e, %org, "could not declare an organization queue");
            AppError::unavailable("the broker is unavailable; retry later")
        })
    }

    /// Publishes a control message to an organization's queue and waits for the confirm.
    pub async fn publish_control(&self, org: OrgId, control: &Control) -> Result<(), AppError> {
        let channel = self.channel()?;
        broker::publish_control(&channel, &self.inner.server_user, org, control).await.map_err(|e| {
            tracing::warn!(error = %e, %org, "a control message was not published");
            AppError::unavailable("the broker did not take the message")
        })
    }

    /// The AMQP URL nodes connect to (without credentials).
    pub fn node_url(&self) -> &str {
        &self.inner.node_url
    }

    /// The server's broker user: control messages come from it.
    pub fn server_user(&self) -> &str {
        &self.inner.server_user
    }
}

/// Keeps a broker connection up: declares the topology, hands the API a channel and runs the
/// router's consumer; after a failure, reconnects (`broker::supervisor`). Returns at shutdown.
pub(crate) async fn supervise_broker(
    config: ServerConfig,
    endpoints: Arc<Endpoints>,
    link: ServerLink,
    router: Router,
    db: deadpool_postgres::Pool,
    shutdown: watch::Receiver<bool>,
) {
    let session = || async {
        let (connection, address, api_channel) = match connect(&endpoints, &db).await {
            Ok(connected) => connected,
            Err(e) => return SessionEnd::lost(false, e),
        };
        let concurrency = config.router.concurrency;
        let consumer =
            match broker::Consumer::start(&connection, broker::INGRESS_QUEUE, "", concurrency).await {
                Ok(consumer) => consumer,
                Err(e) => {
                    let _ = connection.close(200, "reconnecting".into()).await;
                    return SessionEnd::lost(false, e);
                }
            };
        link.link.set(Some(api_channel));
        tracing::info!(%address, "connected to the broker");
        let result = router.consume(consumer, concurrency, shutdown.clone()).await;
        link.link.set(None);
        let _ = connection.close(200, "shutting down".into()).await;
        match result {
            Ok(()) if *shutdown.borrow() => SessionEnd::Stopped,
            Ok(()) => SessionEnd::lost(true, "the ingress consumer was cancelled"),
            Err(e) => SessionEnd::lost(true, e),
        }
    };
    broker::supervisor::supervise(shutdown.clone(), session).await;
}

/// Connects, declares the topology and every organization's queue, and opens the channel the
/// API publishes on.
async fn connect(
    endpoints: &Endpoints,
    db: &deadpool_postgres::Pool,
) -> Result<(broker::Connection, String, broker::PublishChannel), Box<dyn std::error::Error + Send + Sync>> {
    let (connection, address) = endpoints.connect().await?;
    let api_channel = broker::PublishChannel::open(&connection).await?;
    broker::declare_topology(api_channel.amqp()).await?;
    // Queues of organizations registered while the broker was unreachable.
    let client = db.get().await?;
    for org in db::directory::orgs(&**client, None).await? {
        broker::declare_org_queue(api_channel.amqp(), org.id).await?;
    }
    Ok((connection, address, api_channel))
}
