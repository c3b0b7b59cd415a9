//! What a monitor concludes from what the log shows it, as pure functions: each organization's
//! node keeps the last tree head it accepted (persisted by the caller) and accepts a new one only
//! if the log's key signed it and a consistency proof joins the two; a head a partner saw is
//! checked against this party's the same way, in whichever direction is older, so that a log
//! showing two organizations different histories is caught by either. Every refusal is an
//! [`Alarm`] with the evidence in it.

use ed25519_dalek::VerifyingKey;

use crate::proof::{ProofError, verify_consistency};
use crate::tree::Hash;
use crate::tree_head::{SignedTreeHead, TreeHead};

/// Evidence that the log misbehaved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Alarm {
    /// A tree head not signed by the log's key.
    #[error("a tree head of size {size} is not signed by the log's key")]
    BadSignature {
        /// The size it claims.
        size: u64,
    },
    /// The log shrank: it showed `old` leaves before and `new` < `old` now.
    #[error("the log shrank from {old} to {new} leaves: it removed history it had shown")]
    Shrunk {
        /// The size accepted before.
        old: u64,
        /// The size shown now.
        new: u64,
    },
    /// No consistency proof joins the two heads: history was rewritten, or two parties were
    /// shown different histories.
    #[error(
        "the log's tree of {old} leaves is not a prefix of its tree of {new} leaves ({why}): history was rewritten or shown differently to different parties"
    )]
    Inconsistent {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
        /// Which check failed.
        why: ProofError,
        /// The two heads, as evidence.
        heads: Box<(TreeHead, TreeHead)>,
    },
    /// The leaves the log served, appended to the ones already checked, do not give the root it
    /// signed: it served forged entries, or history before them changed.
    #[error(
        "the log's entries up to {size} do not give the root it signed for that size: entries were forged or history before them was rewritten"
    )]
    EntriesMismatch {
        /// The size of the signed head.
        size: u64,
    },
    /// The log signs with another key than the one pinned.
    #[error(
        "the log's key is now {now}, not the pinned {pinned}: a new key makes every head it signs unverifiable"
    )]
    KeyChanged {
        /// The pinned key, hex.
        pinned: String,
        /// The key the server shows now, hex.
        now: String,
    },
}

impl Alarm {
    /// A stable code for logs, metrics and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Alarm::BadSignature { .. } => "bad_signature",
            Alarm::Shrunk { .. } => "shrunk",
            Alarm::Inconsistent { .. } => "inconsistent",
            Alarm::EntriesMismatch { .. } => "entries_mismatch",
            Alarm::KeyChanged { .. } => "log_key_changed",
        }
    }
}

/// The result of accepting a new head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The first head this monitor accepts.
    First,
    /// The same tree as before.
    Unchanged,
    /// The log grew from `from` leaves.
    Grew {
        /// The previous size.
        from: u64,
    },
}

/// A monitor's state: the log's key and the last head it accepted.
#[derive(Debug, Clone)]
pub struct Monitor {
    log_key: VerifyingKey,
    last: Option<TreeHead>,
}

impl Monitor {
    /// A monitor that trusts `log_key` and accepted `last` before (none the first time).
    pub fn new(log_key: VerifyingKey, last: Option<TreeHead>) -> Self {
        Self { log_key, last }
    }

    /// The last head accepted: persist it before acting on anything the new head proves.
    pub fn last(&self) -> Option<&TreeHead> {
        self.last.as_ref()
    }

    /// Accepts `head` if it is signed and `proof` shows the last accepted tree is its prefix.
    pub fn accept(&mut self, head: &SignedTreeHead, proof: &[Hash]) -> Result<Accepted, Alarm> {
        let new = *head.verify(&self.log_key).map_err(|_| Alarm::BadSignature { size: head.head.size })?;
        let Some(old) = self.last else {
            self.last = Some(new);
            return Ok(Accepted::First);
        };
        if new.size < old.size {
            return Err(Alarm::Shrunk { old: old.size, new: new.size });
        }
        joined(&old, &new, proof)?;
        // A later timestamp for the same tree is kept: it says the log still vouches for it.
        self.last = Some(new);
        Ok(if new.size == old.size { Accepted::Unchanged } else { Accepted::Grew { from: old.size } })
    }

    /// Checks a head a partner saw (carried in what it sent) against this monitor's last one:
    /// `proof` joins the older of the two to the newer. Does not change what this monitor
    /// accepted.
    pub fn compare(&self, theirs: &SignedTreeHead, proof: &[Hash]) -> Result<(), Alarm> {
        let theirs =
            *theirs.verify(&self.log_key).map_err(|_| Alarm::BadSignature { size: theirs.head.size })?;
        let Some(ours) = self.last else { return Ok(()) };
        if theirs.size <= ours.size { joined(&theirs, &ours, proof) } else { joined(&ours, &theirs, proof) }
    }
}

/// Whether `proof` shows the tree of `old` is a prefix of the tree of `new`.
fn joined(old: &TreeHead, new: &TreeHead, proof: &[Hash]) -> Result<(), Alarm> {
    verify_consistency(old.size, new.size, proof, &old.root, &new.root).map_err(|why| Alarm::Inconsistent {
        old: old.size,
        new: new.size,
        why,
        heads: Box::new((*old, *new)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MerkleTree;
    use ed25519_dalek::SigningKey;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn log(leaves: &[u64]) -> MerkleTree {
        let mut tree = MerkleTree::new();
        for leaf in leaves {
            tree.push(&leaf.to_le_bytes());
        }
        tree
    }

    fn head(tree: &MerkleTree, size: u64, at: u64) -> SignedTreeHead {
        TreeHead { size, root: tree.root_at(size).unwrap(), timestamp_ms: at }.sign(&key())
    }

    #[test]
    fn an_honest_log_is_followed_without_alarm() {
        let tree = log(&(0..50).collect::<Vec<_>>());
        let mut monitor = Monitor::new(key().verifying_key(), None);
        assert_eq!(monitor.accept(&head(&tree, 10, 1), &[]), Ok(Accepted::First));
        let proof = tree.consistency_proof(10, 30).unwrap();
        assert_eq!(monitor.accept(&head(&tree, 30, 2), &proof), Ok(Accepted::Grew { from: 10 }));
        assert_eq!(monitor.accept(&head(&tree, 30, 3), &[]), Ok(Accepted::Unchanged));
        assert_eq!(monitor.last().unwrap().size, 30);
        // A partner that saw an older or a newer head of the same log: no alarm.
        assert_eq!(monitor.compare(&head(&tree, 20, 2), &tree.consistency_proof(20, 30).unwrap()), Ok(()));
        assert_eq!(monitor.compare(&head(&tree, 50, 4), &tree.consistency_proof(30, 50).unwrap()), Ok(()));
    }

    #[test]
    fn a_rewritten_history_a_shrunk_log_and_a_forged_head_raise_alarms() {
        let honest = log(&(0..40).collect::<Vec<_>>());
        let mut monitor = Monitor::new(key().verifying_key(), None);
        monitor.accept(&head(&honest, 20, 1), &[]).unwrap();

        let mut leaves: Vec<u64> = (0..40).collect();
        leaves[5] = 999;
        let rewritten = log(&leaves);
        let proof = rewritten.consistency_proof(20, 40).unwrap();
        let alarm = monitor.accept(&head(&rewritten, 40, 2), &proof).unwrap_err();
        assert!(
            matches!(alarm, Alarm::Inconsistent { old: 20, new: 40, why: ProofError::Mismatch, .. }),
            "{alarm}"
        );
        assert_eq!(monitor.last().unwrap().size, 20, "nothing accepted on an alarm");

        assert_eq!(monitor.accept(&head(&honest, 15, 3), &[]), Err(Alarm::Shrunk { old: 20, new: 15 }));
        let forged = TreeHead { size: 40, root: honest.root(), timestamp_ms: 4 }
            .sign(&SigningKey::from_bytes(&[9; 32]));
        assert_eq!(
            monitor.accept(&forged, &honest.consistency_proof(20, 40).unwrap()),
            Err(Alarm::BadSignature { size: 40 })
        );
    }

    #[test]
    fn two_parties_shown_different_histories_notice_from_each_others_head() {
        // The log shows A one history and B another, each consistent on its own.
        let for_a = log(&(0..30).collect::<Vec<_>>());
        let mut other: Vec<u64> = (0..30).collect();
        other[2] = 7777;
        let for_b = log(&other);
        let mut a = Monitor::new(key().verifying_key(), None);
        a.accept(&head(&for_a, 30, 1), &[]).unwrap();
        // B's head travels with what B sent to A; whatever proof the log offers, A cannot join them.
        let b_head = head(&for_b, 25, 1);
        let offered = for_b.consistency_proof(25, 30).unwrap();
        assert!(matches!(a.compare(&b_head, &offered), Err(Alarm::Inconsistent { old: 25, new: 30, .. })));
        let offered = for_a.consistency_proof(25, 30).unwrap();
        assert!(matches!(a.compare(&b_head, &offered), Err(Alarm::Inconsistent { .. })));
    }
}
