//! A small client of RabbitMQ's management HTTP API: virtual hosts, users, permissions, queue
//! statistics, connections. Used by the server to give each node least-privilege credentials and
//! to revoke them, and by tests to make a virtual host per test.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// A management API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    /// The API could not be reached.
    #[error("RabbitMQ management API unreachable: {0}")]
    Http(#[from] reqwest::Error),
    /// The API answered with an error status.
    #[error("RabbitMQ management API answered {status} to {what}")]
    Status {
        /// What was being done.
        what: String,
        /// The HTTP status.
        status: u16,
    },
}

/// A user's permissions in a virtual host, as regular expressions over resource names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Declaring and deleting.
    pub configure: String,
    /// Publishing (exchanges) and binding.
    pub write: String,
    /// Consuming (queues) and binding.
    pub read: String,
}

/// Statistics of one queue.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QueueStats {
    /// Messages ready and unacknowledged.
    #[serde(default)]
    pub messages: u64,
    /// Consumers attached.
    #[serde(default)]
    pub consumers: u64,
}

/// One queue as the dashboard shows it: depth, consumers and message rates.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Messages ready and unacknowledged.
    #[serde(default)]
    pub messages: u64,
    /// Messages waiting for a consumer.
    #[serde(default)]
    pub messages_ready: u64,
    /// Messages delivered and not yet acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: u64,
    /// Consumers attached.
    #[serde(default)]
    pub consumers: u64,
    /// Rates over the management plugin's sampling window.
    #[serde(default)]
    pub message_stats: MessageStats,
}

/// Message rates of a queue, per second.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MessageStats {
    /// Messages published into the queue.
    #[serde(default)]
    pub publish_details: Rate,
    /// Messages delivered to consumers (or fetched).
    #[serde(default)]
    pub deliver_get_details: Rate,
    /// Messages acknowledged.
    #[serde(default)]
    pub ack_details: Rate,
}

/// One rate.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Rate {
    /// Per second.
    #[serde(default)]
    pub rate: f64,
}

/// The management API client.
#[derive(Debug, Clone)]
pub struct Management {
    base: String,
    user: String,
    password: SecretString,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Management {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:15672`).
    pub fn new(base: &str, user: &str, password: SecretString) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("a client with the system's roots builds");
        Self::with_client(base, user, password, http)
    }

    /// A client that reaches the API through `http` (built from the broker's TLS settings).
    pub fn with_client(base: &str, user: &str, password: SecretString, http: reqwest::Client) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), user: user.to_owned(), password, http }
    }

    async fn send(
        &self,
        what: String,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ManagementError> {
        let resp = req.basic_auth(&self.user, Some(self.password.expose_secret())).send().await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(ManagementError::Status { what, status: resp.status().as_u16() })
        }
    }

    /// Creates a virtual host (idempotent).
    pub async fn create_vhost(&self, vhost: &str) -> Result<(), ManagementError> {
        let url = format!("{}/api/vhosts/{}", self.base, enc(vhost));
        self.send(format!("create vhost {vhost}"), self.http.put(url).json(&serde_json::json!({}))).await?;
        Ok(())
    }

    /// Deletes a virtual host and everything in it; a missing one is not an error.
    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), ManagementError> {
        let url = format!("{}/api/vhosts/{}", self.base, enc(vhost));
        match self.send(format!("delete vhost {vhost}"), self.http.delete(url)).await {
            Err(ManagementError::Status { status: 404, .. }) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates or updates a user without any management tag.
    pub async fn put_user(&self, user: &str, password: &SecretString) -> Result<(), ManagementError> {
        let url = format!("{}/api/users/{}", self.base, enc(user));
        let body = serde_json::json!({ "password": password.expose_secret(), "tags": "" });
        self.send(format!("create user {user}"), self.http.put(url).json(&body)).await?;
        Ok(())
    }

    /// Deletes a user; a missing one is not an error.
    pub async fn delete_user(&self, user: &str) -> Result<(), ManagementError> {
        let url = format!("{}/api/users/{}", self.base, enc(user));
        match self.send(format!("delete user {user}"), self.http.delete(url)).await {
            Err(ManagementError::Status { status: 404, .. }) | Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets a user's permissions in a virtual host.
    pub async fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        p: &Permissions,
    ) -> Result<(), ManagementError> {
        let url = format!("{}/api/permissions/{}/{}", self.base, enc(vhost), enc(user));
        self.send(format!("set permissions of {user}"), self.http.put(url).json(p)).await?;
        Ok(())
    }

    /// Closes every open connection of a user, so a revoked node is cut off at once rather than
    /// at its next reconnect.
    pub async fn close_connections(&self, user: &str) -> Result<(), ManagementError> {
        #[derive(Deserialize)]
        struct Conn {
            name: String,
            user: String,
        }
        let url = format!("{}/api/connections", self.base);
        let conns: Vec<Conn> = self.send("list connections".into(), self.http.get(url)).await?.json().await?;
        for conn in conns.into_iter().filter(|c| c.user == user) {
            let url = format!("{}/api/connections/{}", self.base, enc(&conn.name));
            let req = self.http.delete(url).header("X-Reason", "fedq node revoked");
            match self.send(format!("close connection of {user}"), req).await {
                Err(ManagementError::Status { status: 404, .. }) | Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sets (or replaces) policy `name` in `vhost` on the queues matching `pattern`.
    pub async fn put_policy(
        &self,
        vhost: &str,
        name: &str,
        pattern: &str,
        definition: serde_json::Value,
    ) -> Result<(), ManagementError> {
        let url = format!("{}/api/policies/{}/{}", self.base, enc(vhost), enc(name));
        let body = serde_json::json!({ "pattern": pattern, "definition": definition, "apply-to": "queues", "priority": 0 });
        self.send(format!("set policy {name}"), self.http.put(url).json(&body)).await?;
        Ok(())
    }

    /// Statistics of a queue, `None` if it does not exist.
    pub async fn queue(&self, vhost: &str, queue: &str) -> Result<Option<QueueStats>, ManagementError> {
        let url = format!("{}/api/queues/{}/{}", self.base, enc(vhost), enc(queue));
        match self.send(format!("read queue {queue}"), self.http.get(url)).await {
            Ok(resp) => Ok(Some(resp.json().await?)),
            Err(ManagementError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every queue of a virtual host with its depth, consumers and rates.
    pub async fn queues(&self, vhost: &str) -> Result<Vec<QueueInfo>, ManagementError> {
        let url = format!("{}/api/queues/{}", self.base, enc(vhost));
        Ok(self.send(format!("list queues of {vhost}"), self.http.get(url)).await?.json().await?)
    }

    /// Whether the API answers.
    pub async fn alive(&self) -> bool {
        let url = format!("{}/api/overview", self.base);
        self.send("overview".into(), self.http.get(url)).await.is_ok()
    }
}
