//! Which public keys of other organizations this party trusts, decided here and never on the
//! server's word alone.
//!
//! The server publishes keys, but a curious or compromised server could hand out a key of its
//! own and read everything sealed to it. So each party (a researcher's client, a node) keeps a
//! persistent store of the keys it trusts per organization. The first key of an organization is
//! trusted only by fingerprint, given by a person who compared it out of band (`fedq keys trust`,
//! node pins), or explicitly on first use, which records and reports it. A different key later is
//! accepted only when a chain of [`Rotation`]s leads to it, each signed by the key before it;
//! anything else is refused with both fingerprints, until a person trusts the new one.
//!
//! Every key once trusted for an organization stays trusted to verify its signatures, so that
//! envelopes sealed before a rotation still open.
//!
//! A key trusted on first use or by a rotation must also be in the server's transparency log
//! (the client proves its leaf included in a signed head): the store keeps the log's key and the
//! newest head this party verified ([`LogAnchor`]), so that every later head must extend it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::{Signature, Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};

use super::{KeyId, OrgKey, PublicKey, SenderKeys};
use crate::ids::OrgId;
use crate::time::Timestamp;

const ROTATION_LABEL: &[u8] = b"fedq key rotation v1\0";
const REVOCATION_LABEL: &[u8] = b"fedq key revocation v1\0";
/// Longest chain of rotations followed at once; a longer one is refused as implausible.
const MAX_CHAIN: usize = 64;

/// An organization's statement that its key `old` hands over to `new`, signed with `old`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The organization.
    pub org: OrgId,
    /// The key that signs the hand-over.
    pub old: KeyId,
    /// The key it hands over to.
    pub new: PublicKey,
    /// Ed25519 signature by `old` over [`Rotation::message`].
    pub signature: [u8; 64],
}

impl Rotation {
    /// What is signed: a label, the organization, the old key's fingerprint, the new key.
    fn message(org: OrgId, old: &KeyId, new: &PublicKey) -> Vec<u8> {
        let mut message = Vec::with_capacity(ROTATION_LABEL.len() + 16 + 32 + 64);
        message.extend_from_slice(ROTATION_LABEL);
        message.extend_from_slice(org.as_uuid().as_bytes());
        message.extend_from_slice(old.as_bytes());
        message.extend_from_slice(&new.to_bytes());
        message
    }

    /// `old` signs the hand-over of `org` to `new`.
    pub fn sign(org: OrgId, old: &OrgKey, new: &PublicKey) -> Self {
        let signature = old.signing_key().sign(&Self::message(org, &old.id(), new)).to_bytes();
        Self { org, old: old.id(), new: new.clone(), signature }
    }

    /// Whether `old` (the key named by `self.old`) signed this rotation.
    pub fn verify(&self, old: &PublicKey) -> bool {
        old.id() == self.old
            && old
                .verifying_key()
                .verify(
                    &Self::message(self.org, &self.old, &self.new),
                    &Signature::from_bytes(&self.signature),
                )
                .is_ok()
    }
}

/// An organization's statement that its key `key` is revoked, signed by `signer`: the revoked
/// key itself, or another key of the organization (when the revoked one is lost). Whoever holds
/// either may revoke, which only takes trust away; the server, holding neither, cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The organization.
    pub org: OrgId,
    /// The key revoked.
    pub key: KeyId,
    /// The key that signs the statement.
    pub signer: KeyId,
    /// Ed25519 signature by `signer` over [`Revocation::message`].
    pub signature: [u8; 64],
}

impl Revocation {
    /// What is signed: a label, the organization, the revoked key's fingerprint.
    pub fn message(org: OrgId, key: &KeyId) -> Vec<u8> {
        let mut message = Vec::with_capacity(REVOCATION_LABEL.len() + 16 + 32);
        message.extend_from_slice(REVOCATION_LABEL);
        message.extend_from_slice(org.as_uuid().as_bytes());
        message.extend_from_slice(key.as_bytes());
        message
    }

    /// `signer` revokes `org`'s key `key`.
    pub fn sign(org: OrgId, key: KeyId, signer: &OrgKey) -> Self {
        let signature = signer.signing_key().sign(&Self::message(org, &key)).to_bytes();
        Self { org, key, signer: signer.id(), signature }
    }

    /// Whether `signer` (the key named by `self.signer`) signed this revocation.
    pub fn verify(&self, signer: &PublicKey) -> bool {
        signer.id() == self.signer
            && signer
                .verifying_key()
                .verify(&Self::message(self.org, &self.key), &Signature::from_bytes(&self.signature))
                .is_ok()
    }
}

/// Whether an organization's first key may be trusted without a fingerprint from a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstUse {
    /// Refuse it until its fingerprint is trusted (`fedq keys trust`, node pins).
    #[default]
    Refuse,
    /// Trust it, record it, and report its fingerprint (trust on first use).
    Accept,
}

/// How a key came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// A person gave its fingerprint.
    Fingerprint,
    /// Trusted on first use.
    FirstUse,
    /// A rotation signed by the key before it.
    Rotation,
    /// This party's own key.
    Own,
    /// Never trusted: known only as revoked by its organization, so that it is refused if
    /// offered later.
    Revoked,
}

/// One trusted key of an organization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrustedKey {
    /// Its fingerprint.
    #[serde(with = "super::fingerprint_text")]
    pub fingerprint: KeyId,
    /// The key, once the server has shown it (a fingerprint may be trusted before).
    pub public_key: Option<PublicKey>,
    /// Why it is trusted.
    pub how: How,
    /// Since when.
    pub since: Timestamp,
    /// When this party learnt that the organization revoked it: from then on it verifies
    /// nothing, is sealed to never, and no rotation from it is followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
}

/// What [`KeyTrust::accept`] decided about a key it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Already the current key.
    Known,
    /// Its fingerprint was trusted; now the key itself is known too.
    Fingerprint,
    /// Trusted now, on first use: report the fingerprint.
    FirstUse,
    /// Followed a signed rotation from the key trusted before.
    Rotated {
        /// The key trusted before.
        from: KeyId,
    },
}

/// A key that is not trusted, or a store that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The organization's first key, with no fingerprint trusted for it.
    #[error(
        "organization {org} has key {offered}, which you have not trusted yet: compare this \
         fingerprint with the organization out of band, then run `fedq keys trust {org} {offered}` \
         (a node: add it to [peers.pins])"
    )]
    Unknown {
        /// The organization.
        org: OrgId,
        /// The key the server offered.
        offered: KeyId,
    },
    /// A key other than the trusted one, and no signed rotation leads to it.
    #[error(
        "the server now gives key {offered} for organization {org}, but you trust {trusted} and no \
         rotation signed by it leads to the new key: it may have been swapped by the server or on \
         the way. Nothing was sealed to it. If organization {org} confirms out of band that it \
         replaced its key, run `fedq keys trust {org} {offered}` (a node: add it to [peers.pins])"
    )]
    Changed {
        /// The organization.
        org: OrgId,
        /// The key trusted now.
        trusted: KeyId,
        /// The key the server offered.
        offered: KeyId,
    },
    /// The key was revoked by its organization.
    #[error(
        "organization {org}'s key {key} was revoked: its envelopes are refused and nothing is sealed \
         to it. Once the organization tells you its new key's fingerprint out of band, run \
         `fedq keys trust {org} <fingerprint>` (a node: add it to [peers.pins])"
    )]
    Revoked {
        /// The organization.
        org: OrgId,
        /// The revoked key.
        key: KeyId,
    },
    /// A key that would be trusted on first use or by a rotation is not proven to be in the
    /// transparency log: the server may be showing this party a key no one else sees.
    #[error(
        "organization {org}'s key {offered} is not proven to be in the server's transparency log ({why}), so \
         it is not trusted: a server that shows you a key it never logged could be the only one to read what \
         you seal to it. Compare the fingerprint with the organization out of band; if it is theirs, run \
         `fedq keys trust {org} {offered}` (a node: add it to [peers.pins])"
    )]
    NotLogged {
        /// The organization.
        org: OrgId,
        /// The key the server offered.
        offered: KeyId,
        /// What the log did not prove.
        why: String,
    },
    /// The store could not be read or written.
    #[error("trusted keys at {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The store is not readable as trusted keys.
    #[error(
        "trusted keys at {path} are damaged ({detail}); restore it from a backup or move it away and trust the keys again"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    organizations: BTreeMap<OrgId, Vec<TrustedKey>>,
    /// The transparency log as last verified (absent in stores written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log: Option<LogAnchor>,
}

/// The server's transparency log as this party last verified it: the key that signs its heads,
/// and the newest head checked (size and root), which every later head must extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAnchor {
    /// The log's Ed25519 public key.
    #[serde(with = "hex::serde")]
    pub key: [u8; 32],
    /// The size of the newest head verified (0: none yet).
    pub size: u64,
    /// Its root hash.
    #[serde(with = "hex::serde")]
    pub root: [u8; 32],
}

/// The keys this party trusts, per organization, oldest first: the last is the current one.
#[derive(Debug)]
pub struct KeyTrust {
    path: Option<PathBuf>,
    first_use: FirstUse,
    orgs: Mutex<BTreeMap<OrgId, Vec<TrustedKey>>>,
    /// The transparency log as last verified; locked after `orgs` when both are.
    log: Mutex<Option<LogAnchor>>,
    /// How long a key still verifies after this party trusted its successor.
    retired_grace: std::time::Duration,
}

/// How long a replaced key still verifies by default: a week, for envelopes sealed before the
/// rotation that wait in a queue while a node is offline.
pub const RETIRED_KEY_GRACE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

impl KeyTrust {
    /// A store kept in memory only.
    pub fn in_memory(first_use: FirstUse) -> Self {
        Self {
            path: None,
            first_use,
            orgs: Mutex::new(BTreeMap::new()),
            log: Mutex::new(None),
            retired_grace: RETIRED_KEY_GRACE,
        }
    }

    /// The store kept at `path` (created on the first change).
    pub fn open(path: &Path, first_use: FirstUse) -> Result<Self, TrustError> {
        let stored = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| TrustError::Damaged { path: path.to_owned(), detail: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(source) => return Err(TrustError::Io { path: path.to_owned(), source }),
        };
        Ok(Self {
            path: Some(path.to_owned()),
            first_use,
            orgs: Mutex::new(stored.organizations),
            log: Mutex::new(stored.log),
            retired_grace: RETIRED_KEY_GRACE,
        })
    }

    /// A key replaced by a newer trusted one verifies for `grace` after this party trusted the
    /// newer one, then no more: the time is this party's, not the signer's (whose creation
    /// time an envelope carries, and a thief can set).
    pub fn with_retired_grace(mut self, grace: std::time::Duration) -> Self {
        self.retired_grace = grace;
        self
    }

    /// The key `key` of `org`, if it verifies at `now`: trusted, not revoked, and current or
    /// replaced less than the grace period ago.
    fn verifying_key_at(&self, org: OrgId, key: &KeyId, now: Timestamp) -> Option<PublicKey> {
        let orgs = self.orgs.lock().expect("not poisoned");
        let keys = orgs.get(&org)?;
        let at = keys
            .iter()
            .position(|k| &k.fingerprint == key && k.revoked.is_none() && k.how != How::Revoked)?;
        if let Some(successor) = keys[at + 1..].iter().find(|k| k.how != How::Revoked)
            && successor.since.saturating_add(self.retired_grace) < now
        {
            return None;
        }
        keys[at].public_key.clone()
    }

    /// Whether first keys are trusted on first use.
    pub fn first_use(&self) -> FirstUse {
        self.first_use
    }

    fn save(&self, orgs: &BTreeMap<OrgId, Vec<TrustedKey>>) -> Result<(), TrustError> {
        let log = *self.log.lock().expect("not poisoned");
        self.save_with(orgs, log)
    }

    fn save_with(
        &self,
        orgs: &BTreeMap<OrgId, Vec<TrustedKey>>,
        log: Option<LogAnchor>,
    ) -> Result<(), TrustError> {
        let Some(path) = &self.path else { return Ok(()) };
        let io = |source| TrustError::Io { path: path.clone(), source };
        let stored = Stored { version: 1, organizations: orgs.clone(), log };
        let bytes = serde_json::to_vec_pretty(&stored).expect("trusted keys encode");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        crate::files::write_atomic(path, &bytes, 0o600).map_err(io)
    }

    /// The transparency log as last verified, if it was.
    pub fn log_anchor(&self) -> Option<LogAnchor> {
        *self.log.lock().expect("not poisoned")
    }

    /// Records the log as verified now: its key and a head that extends the one recorded (the
    /// caller proved it). A head older than the one recorded is not kept; a new key (pinned by
    /// a person) replaces the anchor.
    pub fn record_log(&self, anchor: LogAnchor) -> Result<(), TrustError> {
        let orgs = self.orgs.lock().expect("not poisoned");
        let mut log = self.log.lock().expect("not poisoned");
        if log.is_some_and(|old| old.key == anchor.key && old.size >= anchor.size) {
            return Ok(());
        }
        *log = Some(anchor);
        let kept = *log;
        drop(log);
        self.save_with(&orgs, kept)
    }

    /// A person pins the log's key (a node's `transparency.log_key`): heads must be signed by
    /// it. The head recorded is kept if it was verified with this key, forgotten otherwise.
    pub fn pin_log_key(&self, key: [u8; 32]) -> Result<(), TrustError> {
        if self.log_anchor().is_some_and(|a| a.key == key) {
            return Ok(());
        }
        self.record_log(LogAnchor { key, size: 0, root: [0; 32] })
    }

    /// A person trusts `fingerprint` for `org`: it becomes the current key (unless it is
    /// already trusted, so that pins read again at every start do not undo a rotation).
    pub fn trust(&self, org: OrgId, fingerprint: KeyId) -> Result<bool, TrustError> {
        self.add(org, fingerprint, None, How::Fingerprint)
    }

    /// This party's own key.
    pub fn trust_own(&self, org: OrgId, key: &PublicKey) -> Result<bool, TrustError> {
        self.add(org, key.id(), Some(key.clone()), How::Own)
    }

    fn add(&self, org: OrgId, id: KeyId, key: Option<PublicKey>, how: How) -> Result<bool, TrustError> {
        let mut orgs = self.orgs.lock().expect("not poisoned");
        let keys = orgs.entry(org).or_default();
        if let Some(known) = keys.iter_mut().find(|k| k.fingerprint == id) {
            if known.public_key.is_none() && key.is_some() {
                known.public_key = key;
                self.save(&orgs)?;
            }
            return Ok(false);
        }
        keys.push(TrustedKey {
            fingerprint: id,
            public_key: key,
            how,
            since: Timestamp::now(),
            revoked: None,
        });
        self.save(&orgs)?;
        Ok(true)
    }

    /// The organization revoked `key`: it is never trusted again (a fingerprint pinned later
    /// does not undo this; the store must be edited by hand). Returns whether this is news.
    pub fn revoke(&self, org: OrgId, key: KeyId) -> Result<bool, TrustError> {
        let mut orgs = self.orgs.lock().expect("not poisoned");
        let keys = orgs.entry(org).or_default();
        match keys.iter_mut().find(|k| k.fingerprint == key) {
            Some(known) if known.revoked.is_some() => return Ok(false),
            Some(known) => known.revoked = Some(Timestamp::now()),
            // Never trusted here: recorded first, so that it is refused if offered later.
            None => keys.insert(
                0,
                TrustedKey {
                    fingerprint: key,
                    public_key: None,
                    how: How::Revoked,
                    since: Timestamp::now(),
                    revoked: Some(Timestamp::now()),
                },
            ),
        }
        self.save(&orgs)?;
        Ok(true)
    }

    /// Fills in the key of a fingerprint trusted for `org` (the fingerprint binds the key, so
    /// any source will do). Returns whether it was missing.
    pub fn learn(&self, org: OrgId, key: &PublicKey) -> Result<bool, TrustError> {
        let mut orgs = self.orgs.lock().expect("not poisoned");
        let Some(known) =
            orgs.get_mut(&org).and_then(|keys| keys.iter_mut().find(|k| k.fingerprint == key.id()))
        else {
            return Ok(false);
        };
        if known.public_key.is_some() {
            return Ok(false);
        }
        known.public_key = Some(key.clone());
        self.save(&orgs)?;
        Ok(true)
    }

    /// The key `key` of `org` if this party trusts it, current or replaced, and it is not
    /// revoked: what checks a statement the organization signed with it.
    pub fn any_key(&self, org: OrgId, key: &KeyId) -> Option<PublicKey> {
        let orgs = self.orgs.lock().expect("not poisoned");
        let keys = orgs.get(&org)?;
        keys.iter()
            .find(|k| &k.fingerprint == key && k.how != How::Revoked && k.revoked.is_none())?
            .public_key
            .clone()
    }

    /// The current trusted fingerprint of `org`, if any.
    pub fn current_fingerprint(&self, org: OrgId) -> Option<KeyId> {
        let orgs = self.orgs.lock().expect("not poisoned");
        let last = newest_trusted(orgs.get(&org)?)?;
        last.revoked.is_none().then_some(last.fingerprint)
    }

    /// Whether deciding on `offered` for `org` needs the organization's rotations: a key is
    /// trusted for it and `offered` is another one.
    pub fn needs_rotations(&self, org: OrgId, offered: &PublicKey) -> bool {
        let orgs = self.orgs.lock().expect("not poisoned");
        orgs.get(&org).is_some_and(|keys| {
            keys.iter().any(|k| k.how != How::Revoked) && !keys.iter().any(|k| k.fingerprint == offered.id())
        })
    }

    /// Decides whether `offered`, the key the server gives for `org` now, is trusted: it is a
    /// trusted key (or the fingerprint of one), a first key trusted on first use, or the end of
    /// a chain of `rotations` from the current trusted key, each signed by the key before it.
    /// Accepted keys are recorded. A first use or a rotation must have been proven in the
    /// transparency log first: [`KeyTrust::check`] says whether it is one.
    pub fn accept(
        &self,
        org: OrgId,
        offered: &PublicKey,
        rotations: &[Rotation],
    ) -> Result<Accepted, TrustError> {
        self.decide(org, offered, rotations, true)
    }

    /// What [`KeyTrust::accept`] would answer, recording nothing.
    pub fn check(
        &self,
        org: OrgId,
        offered: &PublicKey,
        rotations: &[Rotation],
    ) -> Result<Accepted, TrustError> {
        self.decide(org, offered, rotations, false)
    }

    fn decide(
        &self,
        org: OrgId,
        offered: &PublicKey,
        rotations: &[Rotation],
        record: bool,
    ) -> Result<Accepted, TrustError> {
        let mut orgs = self.orgs.lock().expect("not poisoned");
        let keys = orgs.entry(org).or_default();
        if let Some(known) = keys.iter_mut().find(|k| k.fingerprint == offered.id()) {
            if known.revoked.is_some() {
                return Err(TrustError::Revoked { org, key: offered.id() });
            }
            if known.public_key.is_some() {
                return Ok(Accepted::Known);
            }
            if record {
                known.public_key = Some(offered.clone());
                self.save(&orgs)?;
            }
            return Ok(Accepted::Fingerprint);
        }
        // Keys known only as revoked were never trusted: they are no key to rotate from.
        let Some(current) = newest_trusted(keys).cloned() else {
            if self.first_use == FirstUse::Refuse {
                return Err(TrustError::Unknown { org, offered: offered.id() });
            }
            if !record {
                return Ok(Accepted::FirstUse);
            }
            keys.push(TrustedKey {
                fingerprint: offered.id(),
                public_key: Some(offered.clone()),
                how: How::FirstUse,
                since: Timestamp::now(),
                revoked: None,
            });
            self.save(&orgs)?;
            return Ok(Accepted::FirstUse);
        };
        if current.revoked.is_some() {
            // No rotation is followed from a revoked key: whoever stole it could sign one.
            return Err(TrustError::Revoked { org, key: current.fingerprint });
        }
        let changed = || TrustError::Changed { org, trusted: current.fingerprint, offered: offered.id() };
        // Follow the chain from the current key, each step verified by the key before it.
        let mut at = current.public_key.clone().ok_or_else(changed)?;
        let mut chain = Vec::new();
        while at.id() != offered.id() {
            if chain.len() >= MAX_CHAIN {
                return Err(changed());
            }
            let step = rotations
                .iter()
                .find(|r| r.org == org && r.old == at.id() && r.verify(&at))
                .ok_or_else(changed)?;
            chain.push(step.new.clone());
            at = step.new.clone();
        }
        if !record {
            return Ok(Accepted::Rotated { from: current.fingerprint });
        }
        let now = Timestamp::now();
        for key in chain {
            keys.push(TrustedKey {
                fingerprint: key.id(),
                public_key: Some(key),
                how: How::Rotation,
                since: now,
                revoked: None,
            });
        }
        self.save(&orgs)?;
        Ok(Accepted::Rotated { from: current.fingerprint })
    }

    /// The current trusted key of `org`, once its key is known: what is sealed to.
    pub fn current(&self, org: OrgId) -> Option<PublicKey> {
        let orgs = self.orgs.lock().expect("not poisoned");
        let last = newest_trusted(orgs.get(&org)?)?;
        if last.revoked.is_some() { None } else { last.public_key.clone() }
    }

    /// Every organization with its trusted keys, oldest first.
    pub fn list(&self) -> Vec<(OrgId, Vec<TrustedKey>)> {
        self.orgs.lock().expect("not poisoned").iter().map(|(o, k)| (*o, k.clone())).collect()
    }
}

/// The newest key that was ever trusted (revoked since, perhaps), skipping keys known only as
/// revoked: what is current, and what a rotation starts from.
fn newest_trusted(keys: &[TrustedKey]) -> Option<&TrustedKey> {
    keys.iter().rev().find(|k| k.how != How::Revoked)
}

impl SenderKeys for KeyTrust {
    fn sender_key(&self, org: OrgId, key: &KeyId) -> Option<PublicKey> {
        self.verifying_key_at(org, key, Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_verifies_only_with_its_signer_and_for_its_key() {
        let (org, key, other) = (OrgId::new(), OrgKey::generate(), OrgKey::generate());
        let by_itself = Revocation::sign(org, key.id(), &key);
        assert!(by_itself.verify(key.public()));
        assert!(!by_itself.verify(other.public()), "another key did not sign it");
        let by_other = Revocation::sign(org, key.id(), &other);
        assert!(by_other.verify(other.public()));
        let moved = Revocation { key: other.id(), ..by_other.clone() };
        assert!(!moved.verify(other.public()), "the signature names the key revoked");
        let elsewhere = Revocation { org: OrgId::new(), ..by_other };
        assert!(!elsewhere.verify(other.public()), "and the organization");
    }

    #[test]
    fn check_says_what_accept_would_and_records_nothing() {
        let (org, old, new) = (OrgId::new(), OrgKey::generate(), OrgKey::generate());
        let trust = KeyTrust::in_memory(FirstUse::Accept);
        assert_eq!(trust.check(org, old.public(), &[]).unwrap(), Accepted::FirstUse);
        assert!(trust.current(org).is_none(), "a check trusts nothing");
        trust.accept(org, old.public(), &[]).unwrap();
        let rotation = Rotation::sign(org, &old, new.public());
        let from = old.id();
        assert_eq!(trust.check(org, new.public(), &[rotation]).unwrap(), Accepted::Rotated { from });
        assert_eq!(trust.current(org).unwrap().id(), old.id(), "nor does it follow a rotation");
        assert!(matches!(trust.check(org, new.public(), &[]), Err(TrustError::Changed { .. })));
    }

    #[test]
    fn the_log_anchor_survives_a_reopen_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trusted-keys.json");
        let trust = KeyTrust::open(&path, FirstUse::Refuse).unwrap();
        assert!(trust.log_anchor().is_none());
        let anchor = LogAnchor { key: [7; 32], size: 10, root: [1; 32] };
        trust.record_log(anchor).unwrap();
        trust.record_log(LogAnchor { size: 4, ..anchor }).unwrap();
        let again = KeyTrust::open(&path, FirstUse::Refuse).unwrap();
        assert_eq!(again.log_anchor(), Some(anchor), "an older head is not kept");
        again.pin_log_key([7; 32]).unwrap();
        assert_eq!(again.log_anchor(), Some(anchor), "pinning the same key keeps the head");
        again.pin_log_key([8; 32]).unwrap();
        assert_eq!(again.log_anchor(), Some(LogAnchor { key: [8; 32], size: 0, root: [0; 32] }));
    }

    #[test]
    fn a_first_key_needs_a_fingerprint_unless_first_use_is_accepted() {
        let (org, key) = (OrgId::new(), OrgKey::generate());
        let strict = KeyTrust::in_memory(FirstUse::Refuse);
        let err = strict.accept(org, key.public(), &[]).unwrap_err();
        assert!(matches!(err, TrustError::Unknown { offered, .. } if offered == key.id()));
        assert!(err.to_string().contains(&key.id().to_string()), "{err}");
        assert!(strict.current(org).is_none());
        strict.trust(org, key.id()).unwrap();
        assert!(strict.current(org).is_none(), "a fingerprint alone gives no key to seal to");
        assert_eq!(strict.accept(org, key.public(), &[]).unwrap(), Accepted::Fingerprint);
        assert_eq!(strict.accept(org, key.public(), &[]).unwrap(), Accepted::Known);
        assert_eq!(strict.current(org).unwrap().id(), key.id());

        let tofu = KeyTrust::in_memory(FirstUse::Accept);
        assert_eq!(tofu.accept(org, key.public(), &[]).unwrap(), Accepted::FirstUse);
        assert_eq!(tofu.current(org).unwrap().id(), key.id());
    }

    #[test]
    fn a_revoked_key_verifies_nothing_is_sealed_to_never_and_starts_no_rotation() {
        let (org, k1, k2, thief) = (OrgId::new(), OrgKey::generate(), OrgKey::generate(), OrgKey::generate());
        let trust = KeyTrust::in_memory(FirstUse::Accept);
        trust.accept(org, k1.public(), &[]).unwrap();
        assert!(trust.revoke(org, k1.id()).unwrap());
        assert!(!trust.revoke(org, k1.id()).unwrap(), "once");
        assert!(trust.current(org).is_none() && trust.current_fingerprint(org).is_none());
        assert!(trust.sender_key(org, &k1.id()).is_none());
        // Whoever stole k1 can sign a rotation to a key of its own: not followed.
        let stolen = Rotation::sign(org, &k1, thief.public());
        assert!(matches!(trust.accept(org, thief.public(), &[stolen]), Err(TrustError::Revoked { .. })));
        assert!(matches!(trust.accept(org, k1.public(), &[]), Err(TrustError::Revoked { .. })));
        // Pinning it again does not undo the revocation; the new key is trusted by fingerprint.
        assert!(!trust.trust(org, k1.id()).unwrap());
        assert!(trust.sender_key(org, &k1.id()).is_none());
        trust.trust(org, k2.id()).unwrap();
        assert_eq!(trust.accept(org, k2.public(), &[]).unwrap(), Accepted::Fingerprint);
        assert_eq!(trust.current(org).unwrap().id(), k2.id());

        // A key revoked before any was trusted is refused when offered, and does not stand in
        // the way of the organization's first key.
        let (other, revoked, first) = (OrgId::new(), OrgKey::generate(), OrgKey::generate());
        trust.revoke(other, revoked.id()).unwrap();
        assert!(matches!(trust.accept(other, revoked.public(), &[]), Err(TrustError::Revoked { .. })));
        assert_eq!(trust.accept(other, first.public(), &[]).unwrap(), Accepted::FirstUse);
    }

    #[test]
    fn a_replaced_key_verifies_for_the_grace_period_only() {
        let (org, k1, k2) = (OrgId::new(), OrgKey::generate(), OrgKey::generate());
        let trust =
            KeyTrust::in_memory(FirstUse::Accept).with_retired_grace(std::time::Duration::from_secs(3600));
        trust.accept(org, k1.public(), &[]).unwrap();
        let far = Timestamp::now().saturating_add(std::time::Duration::from_secs(30 * 24 * 3600));
        assert!(trust.verifying_key_at(org, &k1.id(), far).is_some(), "a current key does not age");
        trust.accept(org, k2.public(), &[Rotation::sign(org, &k1, k2.public())]).unwrap();
        let soon = Timestamp::now().saturating_add(std::time::Duration::from_secs(600));
        let later = Timestamp::now().saturating_add(std::time::Duration::from_secs(3601));
        assert!(trust.verifying_key_at(org, &k1.id(), soon).is_some(), "in flight during the rotation");
        assert!(trust.verifying_key_at(org, &k1.id(), later).is_none(), "then no more");
        assert!(trust.verifying_key_at(org, &k2.id(), later).is_some());
    }

    #[test]
    fn a_swapped_key_is_refused_naming_both_fingerprints() {
        let (org, genuine, swapped) = (OrgId::new(), OrgKey::generate(), OrgKey::generate());
        let trust = KeyTrust::in_memory(FirstUse::Accept);
        trust.accept(org, genuine.public(), &[]).unwrap();
        assert!(trust.needs_rotations(org, swapped.public()));
        // A rotation signed by the swapped key itself, or for another organization, proves nothing.
        let forged = Rotation::sign(org, &swapped, swapped.public());
        let elsewhere = Rotation::sign(OrgId::new(), &genuine, swapped.public());
        let err = trust.accept(org, swapped.public(), &[forged, elsewhere]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&genuine.id().to_string()) && text.contains(&swapped.id().to_string()),
            "{text}"
        );
        assert_eq!(trust.current(org).unwrap().id(), genuine.id());
        assert!(trust.sender_key(org, &swapped.id()).is_none());
    }

    #[test]
    fn signed_rotations_are_followed_and_old_keys_still_verify() {
        let (org, k1, k2, k3) = (OrgId::new(), OrgKey::generate(), OrgKey::generate(), OrgKey::generate());
        let trust = KeyTrust::in_memory(FirstUse::Refuse);
        trust.trust(org, k1.id()).unwrap();
        trust.accept(org, k1.public(), &[]).unwrap();
        let chain = [Rotation::sign(org, &k2, k3.public()), Rotation::sign(org, &k1, k2.public())];
        assert_eq!(trust.accept(org, k3.public(), &chain).unwrap(), Accepted::Rotated { from: k1.id() });
        assert_eq!(trust.current(org).unwrap().id(), k3.id());
        assert!(trust.sender_key(org, &k1.id()).is_some() && trust.sender_key(org, &k2.id()).is_some());
        // A chain from a fingerprint whose key was never shown needs the key first.
        let pinned_only = KeyTrust::in_memory(FirstUse::Refuse);
        pinned_only.trust(org, k1.id()).unwrap();
        assert!(pinned_only.accept(org, k3.public(), &chain).is_err());
        assert!(!pinned_only.learn(org, k2.public()).unwrap(), "an untrusted key is not learned");
        assert!(pinned_only.learn(org, k1.public()).unwrap());
        assert_eq!(
            pinned_only.accept(org, k3.public(), &chain).unwrap(),
            Accepted::Rotated { from: k1.id() }
        );
        // A tampered signature breaks the chain.
        let mut bad = Rotation::sign(org, &k3, OrgKey::generate().public());
        bad.signature[5] ^= 1;
        assert!(!bad.verify(k3.public()));
    }

    proptest::proptest! {
        /// A rotation statement comes from the server: no signature but the organization's own
        /// verifies, whatever its bytes.
        #[test]
        fn forged_rotation_signatures_never_verify(signature in proptest::array::uniform32(0u8..), tail in proptest::array::uniform32(0u8..)) {
            let (org, old, new) = (OrgId::new(), OrgKey::generate(), OrgKey::generate());
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&signature);
            bytes[32..].copy_from_slice(&tail);
            let forged = Rotation { org, old: old.id(), new: new.public().clone(), signature: bytes };
            proptest::prop_assert!(!forged.verify(old.public()));
        }
    }

    #[test]
    fn the_store_persists_and_pins_read_again_do_not_undo_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trusted-keys.json");
        let (org, k1, k2) = (OrgId::new(), OrgKey::generate(), OrgKey::generate());
        {
            let trust = KeyTrust::open(&path, FirstUse::Refuse).unwrap();
            trust.trust(org, k1.id()).unwrap();
            trust.accept(org, k1.public(), &[]).unwrap();
            trust.accept(org, k2.public(), &[Rotation::sign(org, &k1, k2.public())]).unwrap();
        }
        let trust = KeyTrust::open(&path, FirstUse::Refuse).unwrap();
        assert!(!trust.trust(org, k1.id()).unwrap(), "the pin is known");
        assert_eq!(trust.current(org).unwrap().id(), k2.id());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(KeyTrust::open(&path, FirstUse::Refuse), Err(TrustError::Damaged { .. })));
    }
}
