//! The node's client of the server's REST API (heartbeats, peer keys, subtasks), on top of the
//! researcher's client with the node's API key as bearer token, and the cache of peer keys it
//! fills, with optional pins.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;

use crate::client::{Client, ClientError, KeyDecision};
use crate::contract;
use crate::ids::{CollaborationId, JobId, NodeId, OrgId, RunId, TaskId};
use crate::keys::{KeyId, KeyTrust, PublicKey, SenderKeys, TrustError};
use crate::protocol::heartbeat::{Heartbeat, LogReport, PolicySummary};

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
    /// A client of the server at `base` (its root URL), over TLS as `tls` says, deciding on
    /// peers' keys with `trust`.
    pub fn new(
        base: &str,
        tls: &crate::tls::ClientTls,
        api_key: SecretString,
        trust: Arc<KeyTrust>,
    ) -> Result<Self, ClientError> {
        Ok(Self { api: Client::with_token(base, tls, api_key)?.with_trust(trust) })
    }

    /// The REST client itself, for reading the transparency log.
    pub fn api(&self) -> &Client {
        &self.api
    }

    /// This node's id and organization, as the server knows its API key.
    pub async fn whoami_node(&self) -> Result<(NodeId, OrgId), ClientError> {
        // Only what this check needs, so that a newer server's additions to a node's answer
        // (its policy summary, its log report) do not make the check fail; `broker_user` is
        // what a user's answer lacks.
        #[derive(serde::Deserialize)]
        struct Whoami {
            id: NodeId,
            organization: OrgId,
            #[allow(dead_code)]
            broker_user: String,
        }
        let body = self.api.get("/users/me").await?;
        let me: Whoami = serde_json::from_value(body)
            .map_err(|e| ClientError::Decode(format!("/users/me is not a node's answer: {e}")))?;
        Ok((me.id, me.organization))
    }

    /// Tells the server this node is online (or going offline), what it agrees to run, and what
    /// its monitor of the transparency log found.
    pub async fn heartbeat(
        &self,
        online: bool,
        policy: &PolicySummary,
        transparency: LogReport,
    ) -> Result<(), ClientError> {
        let body = Heartbeat {
            version: env!("CARGO_PKG_VERSION").into(),
            online,
            policy: Some(policy.clone()),
            transparency: Some(transparency),
        };
        let body = serde_json::to_value(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.api.post("/node/heartbeat", &body).await.map(drop)
    }

    /// A collaboration's members with the key this node trusts for each, or why not.
    pub async fn trusted_keys(
        &self,
        collaboration: CollaborationId,
    ) -> Result<Vec<KeyDecision>, ClientError> {
        self.api.trusted_keys(collaboration).await
    }

    /// The names of the organizations the node sees, to name them in messages.
    pub async fn organization_names(&self) -> crate::client::OrganizationNames {
        self.api.organization_names().await
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
        let jobs = jobs
            .iter()
            .map(|j| contract::NewJob {
                id: j.id,
                organization: j.organization,
                envelope: STANDARD.encode(&j.envelope),
            })
            .collect();
        let body = contract::CreateTask {
            id,
            run,
            collaboration,
            image: image.to_owned(),
            name: "subtask".into(),
            parent: Some(parent),
            jobs,
        };
        let body = serde_json::to_value(&body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.api.post("/tasks", &body).await.map(drop)
    }
}

/// Peer organizations' public keys as this node trusts them (a persistent [`KeyTrust`] in the
/// state directory, seeded with the settings' pins), and each collaboration's members.
///
/// A key the server hands out is used only if the node trusts it: pinned, trusted on first use
/// where the settings allow it, or reached by a rotation signed with the trusted key. A server
/// that swaps a key cannot make this node seal to it or accept envelopes signed by it.
#[derive(Debug)]
pub struct PeerKeys {
    trust: Arc<KeyTrust>,
    /// How long a collaboration's keys are used before they are fetched again.
    fresh_for: Duration,
    members: RwLock<HashMap<CollaborationId, Members>>,
    /// Why the last key the server handed out for an organization was refused, to tell the
    /// algorithm that asked to send there.
    refused: RwLock<HashMap<OrgId, String>>,
}

/// A collaboration's members with the key sealed to for each, and when they were fetched.
type Members = (Vec<(OrgId, KeyId)>, Instant);

impl PeerKeys {
    /// The keys `trust` holds, fetched again when older than `fresh_for`.
    pub fn new(trust: Arc<KeyTrust>, fresh_for: Duration) -> Self {
        Self { trust, fresh_for, members: RwLock::default(), refused: RwLock::default() }
    }

    /// The store behind it.
    pub fn trust(&self) -> &Arc<KeyTrust> {
        &self.trust
    }

    /// Records a collaboration's members with the keys trusted for them; returns the refusals.
    pub fn record(&self, collaboration: CollaborationId, decisions: Vec<KeyDecision>) -> Vec<TrustError> {
        let mut members = Vec::new();
        let mut refused = Vec::new();
        let mut reasons = self.refused.write().expect("not poisoned");
        for decision in decisions {
            match decision.key {
                Ok(key) => {
                    reasons.remove(&decision.org);
                    members.push((decision.org, key.id()));
                }
                Err(e) => {
                    reasons.insert(decision.org, e.to_string());
                    refused.push(e);
                }
            }
        }
        self.members.write().expect("not poisoned").insert(collaboration, (members, Instant::now()));
        refused
    }

    /// The current trusted key of `org`: what this node seals to.
    pub fn current(&self, org: OrgId) -> Option<PublicKey> {
        self.trust.current(org)
    }

    /// Why the key last handed out for `org` was refused, if it was.
    pub fn refusal(&self, org: OrgId) -> Option<String> {
        self.refused.read().expect("not poisoned").get(&org).cloned()
    }

    /// The members of `collaboration` and the key the node seals to for each, if fetched.
    pub fn members(&self, collaboration: CollaborationId) -> Option<Vec<(OrgId, KeyId)>> {
        self.members.read().expect("not poisoned").get(&collaboration).map(|(m, _)| m.clone())
    }

    /// Whether the collaboration's keys were never fetched, or not within `fresh_for`.
    pub fn stale(&self, collaboration: CollaborationId) -> bool {
        self.members
            .read()
            .expect("not poisoned")
            .get(&collaboration)
            .is_none_or(|(_, at)| at.elapsed() > self.fresh_for)
    }
}

impl SenderKeys for PeerKeys {
    fn sender_key(&self, org: OrgId, key: &KeyId) -> Option<PublicKey> {
        self.trust.sender_key(org, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{FirstUse, OrgKey};

    #[test]
    fn refused_keys_are_not_members_and_not_sealed_to() {
        let (org, other) = (OrgId::new(), OrgId::new());
        let (genuine, swapped) = (OrgKey::generate(), OrgKey::generate());
        let trust = Arc::new(KeyTrust::in_memory(FirstUse::Refuse));
        trust.trust(org, genuine.id()).unwrap();
        trust.accept(org, genuine.public(), &[]).unwrap();
        let peers = PeerKeys::new(trust.clone(), Duration::from_secs(60));
        let collaboration = CollaborationId::new();
        let refusal = trust.accept(org, swapped.public(), &[]).unwrap_err();
        let unknown = trust.accept(other, swapped.public(), &[]).unwrap_err();
        let refused = peers.record(
            collaboration,
            vec![KeyDecision { org, key: Err(refusal) }, KeyDecision { org: other, key: Err(unknown) }],
        );
        assert_eq!(refused.len(), 2);
        assert_eq!(peers.members(collaboration).unwrap(), Vec::new());
        assert_eq!(peers.current(org).map(|k| k.id()), Some(genuine.id()), "the trusted key stays");
        assert!(peers.current(other).is_none());
        assert!(peers.sender_key(org, &swapped.id()).is_none());
        assert!(!peers.stale(collaboration));
    }
}
