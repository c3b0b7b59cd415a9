//! Where a researcher's client keeps its files, for the command line and the Python client
//! alike: `$XDG_CONFIG_HOME/fedq` (or `~/.config/fedq`), with the session and the trust store
//! movable by `FEDQ_SESSION` and `FEDQ_TRUST_STORE`.

use std::path::PathBuf;

use crate::ids::TaskId;

/// The folder of the researcher's files: `$XDG_CONFIG_HOME/fedq` or `~/.config/fedq`.
pub fn config_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("fedq")
}

/// The saved session (`fedq login`; `FEDQ_SESSION` overrides where it is).
pub fn session_path() -> PathBuf {
    std::env::var_os("FEDQ_SESSION").map_or_else(|| config_dir().join("session.json"), PathBuf::from)
}

/// The researcher's store of trusted keys (`FEDQ_TRUST_STORE` overrides where it is).
pub fn trust_store_path() -> PathBuf {
    std::env::var_os("FEDQ_TRUST_STORE").map_or_else(|| config_dir().join("trusted-keys.json"), PathBuf::from)
}

/// The jobs of a task created here, kept to check its results against (the results may be
/// asked for by another process, later).
pub fn task_record_path(task: TaskId) -> PathBuf {
    config_dir().join("tasks").join(format!("{task}.json"))
}
