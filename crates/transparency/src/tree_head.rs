//! The signed tree head: the log's statement "my tree of `size` leaves has this head, as of
//! `timestamp`", signed with the log's Ed25519 key. Two signed heads that no consistency proof
//! joins are the evidence of a log that showed different histories.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::tree::Hash;

/// The signed message starts with this label, so that a tree-head signature can never be taken
/// for a signature of anything else the key might sign.
const LABEL: &[u8] = b"fedq transparency log tree head v1\0";

/// A tree head: the size and root of the log's tree at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeHead {
    /// Leaves in the tree.
    pub size: u64,
    /// Its Merkle tree head (RFC 9162's MTH).
    pub root: Hash,
    /// When the log computed it, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

/// A tree head with the log's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedTreeHead {
    /// What is signed.
    pub head: TreeHead,
    /// Ed25519 over [`TreeHead::message`].
    pub signature: [u8; 64],
}

/// Why a signed tree head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeHeadError {
    /// The signature is not the log key's over this head.
    #[error("the tree head of size {size} is not signed by the log's key")]
    BadSignature {
        /// The size it claims.
        size: u64,
    },
}

impl TreeHead {
    /// The bytes signed: the label, then size, root and timestamp (big-endian integers).
    pub fn message(&self) -> Vec<u8> {
        let mut message = Vec::with_capacity(LABEL.len() + 48);
        message.extend_from_slice(LABEL);
        message.extend_from_slice(&self.size.to_be_bytes());
        message.extend_from_slice(&self.root);
        message.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        message
    }

    /// Signs the head with the log's key.
    pub fn sign(self, key: &SigningKey) -> SignedTreeHead {
        SignedTreeHead { head: self, signature: key.sign(&self.message()).to_bytes() }
    }
}

impl SignedTreeHead {
    /// Checks the signature against the log's public key (strictly: no malleable signatures).
    pub fn verify(&self, log_key: &VerifyingKey) -> Result<&TreeHead, TreeHeadError> {
        let signature = Signature::from_bytes(&self.signature);
        log_key
            .verify_strict(&self.head.message(), &signature)
            .map(|()| &self.head)
            .map_err(|_| TreeHeadError::BadSignature { size: self.head.size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signed_head_verifies_with_the_log_key_only_and_unchanged() {
        let head = TreeHead { size: 42, root: [7; 32], timestamp_ms: 1_700_000_000_000 };
        let signed = head.sign(&key(1));
        assert_eq!(signed.verify(&key(1).verifying_key()), Ok(&head));
        assert_eq!(signed.verify(&key(2).verifying_key()), Err(TreeHeadError::BadSignature { size: 42 }));
        for changed in [
            TreeHead { size: 43, ..head },
            TreeHead { root: [8; 32], ..head },
            TreeHead { timestamp_ms: head.timestamp_ms + 1, ..head },
        ] {
            let forged = SignedTreeHead { head: changed, signature: signed.signature };
            assert!(forged.verify(&key(1).verifying_key()).is_err(), "{changed:?}");
        }
    }
}
