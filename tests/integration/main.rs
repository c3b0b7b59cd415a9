//! The integration suite: one test binary, so that the whole stack is linked once rather than
//! once per file (each link is hundreds of megabytes and most of the build's time).
//!
//! Every test isolates itself (its own database, virtual host, Docker names and address
//! ranges), so tests of different modules share the process and run in parallel. A test that
//! disrupts a shared service for everyone (restarting the shared broker) lives in a binary of
//! its own instead: `tests/node_broker.rs`.

#[path = "../support/mod.rs"]
mod support;

mod analyses;
mod cluster;
mod command_line;
mod compose;
mod dashboard;
mod dashboard_browser;
mod deploy;
mod fault_database;
mod fault_poison;
mod hostile_algorithm;
mod key_trust;
mod malicious_partner;
mod network;
mod node;
mod node_endpoint;
mod node_outage;
mod node_process;
mod python_algorithm;
mod python_client;
mod research_cli;
mod secure_aggregation;
mod secure_sum;
mod server;
mod server_process;
mod shell_algorithm;
mod tls;
mod transparency;
mod vertical;
