//! fedq: federated analyses whose data never leaves the organizations that hold it.
//!
//! This crate is the `fedq` command line and a facade over the workspace's crates, each one part
//! of the design (`docs/ARCHITECTURE.md`): `fedq-core` (identifiers, time, the wire protocol, the
//! REST contract), `fedq-envelope` (keys and sealed envelopes), `fedq-tls`, `fedq-broker`,
//! `fedq-client`, `fedq-service` (settings, metrics), `fedq-server`, `fedq-node` and
//! `fedq-transparency` (the transparency log's Merkle tree, proofs and tree heads).

pub use fedq_broker as broker;
pub use fedq_client as client;
pub use fedq_core::{contract, files, ids, protocol, time};
pub use fedq_envelope::{envelope, keys};
pub use fedq_node as node;
pub use fedq_server as server;
pub use fedq_service::{metrics, settings};
pub use fedq_tls as tls;
pub use fedq_transparency as transparency;

pub mod cli;

#[cfg(test)]
mod reference;
