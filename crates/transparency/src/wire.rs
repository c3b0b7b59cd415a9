//! The log's values as the REST contract carries them (hashes and signatures in hex), and back.

use fedq_core::contract::{ConsistencyProofBody, InclusionProofBody, TreeHeadBody};
use fedq_core::protocol::SeenHead;
use serde_bytes::ByteBuf;

use crate::tree::Hash;
use crate::tree_head::{SignedTreeHead, TreeHead};

/// Why a body from the server is not a well-formed log value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the log's answer is malformed: {0}")]
pub struct WireError(&'static str);

impl WireError {
    /// A malformed answer, saying what is wrong.
    pub const fn new(what: &'static str) -> Self {
        Self(what)
    }
}

/// 32 bytes from hex.
pub fn hash_from_hex(text: &str) -> Result<Hash, WireError> {
    let bytes = hex::decode(text).map_err(|_| WireError("a hash is not hex"))?;
    Hash::try_from(bytes.as_slice()).map_err(|_| WireError("a hash is not 32 bytes"))
}

/// Hashes from hex.
pub fn path_from_hex(path: &[String]) -> Result<Vec<Hash>, WireError> {
    path.iter().map(|h| hash_from_hex(h)).collect()
}

/// Hashes to hex.
pub fn path_to_hex(path: &[Hash]) -> Vec<String> {
    path.iter().map(hex::encode).collect()
}

impl From<&SignedTreeHead> for TreeHeadBody {
    fn from(h: &SignedTreeHead) -> Self {
        Self {
            size: h.head.size,
            root: hex::encode(h.head.root),
            timestamp_ms: h.head.timestamp_ms,
            signature: hex::encode(h.signature),
        }
    }
}

impl TryFrom<&TreeHeadBody> for SignedTreeHead {
    type Error = WireError;

    fn try_from(b: &TreeHeadBody) -> Result<Self, WireError> {
        let signature = hex::decode(&b.signature).map_err(|_| WireError("the signature is not hex"))?;
        Ok(Self {
            head: TreeHead { size: b.size, root: hash_from_hex(&b.root)?, timestamp_ms: b.timestamp_ms },
            signature: signature.try_into().map_err(|_| WireError("the signature is not 64 bytes"))?,
        })
    }
}

impl From<&SignedTreeHead> for SeenHead {
    fn from(h: &SignedTreeHead) -> Self {
        Self {
            size: h.head.size,
            root: ByteBuf::from(h.head.root.to_vec()),
            timestamp_ms: h.head.timestamp_ms,
            signature: ByteBuf::from(h.signature.to_vec()),
        }
    }
}

impl TryFrom<&SeenHead> for SignedTreeHead {
    type Error = WireError;

    fn try_from(s: &SeenHead) -> Result<Self, WireError> {
        Ok(Self {
            head: TreeHead {
                size: s.size,
                root: s.root.as_slice().try_into().map_err(|_| WireError("a root is not 32 bytes"))?,
                timestamp_ms: s.timestamp_ms,
            },
            signature: s
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| WireError("the signature is not 64 bytes"))?,
        })
    }
}

/// An inclusion proof's path, checked for form.
pub fn inclusion_path(b: &InclusionProofBody) -> Result<Vec<Hash>, WireError> {
    path_from_hex(&b.path)
}

/// A consistency proof's path, checked for form.
pub fn consistency_path(b: &ConsistencyProofBody) -> Result<Vec<Hash>, WireError> {
    path_from_hex(&b.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_head_survives_the_wire_and_bad_bodies_are_typed_errors() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let head = TreeHead { size: 3, root: [9; 32], timestamp_ms: 1_700_000_000_000 }.sign(&key);
        let body = TreeHeadBody::from(&head);
        assert_eq!(SignedTreeHead::try_from(&body).unwrap(), head);
        let short = TreeHeadBody { root: "abcd".into(), ..body.clone() };
        assert_eq!(SignedTreeHead::try_from(&short).unwrap_err(), WireError("a hash is not 32 bytes"));
        let bad = TreeHeadBody { signature: "zz".into(), ..body };
        assert_eq!(SignedTreeHead::try_from(&bad).unwrap_err(), WireError("the signature is not hex"));
    }
}
