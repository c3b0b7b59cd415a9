//! The node worker: consumes its organization's queue, runs each job's algorithm in an isolated
//! container next to the organization's data, and publishes sealed results and run messages.
//!
//! Parts: `worker` (the broker connection and what each envelope kind does), `jobs` (one job's
//! life: policy, container, result), `containers` (Docker, network, firewall, volumes),
//! `endpoint` (the HTTP API algorithms use), `run_messages` (sending a job's run messages),
//! `secagg` (secure aggregation, a service of the endpoint), `state` (what survives a restart), `server` (the
//! REST client and peer keys), `link` (publishing with confirms), `policy`, `config`; `shared`
//! (the `Core` every part is handed), `start` (start-up and the background tasks), `running` (a
//! started node and its shutdown), `gc` (garbage collection), `error`.

use fedq_broker as broker;
use fedq_client as client;
use fedq_core::{contract, files, ids, protocol, time};
use fedq_envelope::{envelope, keys};
use fedq_service::settings;
use fedq_tls as tls;

mod active;
pub mod check;
pub mod config;
pub mod containers;
mod endpoint;
pub mod enroll;
mod error;
mod gc;
mod jobs;
pub mod link;
pub mod live_policy;
mod log_monitor;
pub mod metrics;
pub mod policy;
pub mod policy_file;
mod run_messages;
mod running;
mod secagg;
pub mod server;
mod shared;
mod start;
pub mod state;
mod worker;

pub use self::active::JobTiming;
pub use self::error::NodeError;
pub use self::gc::gc;
pub use self::running::RunningNode;
pub use self::start::{start, start_from_file};
