//! What the node agrees to run, as node.toml says now: `[policy]` and `[data]` are reloaded on
//! SIGHUP and when the file changes, so that `fedq node policy allow|remove` (or an edit by hand)
//! applies without a restart. Every other section is read once, at start.
//!
//! A job is checked against the rules current when its start arrives, and each subtask it asks
//! for against those current at the request; a job already running keeps its container (and the
//! data sources mounted into it) when a rule is removed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::config::{Limits, NodeConfig, Policy};
use crate::protocol::heartbeat::PolicySummary;

/// The reloadable part of the settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// `[policy]`.
    pub policy: Policy,
    /// `[data]`: label and host path.
    pub data: BTreeMap<String, PathBuf>,
}

impl Rules {
    fn of(config: &NodeConfig) -> Self {
        Self { policy: config.policy.clone(), data: config.data.clone() }
    }

    /// The host paths of the data sources `labels` (labels the policy checked against `[data]`).
    pub fn sources(&self, labels: &[String]) -> Vec<(String, PathBuf)> {
        labels.iter().filter_map(|l| Some((l.clone(), self.data.get(l)?.clone()))).collect()
    }

    /// What the node reports to the server in its heartbeat, for administrators.
    pub fn summary(&self, limits: &Limits) -> PolicySummary {
        let policy = &self.policy;
        PolicySummary {
            images: policy.images.iter().map(|r| format!("{}@{}", r.name, r.digest)).collect(),
            requesters: policy.requesters.clone(),
            share_logs: policy.share_logs,
            concurrent_jobs: limits.concurrent_jobs,
            memory_mib: limits.memory_mib,
            timeout_secs: limits.timeout_secs,
        }
    }

    /// Warns about what lets more run than an administrator may think.
    pub fn warn_loose(&self) {
        for loose in crate::policy::loose_rules(&self.policy) {
            tracing::warn!("policy: {loose}");
        }
    }
}

/// The settings file a node was started from, with its version when it was read: what the
/// node watches for changes.
#[derive(Debug, Clone)]
pub struct SettingsFile {
    path: PathBuf,
    stamps: fedq_service::reload::Stamps,
}

impl SettingsFile {
    /// Reads the settings in `path` (then the `FEDQ_…` variables), noting the file's version
    /// first, so that a change made while it is read is seen at the next look.
    pub fn load(path: &std::path::Path) -> Result<(NodeConfig, Self), crate::config::ConfigError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let stamps = fedq_service::reload::Stamps::take(vec![path.clone()]);
        let config = NodeConfig::load(Some(&path))?;
        Ok((config, Self { path, stamps }))
    }
}

/// The rules in force, swapped whole when the file changes.
pub struct LivePolicy {
    current: RwLock<Arc<Rules>>,
    /// The settings file, when the node was started from one; `None`: the rules never change.
    source: Option<SettingsFile>,
}

impl LivePolicy {
    /// The rules of `config`; reloaded from `source` (the file `config` was read from) when given.
    pub fn new(config: &NodeConfig, source: Option<SettingsFile>) -> Self {
        Self { current: RwLock::new(Arc::new(Rules::of(config))), source }
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<Rules> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Reads the file again (with the `FEDQ_…` variables, as at start) and puts its rules in
    /// force if the whole file is valid; otherwise the rules in force stay.
    pub fn reload(&self) -> Result<bool, crate::config::ConfigError> {
        let Some(file) = &self.source else { return Ok(false) };
        let config = NodeConfig::load(Some(&file.path))?;
        let rules = Rules::of(&config);
        let mut current = self.current.write().expect("not poisoned");
        if **current == rules {
            return Ok(false);
        }
        *current = Arc::new(rules);
        Ok(true)
    }

    /// Reloads on SIGHUP and when the settings file changes, until `stop` turns true.
    pub async fn watch(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let Some(SettingsFile { path, stamps }) = &self.source else { return };
        fedq_service::reload::watch(stamps.clone(), stop, |why| match self.reload() {
            Ok(true) => {
                let rules = self.current();
                tracing::info!(
                    file = %path.display(),
                    why,
                    images = rules.policy.images.len(),
                    requesters = ?rules.policy.requesters,
                    "policy reloaded: new jobs and subtasks are checked against it"
                );
                rules.warn_loose();
            }
            Ok(false) => tracing::debug!(file = %path.display(), why, "policy unchanged"),
            Err(e) => tracing::error!(
                file = %path.display(),
                why,
                error = %e,
                "policy not reloaded, the previous one stays in force; `fedq node check` says what to fix"
            ),
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_file_replaces_the_rules_and_a_broken_one_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let base = crate::config::tests::example();
        std::fs::write(&path, base).unwrap();
        let (config, file) = SettingsFile::load(&path).unwrap();
        let live = LivePolicy::new(&config, Some(file));
        assert!(!live.reload().unwrap(), "the same file is no change");

        let more = format!("{base}\n[[policy.images]]\nname = \"fedq/new\"\ndigest = \"sha256:abc\"\n");
        std::fs::write(&path, &more).unwrap();
        assert!(live.reload().unwrap());
        assert!(live.current().policy.images.iter().any(|r| r.name == "fedq/new"));

        // A rule granting a data source that [data] lacks: the file is refused as a whole.
        let broken = format!("{more}\n[[policy.images]]\nname = \"fedq/x\"\ndata = [\"nowhere\"]\n");
        std::fs::write(&path, broken).unwrap();
        assert!(live.reload().unwrap_err().to_string().contains("nowhere"));
        assert!(live.current().policy.images.iter().any(|r| r.name == "fedq/new"));
        assert!(!live.current().policy.images.iter().any(|r| r.name == "fedq/x"));
    }
}
