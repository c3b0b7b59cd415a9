//! The node's client of the server's REST API (heartbeats, peer keys, subtasks), on top of the
//! researcher's client with the node's API key as bearer token, and the cache of peer keys it
//! fills, with optional pins.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::client::{Client, ClientError};
use crate::ids::{CollaborationId, JobId, OrgId, RunId, TaskId};
use crate::keys::{KeyId, PublicKey, SenderKeys};
use crate::protocol::heartbeat::{Heartbeat, PolicySummary};

/// One job of a new (sub)task.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: JobId,
    /// Where it runs.
    pub organization: OrgId,
    /// Its sealed `job_start`.
    pub envelope: Vec<u8>,
}

/// The server's REST API, as this node.
#[derive(Debug, Clone)]
pub struct ServerClient {
    api: Client,
}

impl ServerClient {
    /// A client of the server at `base` (its root URL).
    pub fn new(base: &str, api_key: SecretString) -> Self {
        Self { api: Client::with_token(base, api_key) }
    }

    /// Which organization the API key belongs to.
    pub async fn whoami(&self) -> Result<OrgId, ClientError> {
        let body = self.api.get("/users/me").await?;
        body["organization"]
            .as_str()
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| ClientError::Decode(format!("no organization in {body}")))
    }

    /// Tells the server this node is online (or going offline) and what it agrees to run.
    pub async fn heartbeat(&self, online: bool, policy: &PolicySummary) -> Result<(), ClientError> {
        let body =
            Heartbeat { version: env!("CARGO_PKG_VERSION").into(), online, policy: Some(policy.clone()) };
        let body = serde_json::to_value(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.api.post("/node/heartbeat", &body).await.map(drop)
    }

    /// The current public keys of a collaboration's members.
    pub async fn collaboration_keys(
        &self,
        collaboration: CollaborationId,
    ) -> Result<Vec<(OrgId, PublicKey)>, ClientError> {
        self.api.collaboration_keys(collaboration).await
    }

    /// Creates a subtask of `parent` in `run` (its `job_start` envelopes already sealed).
    pub async fn create_subtask(
        &self,
        id: TaskId,
        run: RunId,
        parent: TaskId,
        collaboration: CollaborationId,
        image: &str,
        jobs: &[NewJob],
    ) -> Result<(), ClientError> {
        let jobs: Vec<Value> = jobs
            .iter()
            .map(|j| {
                json!({"id": j.id, "organization": j.organization, "envelope": STANDARD.encode(&j.envelope)})
            })
            .collect();
        let body = json!({
            "id": id, "run": run, "parent": parent, "collaboration": collaboration,
            "image": image, "name": "subtask", "jobs": jobs,
        });
        self.api.post("/tasks", &body).await.map(drop)
    }
}

/// Peer organizations' public keys, fetched from the server per collaboration and cached.
///
/// With pins, a key the server hands out for a pinned organization is used only if its
/// fingerprint is pinned: a server that swaps a key cannot make this node seal to it or accept
/// envelopes signed by it.
#[derive(Debug, Default)]
pub struct PeerKeys {
    keys: RwLock<HashMap<OrgId, Vec<PublicKey>>>,
    members: RwLock<HashMap<CollaborationId, Vec<(OrgId, KeyId)>>>,
    pins: BTreeMap<OrgId, Vec<KeyId>>,
}

/// A key the server handed out that the pins refuse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server handed out key {key} for organization {org}, which is not pinned at this node")]
pub struct PinViolation {
    /// The organization.
    pub org: OrgId,
    /// The refused key.
    pub key: KeyId,
}

impl PeerKeys {
    /// A cache with these pins (fingerprints per organization).
    pub fn new(pins: BTreeMap<OrgId, Vec<KeyId>>) -> Self {
        Self { pins, ..Self::default() }
    }

    /// Adds keys for `collaboration` as the server listed them. Keys the pins refuse are left
    /// out and returned.
    pub fn insert(
        &self,
        collaboration: CollaborationId,
        listed: Vec<(OrgId, PublicKey)>,
    ) -> Vec<PinViolation> {
        let mut violations = Vec::new();
        let mut keys = self.keys.write().expect("not poisoned");
        let mut members = Vec::new();
        for (org, key) in listed {
            if let Some(pinned) = self.pins.get(&org)
                && !pinned.contains(&key.id())
            {
                violations.push(PinViolation { org, key: key.id() });
                continue;
            }
            members.push((org, key.id()));
            let entry = keys.entry(org).or_default();
            if !entry.iter().any(|k| k.id() == key.id()) {
                entry.push(key);
            }
        }
        self.members.write().expect("not poisoned").insert(collaboration, members);
        violations
    }

    /// The newest key of `org`: what this node seals to.
    pub fn current(&self, org: OrgId) -> Option<PublicKey> {
        self.keys.read().expect("not poisoned").get(&org).and_then(|k| k.last().cloned())
    }

    /// The members of `collaboration` and the key the node seals to for each, if fetched.
    pub fn members(&self, collaboration: CollaborationId) -> Option<Vec<(OrgId, KeyId)>> {
        self.members.read().expect("not poisoned").get(&collaboration).cloned()
    }
}

impl SenderKeys for PeerKeys {
    fn sender_key(&self, org: OrgId, key: &KeyId) -> Option<PublicKey> {
        self.keys.read().expect("not poisoned").get(&org)?.iter().find(|k| &k.id() == key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::OrgKey;

    #[test]
    fn pins_refuse_a_swapped_key() {
        let (org, other) = (OrgId::new(), OrgId::new());
        let (genuine, swapped, unpinned) = (OrgKey::generate(), OrgKey::generate(), OrgKey::generate());
        let peers = PeerKeys::new(BTreeMap::from([(org, vec![genuine.id()])]));
        let collaboration = CollaborationId::new();
        let refused = peers
            .insert(collaboration, vec![(org, swapped.public().clone()), (other, unpinned.public().clone())]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].key, swapped.id());
        assert!(peers.current(org).is_none(), "the swapped key is not used");
        assert!(peers.sender_key(org, &swapped.id()).is_none());
        assert_eq!(peers.current(other).map(|k| k.id()), Some(unpinned.id()), "unpinned orgs are trusted");
        assert!(peers.insert(collaboration, vec![(org, genuine.public().clone())]).is_empty());
        assert_eq!(peers.current(org).map(|k| k.id()), Some(genuine.id()));
    }
}
