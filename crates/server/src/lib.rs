//! The central server: the REST API for people and nodes, and the blind router. It holds no
//! private key and has no code path that opens an envelope.
//!
//! `start` (`start.rs`) wires the parts: the PostgreSQL pool (migrated under a lock), the broker
//! link (`link.rs`: one connection, re-established after a broker restart, carrying the router's
//! consumer and the API's publishing channel) and the HTTP listener; `running.rs` is a started
//! server and its shutdown. Several servers can run against the same database and broker: they
//! compete on the ingress queue.

pub mod https;

use fedq_broker as broker;
use fedq_core::{contract, ids, protocol, time};
use fedq_envelope::{envelope, keys};
use fedq_service::settings;
use fedq_tls as tls;

pub mod api;
pub mod app;
pub mod config;
pub mod dashboard;
pub mod db;
mod error;
pub mod http;
mod link;
pub mod metrics;
mod retention;
pub mod router;
mod running;
mod start;
pub mod transparency;
pub use self::error::ServerError;
pub use self::link::ServerLink;
pub use self::running::RunningServer;
pub use self::start::start;
