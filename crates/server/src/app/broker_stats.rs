//! The broker's health as the overview shows it: every queue of the virtual host with depth,
//! consumers and rates, from RabbitMQ's management API. Kept for two seconds, so a room of
//! administrators watching the live overview costs the broker one request per two seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::broker::management::{Management, QueueInfo};

/// How long a reading is reused.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// How long the overview waits for the management API.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One reading of the broker.
#[derive(Debug)]
pub struct Reading {
    /// The queues, or why they could not be read.
    pub queues: Result<Vec<QueueInfo>, String>,
    /// When it was taken.
    pub at: Instant,
}

/// The last reading, shared by every request.
#[derive(Debug, Default)]
pub struct BrokerStats {
    last: Mutex<Option<Arc<Reading>>>,
}

impl BrokerStats {
    /// A fresh enough reading of `vhost`. Concurrent callers wait for one request rather than
    /// each sending their own.
    pub async fn read(&self, management: &Management, vhost: &str) -> Arc<Reading> {
        let mut last = self.last.lock().await;
        if let Some(reading) = last.as_ref().filter(|r| r.at.elapsed() < FRESH_FOR) {
            return reading.clone();
        }
        let queues = match tokio::time::timeout(TIMEOUT, management.queues(vhost)).await {
            Ok(Ok(queues)) => Ok(queues),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the RabbitMQ management API did not answer within 2 s".to_owned()),
        };
        let reading = Arc::new(Reading { queues, at: Instant::now() });
        *last = Some(reading.clone());
        reading
    }
}
