//! What a node reports about itself with every heartbeat (`POST /api/v1/node/heartbeat`): its
//! version, whether it is serving, and a summary of its policy so administrators can see on the
//! dashboard what each node agrees to run. JSON over REST, never inside an envelope.

use serde::{Deserialize, Serialize};

/// Longest version string accepted.
pub const MAX_VERSION_LEN: usize = 100;
/// Most entries in one list of a policy summary.
pub const MAX_LIST_LEN: usize = 64;
/// Longest entry of a list of a policy summary.
pub const MAX_ENTRY_LEN: usize = 300;
/// Longest alarm of a transparency report (an alarm names keys, heads and envelopes).
pub const MAX_ALARM_LEN: usize = 1000;

/// The heartbeat body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The node's version.
    pub version: String,
    /// `false` when the node is going offline.
    #[serde(default = "yes")]
    pub online: bool,
    /// What the node agrees to run; absent from nodes that do not report it.
    #[serde(default)]
    pub policy: Option<PolicySummary>,
    /// What the node's monitor of the transparency log found; absent from nodes that do not
    /// report it.
    #[serde(default)]
    pub transparency: Option<LogReport>,
}

/// A node's monitor of the transparency log, as its heartbeat reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogReport {
    /// The size of the last tree head it checked, if it checked one.
    pub size: Option<u64>,
    /// Its alarms, newest last (at most 64, of at most 1,000 characters each).
    pub alarms: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A node's policy and limits, as shown to administrators. It describes, it does not enforce:
/// the node enforces its own settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySummary {
    /// Allowed images, as `name@digest` patterns.
    pub images: Vec<String>,
    /// Organizations whose tasks may run (`*` for every collaboration member).
    pub requesters: Vec<String>,
    /// Whether container logs are sent to requesters who ask for them.
    pub share_logs: bool,
    /// Jobs run at once.
    pub concurrent_jobs: u16,
    /// Memory limit of a container, MiB.
    pub memory_mib: u64,
    /// Wall-clock limit of a container, seconds.
    pub timeout_secs: u64,
}

/// Why a heartbeat was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    /// The version string is too long.
    #[error("version is at most {MAX_VERSION_LEN} characters")]
    Version,
    /// A list of the policy summary is too long or has too long an entry.
    #[error("policy lists have at most {MAX_LIST_LEN} entries of at most {MAX_ENTRY_LEN} characters")]
    Policy,
    /// The transparency report has too many or too long alarms.
    #[error("transparency.alarms has at most {MAX_LIST_LEN} entries of at most {MAX_ALARM_LEN} characters")]
    Transparency,
}

impl Heartbeat {
    /// Checks the sizes, so a node cannot fill the server's database.
    pub fn validate(&self) -> Result<(), HeartbeatError> {
        if self.version.len() > MAX_VERSION_LEN {
            return Err(HeartbeatError::Version);
        }
        if let Some(p) = &self.policy {
            let ok =
                |list: &[String]| list.len() <= MAX_LIST_LEN && list.iter().all(|e| e.len() <= MAX_ENTRY_LEN);
            if !ok(&p.images) || !ok(&p.requesters) {
                return Err(HeartbeatError::Policy);
            }
        }
        if let Some(report) = &self.transparency
            && (report.alarms.len() > MAX_LIST_LEN || report.alarms.iter().any(|a| a.len() > MAX_ALARM_LEN))
        {
            return Err(HeartbeatError::Transparency);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_nodes_without_policy_are_accepted() {
        let h: Heartbeat = serde_json::from_str(r#"{"version":"0.1.0"}"#).unwrap();
        assert!(h.online);
        assert_eq!(h.policy, None);
        assert_eq!(h.validate(), Ok(()));
    }

    #[test]
    fn oversized_reports_are_refused() {
        let mut h = Heartbeat { version: "x".repeat(101), online: true, policy: None, transparency: None };
        assert_eq!(h.validate(), Err(HeartbeatError::Version));
        h.version = "0.1.0".into();
        h.policy = Some(PolicySummary { images: vec!["a".into(); 65], ..Default::default() });
        assert_eq!(h.validate(), Err(HeartbeatError::Policy));
        h.policy = Some(PolicySummary { requesters: vec!["a".repeat(301)], ..Default::default() });
        assert_eq!(h.validate(), Err(HeartbeatError::Policy));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<Heartbeat>(r#"{"version":"1","extra":1}"#).is_err());
    }
}
