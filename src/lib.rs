//! fedq: federated orchestration over AMQP.
//!
//! Organizations run analyses together on data that never leaves them. Every message between
//! them travels as a sealed [`envelope`] through a central server that routes it blindly.
//! `docs/ARCHITECTURE.md` maps the modules to the parts of the design.

#![forbid(unsafe_code)]

pub mod broker;
pub mod cli;
pub mod client;
pub mod contract;
pub mod envelope;
pub mod files;
pub mod ids;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod server;
pub mod settings;
pub mod time;
pub mod tls;
