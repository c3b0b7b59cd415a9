//! What every long-running fedq process shares: settings read from a TOML file and
//! `FEDQ_SECTION__KEY` variables, files reloaded on SIGHUP or change, and Prometheus metrics
//! served on their own listener.

pub mod metrics;
pub mod reload;
pub mod settings;
