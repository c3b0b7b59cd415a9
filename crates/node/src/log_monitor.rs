//! The organization's monitor of the server's transparency log (docs/protocol.md, "The
//! transparency log").
//!
//! Every `[transparency] check_secs` it reads the newest signed tree head, checks its signature
//! with the pinned log key, and replays every leaf added since the last check into its own
//! frontier, which must give the signed root: so the server can neither rewrite what this node
//! saw nor serve it forged entries. On the way it reads every event about its own organization
//! and raises an alarm for a key that is not one of the organization's key files, a node it does
//! not know, or a membership it has not listed; and it checks that each envelope delivered to it
//! is in the log within `inclusion_delay_secs`. An alarm is logged at error, counted in
//! `fedq_node_log_alarms_total`, and reported with every heartbeat.
//!
//! What it has checked (pinned key, last head, frontier, envelopes waiting for their leaf) is
//! kept in `state_dir/transparency.json`, so a restart neither forgets history nor trusts anew.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use fedq_transparency::{EnvelopeLeaf, Event, Frontier, Leaf, SignedTreeHead};
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::client::audit::AuditError;
use crate::config::TransparencySection;
use crate::contract::TreeHeadBody;
use crate::envelope::Header;
use crate::ids::{NodeId, OrgId};
use crate::metrics::NodeMetrics;
use crate::protocol::SeenHead;
use crate::protocol::heartbeat::LogReport;
use crate::time::Timestamp;

/// Most alarms kept for the heartbeat (the log keeps them all).
const MAX_ALARMS: usize = 32;
/// Most partners' heads kept waiting for a proof.
const MAX_DISPUTED: usize = 64;
/// Most envelopes waiting for their leaf; beyond, the oldest are dropped from the check.
const MAX_WATCHED: usize = 100_000;

/// A log key from its hex form, as the settings and the state file hold it.
pub(crate) fn parse_key(hex_key: &str) -> Option<VerifyingKey> {
    let bytes = <[u8; 32]>::try_from(hex::decode(hex_key).ok()?).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// What the monitor keeps between checks and across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// The log key, pinned on first use when `[transparency] log_key` does not name it.
    log_key: Option<String>,
    /// The last head accepted.
    head: Option<TreeHeadBody>,
    /// The checked tree's right edge.
    frontier: Frontier,
    /// Envelopes delivered here whose leaf has not been seen yet.
    watched: Vec<Watched>,
    /// Partners' heads the server has not yet joined to this node's by a proof: evidence,
    /// compared again at every check until a proof comes or the tries run out.
    #[serde(default)]
    disputed: Vec<Disputed>,
}

/// A partner's head waiting for the proof that joins it to this node's.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Disputed {
    /// The partner's signed head.
    head: TreeHeadBody,
    /// The partner.
    from: OrgId,
    /// Checks in a row in which the server gave no usable proof.
    failures: u32,
    /// The last reason.
    last_error: String,
}

/// What the server's answer for a partner's head concluded.
enum Judgement {
    /// A proof joins the two heads.
    Consistent,
    /// No history contains both: the evidence of a split view.
    Split(fedq_transparency::Alarm),
    /// No usable answer (an error, a timeout, a malformed proof): asked again later.
    Unanswered(String),
}

/// The envelopes an alarm names: the first five, and how many more.
fn summary(what: &[String]) -> String {
    let shown = what.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    match what.len() {
        0..=5 => shown,
        n => format!("{shown} and {} more", n - 5),
    }
}

/// Whether a head signed at `timestamp_ms` is older than `max_age_secs` at `now_ms`; if so,
/// its age in seconds.
fn stale(timestamp_ms: u64, now_ms: u64, max_age_secs: u64) -> Option<u64> {
    let age = now_ms.saturating_sub(timestamp_ms) / 1000;
    (age > max_age_secs).then_some(age)
}

/// An envelope waiting for its leaf.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Watched {
    /// Its leaf hash, hex.
    leaf: String,
    /// What it is, for the alarm.
    what: String,
    /// When this node got or sent it, ms since the epoch.
    since_ms: i64,
    /// Sent by this node (else delivered to it).
    #[serde(default)]
    sent: bool,
}

/// The monitor of one organization's node.
pub(crate) struct LogMonitor {
    org: OrgId,
    node: Mutex<Option<NodeId>>,
    own_keys: HashSet<[u8; 32]>,
    settings: TransparencySection,
    path: PathBuf,
    saved: tokio::sync::Mutex<Saved>,
    watched: Mutex<Vec<Watched>>,
    alarms: Mutex<Vec<String>>,
    /// The pinned log key and the last head accepted with it: what the envelopes this node seals
    /// carry, what partners' heads are compared with, and what the heartbeat reports.
    last: Mutex<Option<(VerifyingKey, SignedTreeHead)>>,
    /// Partners' heads already compared with this node's (size and root).
    compared: Mutex<HashSet<(u64, [u8; 32])>>,
    /// Partners' heads without a proof yet (see [`Saved::disputed`]).
    disputed: Mutex<Vec<Disputed>>,
    metrics: NodeMetrics,
}

impl LogMonitor {
    /// The monitor of `org`, whose key files' fingerprints are `own_keys`, keeping its state in
    /// `state_dir`.
    pub fn open(
        org: OrgId,
        own_keys: HashSet<[u8; 32]>,
        settings: TransparencySection,
        state_dir: &std::path::Path,
        metrics: NodeMetrics,
    ) -> std::io::Result<Self> {
        let path = state_dir.join("transparency.json");
        let saved: Saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!(
                    "{}: not the monitor's state ({e}); move it away to start monitoring afresh",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(e),
        };
        let watched = saved.watched.clone();
        let disputed = saved.disputed.clone();
        let key = settings.log_key.as_ref().or(saved.log_key.as_ref()).and_then(|k| parse_key(k));
        let last = key.zip(saved.head.as_ref().and_then(|h| SignedTreeHead::try_from(h).ok()));
        Ok(Self {
            org,
            node: Mutex::new(None),
            own_keys,
            settings,
            path,
            saved: tokio::sync::Mutex::new(saved),
            watched: Mutex::new(watched),
            alarms: Mutex::new(Vec::new()),
            last: Mutex::new(last),
            compared: Mutex::new(HashSet::new()),
            disputed: Mutex::new(disputed),
            metrics,
        })
    }

    /// This node's id, once the server told it.
    pub fn set_node(&self, node: NodeId) {
        *self.node.lock().expect("not poisoned") = Some(node);
    }

    /// Notes an envelope delivered to this node: the server routed it, so its leaf must appear
    /// in the log.
    pub fn received(&self, header: &Header, bytes: &[u8]) {
        let what = format!("{} {} from {}", header.kind, header.id, header.sender);
        self.expect(header, bytes, what, false);
    }

    /// Notes an envelope this node published and the broker confirmed: unless the router refused
    /// it, its leaf must appear in the log.
    pub fn sent(&self, header: &Header, bytes: &[u8]) {
        let what = format!("{} {} to {}", header.kind, header.id, header.recipient);
        self.expect(header, bytes, what, true);
    }

    fn expect(&self, header: &Header, bytes: &[u8], what: String, sent: bool) {
        let leaf = Leaf::Envelope(EnvelopeLeaf::of(header, bytes)).hash();
        let mut watched = self.watched.lock().expect("not poisoned");
        if watched.len() >= MAX_WATCHED {
            watched.remove(0);
        }
        watched.push(Watched { leaf: hex::encode(leaf), what, since_ms: Timestamp::now().as_millis(), sent });
    }

    /// The last head this node accepted, to seal into what it sends: the receiver compares it
    /// with its own.
    pub fn seen_head(&self) -> Option<SeenHead> {
        self.last.lock().expect("not poisoned").as_ref().map(|(_, head)| SeenHead::from(head))
    }

    /// Compares the head a partner last checked (sealed in what it sent) with this node's: the
    /// log must have shown both the same history. The server proves it with a consistency proof
    /// between the two sizes; a head signed by the log that no proof joins to this node's is a
    /// split view, and the two signed heads are the evidence.
    pub async fn compare_partner(&self, server: &Client, theirs: &SeenHead, from: OrgId) {
        let Ok(theirs) = SignedTreeHead::try_from(theirs) else {
            tracing::warn!(%from, "transparency log: a partner's head is malformed; ignored");
            return;
        };
        let Some((key, mine)) = *self.last.lock().expect("not poisoned") else { return };
        {
            let mut compared = self.compared.lock().expect("not poisoned");
            if compared.len() > 10_000 {
                compared.clear();
            }
            if !compared.insert((theirs.head.size, theirs.head.root)) {
                return;
            }
        }
        if theirs.verify(&key).is_err() {
            // Not the log's: the partner's own mistake or lie, not evidence against the server.
            tracing::warn!(%from, size = theirs.head.size, "transparency log: a partner sent a head the log did not sign");
            return;
        }
        match Self::judge(server, key, &mine, &theirs).await {
            Judgement::Consistent => {}
            Judgement::Split(alarm) => self.split_view(from, &theirs, &mine, &alarm),
            Judgement::Unanswered(why) => {
                // Kept as evidence and asked again at every check: a server that answers only
                // for the heads it can join must not escape by failing the others.
                tracing::warn!(%from, error = %why, "transparency log: no proof joins a partner's head to this node's yet; kept and asked again");
                let mut disputed = self.disputed.lock().expect("not poisoned");
                let known = disputed
                    .iter()
                    .any(|d| d.head.size == theirs.head.size && d.head.root == hex::encode(theirs.head.root));
                // Bounded, so that partners replaying old heads through a server's outage cannot
                // grow the state file or the checks without end; the oldest evidence stays.
                if !known && disputed.len() < MAX_DISPUTED {
                    disputed.push(Disputed {
                        head: TreeHeadBody::from(&theirs),
                        from,
                        failures: 1,
                        last_error: why,
                    });
                }
            }
        }
    }

    /// Asks the server for the proof joining a partner's head and this node's.
    async fn judge(
        server: &Client,
        key: VerifyingKey,
        mine: &SignedTreeHead,
        theirs: &SignedTreeHead,
    ) -> Judgement {
        let monitor = fedq_transparency::Monitor::new(key, Some(mine.head));
        let (old, new) = if theirs.head.size <= mine.head.size {
            (theirs.head.size, mine.head.size)
        } else {
            (mine.head.size, theirs.head.size)
        };
        let proof = if old == new { Ok(Vec::new()) } else { server.log_consistency(old, new).await };
        match proof {
            // Same sizes and another root, or a proof served that does not join them: both
            // heads are signed by the log, so they are the evidence.
            Ok(proof) => match monitor.compare(theirs, &proof) {
                Ok(()) => Judgement::Consistent,
                Err(alarm) => Judgement::Split(alarm),
            },
            Err(AuditError::Client(e)) if e.status() == Some(404) => {
                Judgement::Split(fedq_transparency::Alarm::Inconsistent {
                    old,
                    new,
                    why: fedq_transparency::ProofError::Mismatch,
                    heads: Box::new((mine.head, theirs.head)),
                })
            }
            Err(e) => Judgement::Unanswered(e.to_string()),
        }
    }

    fn split_view(
        &self,
        from: OrgId,
        theirs: &SignedTreeHead,
        mine: &SignedTreeHead,
        alarm: &fedq_transparency::Alarm,
    ) {
        self.raise(
            "split_view",
            &format!(
                "organization {from} was shown a tree head of {} leaves with root {} that the log cannot join \
                 to this node's head of {} leaves with root {} ({alarm}): the server shows different \
                 histories to different organizations",
                theirs.head.size,
                hex::encode(theirs.head.root),
                mine.head.size,
                hex::encode(mine.head.root),
            ),
        );
    }

    /// Asks again for every partner's head still without a proof; past `proof_tries` checks,
    /// the withheld proof is an alarm with both heads as its evidence.
    async fn settle_disputed(&self, server: &Client, key: VerifyingKey, mine: &SignedTreeHead) {
        let disputed = std::mem::take(&mut *self.disputed.lock().expect("not poisoned"));
        let mut still = Vec::new();
        for mut d in disputed {
            let Ok(theirs) = SignedTreeHead::try_from(&d.head) else { continue };
            match Self::judge(server, key, mine, &theirs).await {
                Judgement::Consistent => {}
                Judgement::Split(alarm) => self.split_view(d.from, &theirs, mine, &alarm),
                Judgement::Unanswered(why) => {
                    d.failures += 1;
                    d.last_error = why;
                    if d.failures >= self.settings.proof_tries.max(1) {
                        self.raise(
                            "proof_withheld",
                            &format!(
                                "the server gave no consistency proof joining the tree head of {} leaves with root {} \
                                 that organization {} was shown to this node's head of {} leaves with root {}, in {} \
                                 checks (last: {}): a server that forked the log cannot give one",
                                theirs.head.size,
                                hex::encode(theirs.head.root),
                                d.from,
                                mine.head.size,
                                hex::encode(mine.head.root),
                                d.failures,
                                d.last_error,
                            ),
                        );
                    } else {
                        still.push(d);
                    }
                }
            }
        }
        self.disputed.lock().expect("not poisoned").extend(still);
    }

    /// What the heartbeat reports.
    pub fn report(&self) -> LogReport {
        let alarms = self.alarms.lock().expect("not poisoned").clone();
        let size = self.last.lock().expect("not poisoned").as_ref().map(|(_, head)| head.head.size);
        LogReport { size, alarms }
    }

    /// Runs a check every `check_secs` until `stop`.
    pub async fn run(&self, server: &Client, mut stop: tokio::sync::watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.settings.check_secs.max(1));
        loop {
            self.check(server).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One check: the head, the new leaves, the envelopes waiting for theirs.
    pub async fn check(&self, server: &Client) {
        match self.check_once(server).await {
            Ok(()) => {}
            Err(AuditError::Alarm(alarm)) => self.raise(alarm.code(), &alarm.to_string()),
            // Unreachable, or answering errors: checked again next time. Not an alarm: the
            // server may delay, it may not lie.
            Err(e) => tracing::warn!(error = %e, "transparency log: could not check the log; retrying"),
        }
    }

    async fn check_once(&self, server: &Client) -> Result<(), AuditError> {
        let mut saved = self.saved.lock().await;
        let shown = server.log_key().await?;
        let key = self.pinned_key(&mut saved, shown)?;
        let head = server.log_head(&key, None).await?;
        if let Some(last) = &saved.head
            && head.head.size < last.size
        {
            return Err(fedq_transparency::Alarm::Shrunk { old: last.size, new: head.head.size }.into());
        }
        let now_ms = u64::try_from(Timestamp::now().as_millis()).unwrap_or(0);
        // Named by its own timestamp, not its age: the same frozen head is one alarm, not one
        // per check pushing out the others.
        if let Some(age) = stale(head.head.timestamp_ms, now_ms, self.settings.max_head_age_secs) {
            tracing::debug!(age, "transparency log: the newest head is stale");
            self.raise(
                "stale_head",
                &format!(
                    "the newest tree head the server shows ({} leaves, signed at {} ms since the epoch) is \
                     older than transparency.max_head_age_secs ({}): the server signs its head again every \
                     minute, so this node is being shown a frozen view of the log",
                    head.head.size, head.head.timestamp_ms, self.settings.max_head_age_secs
                ),
            );
        }
        // The key the server hands out for this organization must be one of its key files: a key
        // swapped in the server's database is caught here even when no leaf records it.
        match server.current_key(self.org).await {
            Ok(Some(served)) if !self.own_keys.contains(served.id().as_bytes()) => self.raise(
                "own_key_substituted",
                &format!(
                    "the server hands out key {} as this organization's current key, and it is not one of its \
                     key files (node.key_file, previous_key_files): members trusting it would seal to, and \
                     accept signatures from, a key this organization does not hold; the server's directory \
                     was changed (in its database, or by someone who published a key for this organization)",
                    served.id()
                ),
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "transparency log: could not read this organization's keys"),
        }
        let mut events = Vec::new();
        let mut seen = HashSet::new();
        let org = self.org;
        let frontier = server
            .log_replay(&saved.frontier, &head, |index, leaf| {
                seen.insert(hex::encode(fedq_transparency::leaf_hash(leaf)));
                match Leaf::decode(leaf) {
                    Ok(Leaf::Event(e)) if e.organization == org => events.push((index, e.event)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(index, error = %e, "transparency log: a leaf this version cannot read")
                    }
                }
            })
            .await?;
        for (index, event) in events {
            if let Some(why) = self.unrecognised(&event) {
                self.raise("unrecognised_event", &format!("log leaf {index}: {why}"));
            } else {
                tracing::info!(index, %event, "transparency log: a change of this organization");
            }
        }
        saved.frontier = frontier;
        saved.head = Some(TreeHeadBody::from(&head));
        *self.last.lock().expect("not poisoned") = Some((key, head));
        self.settle_disputed(server, key, &head).await;
        saved.disputed = self.disputed.lock().expect("not poisoned").clone();
        let (mut received, mut sent) = (Vec::new(), Vec::new());
        for w in self.settle_watched(&seen) {
            // An envelope the broker delivered again, or that this node sent again (a result
            // re-sent after a restart), has the leaf of its first passage, which an earlier
            // check replayed: it is not among this check's new leaves, yet it is in the log. The
            // log proves it, against the head just checked; only what it cannot prove alarms.
            match Self::proven(server, &w.leaf, &head).await {
                Some(true) => self.metrics.log_proven(),
                Some(false) if w.sent => sent.push(w.what),
                Some(false) => received.push(w.what),
                None => self.watched.lock().expect("not poisoned").push(w),
            }
        }
        let delay = self.settings.inclusion_delay_secs;
        // One alarm per check and direction, however many envelopes: a flood of them (a
        // container messaging organizations outside its run, say) cannot push out the others.
        if !sent.is_empty() {
            self.raise(
                "envelope_not_logged",
                &format!(
                    "{} was sent by this node and confirmed by the broker but is not in the log after {delay} s: \
                     the router refused it (see the dead letters) or routed it without logging it",
                    summary(&sent)
                ),
            );
        }
        if !received.is_empty() {
            self.raise(
                "envelope_not_logged",
                &format!(
                    "{} was delivered to this node but is not in the log after {delay} s: the server routed it \
                     without logging it",
                    summary(&received)
                ),
            );
        }
        saved.watched = self.watched.lock().expect("not poisoned").clone();
        self.metrics.log_size(head.head.size);
        self.save(&saved);
        Ok(())
    }

    /// Whether the log proves the leaf `leaf` (hex) is in the tree of `head`: `None` when the
    /// server did not answer (asked again at the next check).
    async fn proven(server: &Client, leaf: &str, head: &SignedTreeHead) -> Option<bool> {
        let Some(hash) = hex::decode(leaf).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) else {
            return Some(false);
        };
        match server.log_inclusion(&hash, head.head.size).await {
            Ok(Some((index, path))) => Some(
                fedq_transparency::verify_inclusion(&hash, index, head.head.size, &path, &head.head.root)
                    .is_ok(),
            ),
            Ok(None) => Some(false),
            Err(_) => None,
        }
    }

    /// The key heads must be signed with: the configured one, else the one pinned on first use.
    fn pinned_key(&self, saved: &mut Saved, shown: VerifyingKey) -> Result<VerifyingKey, AuditError> {
        let shown_hex = hex::encode(shown.as_bytes());
        let pinned = self.settings.log_key.clone().or_else(|| saved.log_key.clone());
        match pinned {
            Some(pinned) if pinned.eq_ignore_ascii_case(&shown_hex) => Ok(shown),
            Some(pinned) => Err(fedq_transparency::Alarm::KeyChanged { pinned, now: shown_hex }.into()),
            None => {
                tracing::info!(key = %shown_hex, "transparency log: pinned the log's key on first use");
                saved.log_key = Some(shown_hex);
                Ok(shown)
            }
        }
    }

    /// Why an event about this organization is not one it made, if it is not.
    fn unrecognised(&self, event: &Event) -> Option<String> {
        let fp = |key: &[u8; 32]| format!("SHA256:{}", hex::encode(key));
        let me = *self.node.lock().expect("not poisoned");
        let known_node = |node: &NodeId| Some(*node) == me || self.settings.nodes.contains(node);
        match event {
            Event::KeyPublished { key } | Event::KeyRotated { new: key, .. }
                if !self.own_keys.contains(key) =>
            {
                Some(format!(
                    "a key {} was published for this organization, and it is not one of its key files \
                     (node.key_file, previous_key_files): someone else can now sign as it and read what is \
                     sealed for it",
                    fp(key)
                ))
            }
            Event::KeyRevoked { key } if self.own_keys.contains(key) => Some(format!(
                "this organization's key {} was revoked: if its administrator did not revoke it, the \
                 server did",
                fp(key)
            )),
            Event::NodeRegistered { node } if !known_node(node) => Some(format!(
                "a node {node} was registered for this organization that this node does not know \
                 (list it in [transparency] nodes if its administrator registered it)"
            )),
            Event::NodeRevoked { node } if Some(*node) == me => {
                Some("this node was revoked: if its administrator did not revoke it, the server did".into())
            }
            Event::CollaborationCreated { collaboration } | Event::MemberAdded { collaboration } => {
                let listed = self.settings.collaborations.as_ref();
                listed.filter(|l| !l.contains(collaboration)).map(|_| {
                    format!(
                        "this organization was made a member of collaboration {collaboration}, which is not in \
                         [transparency] collaborations"
                    )
                })
            }
            _ => None,
        }
    }

    /// Removes the watched envelopes whose leaf was seen; returns those overdue.
    fn settle_watched(&self, seen: &HashSet<String>) -> Vec<Watched> {
        let deadline = Timestamp::now().as_millis().saturating_sub(
            i64::try_from(self.settings.inclusion_delay_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        );
        let mut watched = self.watched.lock().expect("not poisoned");
        watched.retain(|w| !seen.contains(&w.leaf));
        let (overdue, waiting): (Vec<Watched>, Vec<Watched>) =
            watched.drain(..).partition(|w| w.since_ms < deadline);
        *watched = waiting;
        overdue
    }

    pub(crate) fn raise(&self, code: &'static str, message: &str) {
        let mut alarms = self.alarms.lock().expect("not poisoned");
        if alarms.iter().any(|a| a == message) {
            return;
        }
        tracing::error!(code, "transparency log alarm: {message}");
        self.metrics.log_alarm(code);
        if alarms.len() == MAX_ALARMS {
            alarms.remove(0);
        }
        alarms.push(message.to_owned());
    }

    fn save(&self, saved: &Saved) {
        let written = serde_json::to_vec_pretty(saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::state::write_atomic(&self.path, &bytes));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "transparency log: could not save the monitor's state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::CollaborationId;

    fn monitor(settings: TransparencySection) -> (LogMonitor, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let own = HashSet::from([[1u8; 32]]);
        let monitor = LogMonitor::open(OrgId::new(), own, settings, dir.path(), NodeMetrics::new()).unwrap();
        (monitor, dir)
    }

    #[test]
    fn only_changes_the_organization_did_not_make_are_unrecognised() {
        let other_node = NodeId::new();
        let (m, _dir) = monitor(TransparencySection { nodes: vec![other_node], ..Default::default() });
        let me = NodeId::new();
        m.set_node(me);
        assert_eq!(m.unrecognised(&Event::KeyPublished { key: [1; 32] }), None, "its own key");
        assert!(
            m.unrecognised(&Event::KeyPublished { key: [2; 32] })
                .unwrap()
                .contains("not one of its key files")
        );
        assert!(m.unrecognised(&Event::KeyRotated { old: [1; 32], new: [2; 32] }).is_some());
        assert!(m.unrecognised(&Event::KeyRevoked { key: [1; 32] }).unwrap().contains("was revoked"));
        assert_eq!(m.unrecognised(&Event::KeyRevoked { key: [2; 32] }), None, "not its key");
        assert_eq!(m.unrecognised(&Event::NodeRegistered { node: me }), None);
        assert_eq!(m.unrecognised(&Event::NodeRegistered { node: other_node }), None, "listed");
        assert!(
            m.unrecognised(&Event::NodeRegistered { node: NodeId::new() }).unwrap().contains("does not know")
        );
        assert!(m.unrecognised(&Event::NodeRevoked { node: me }).is_some());
        let c = CollaborationId::new();
        assert_eq!(m.unrecognised(&Event::MemberAdded { collaboration: c }), None, "no list: logged only");
        assert_eq!(m.unrecognised(&Event::UserRoleChanged { user: *OrgId::new().as_uuid(), role: 2 }), None);
    }

    #[test]
    fn with_a_list_of_collaborations_any_other_membership_is_unrecognised() {
        let agreed = CollaborationId::new();
        let (m, _dir) =
            monitor(TransparencySection { collaborations: Some(vec![agreed]), ..Default::default() });
        assert_eq!(m.unrecognised(&Event::MemberAdded { collaboration: agreed }), None);
        assert!(
            m.unrecognised(&Event::CollaborationCreated { collaboration: CollaborationId::new() }).is_some()
        );
        assert_eq!(m.unrecognised(&Event::MemberRemoved { collaboration: CollaborationId::new() }), None);
    }

    #[test]
    fn an_envelope_is_overdue_only_after_the_delay_and_not_once_its_leaf_is_seen() {
        let (m, _dir) = monitor(TransparencySection { inclusion_delay_secs: 0, ..Default::default() });
        let (seen, missing) = ("aa".to_owned(), "bb".to_owned());
        for leaf in [&seen, &missing] {
            m.watched.lock().unwrap().push(Watched {
                leaf: leaf.clone(),
                what: leaf.clone(),
                since_ms: 0,
                sent: false,
            });
        }
        let overdue = m.settle_watched(&HashSet::from([seen]));
        assert_eq!(overdue.iter().map(|w| w.what.as_str()).collect::<Vec<_>>(), vec!["bb"]);
        assert!(m.watched.lock().unwrap().is_empty());
        let (m, _dir) = monitor(TransparencySection { inclusion_delay_secs: 3600, ..Default::default() });
        m.watched.lock().unwrap().push(Watched {
            leaf: missing.clone(),
            what: missing,
            since_ms: Timestamp::now().as_millis(),
            sent: true,
        });
        assert!(m.settle_watched(&HashSet::new()).is_empty(), "still within the delay");
    }

    #[test]
    fn a_head_is_stale_only_past_the_bound() {
        assert_eq!(stale(1_000_000, 1_000_000 + 600_000, 600), None);
        assert_eq!(stale(1_000_000, 1_000_000 + 601_000, 600), Some(601));
        assert_eq!(stale(2_000_000, 1_000_000, 600), None, "a head from the future is not stale");
    }

    #[test]
    fn a_corrupt_state_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("transparency.json"), b"{not json").unwrap();
        let err = LogMonitor::open(
            OrgId::new(),
            HashSet::new(),
            TransparencySection::default(),
            dir.path(),
            NodeMetrics::new(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("move it away"), "{err}");
    }
}
