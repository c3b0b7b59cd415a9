//! Control messages: what the server itself tells a node, in the clear.
//!
//! The server holds no organization key, so it cannot seal or sign an envelope. What it must
//! still tell nodes (that a researcher killed a task) carries no secret, and travels as a plain
//! MessagePack message on the organization's queue with AMQP type `control`, published with the
//! server's broker user as validated user id. A node accepts control messages only from that
//! user; RabbitMQ refuses a publish whose user id is not the publisher's own.

use serde::{Deserialize, Serialize};

use crate::ids::{RunId, TaskId};

/// The AMQP message type of control messages.
pub const CONTROL_TYPE: &str = "control";

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    /// Stop the jobs of this task (its subtasks get their own message).
    Kill {
        /// The task.
        task: TaskId,
        /// Its run.
        run: RunId,
    },
    /// The run is over: remove its volume and everything kept for it.
    RunFinished {
        /// The run.
        run: RunId,
    },
}

impl Control {
    /// MessagePack bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("control messages always encode")
    }

    /// Decodes MessagePack bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let kill = Control::Kill { task: TaskId::new(), run: RunId::new() };
        assert_eq!(Control::from_bytes(&kill.to_bytes()).unwrap(), kill);
        assert!(Control::from_bytes(b"\xc1").is_err());
    }
}
