//! Reading the server's transparency log as a party that trusts nothing it says: every head's
//! signature is checked against the pinned log key, and the entries read are replayed into the
//! reader's own [`Frontier`], which must give the signed root. The node's monitor and
//! `fedq audit` both read the log through this.

use ed25519_dalek::VerifyingKey;
use fedq_transparency::{Alarm, Frontier, Hash, SignedTreeHead, leaf_hash, wire};

use crate::contract::{ConsistencyProofBody, InclusionProofBody, LogEntry, LogKey, TreeHeadBody};
use crate::{Client, ClientError, decode};

/// Entries asked for per request (the server answers at most 1,000).
const PAGE: u64 = 1000;

/// Why the log could not be read, or what it was caught doing.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The server did not answer as asked.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An answer that is not a well-formed log value.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// The log misbehaved; the alarm holds the evidence.
    #[error(transparent)]
    Alarm(#[from] Alarm),
}

impl Client {
    /// The key the server says signs its log (to pin on first use, or to compare with the pin).
    pub async fn log_key(&self) -> Result<VerifyingKey, AuditError> {
        let body: LogKey = decode(self.get("/transparency/key").await?)?;
        let bytes = hex::decode(&body.public_key).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        let key = bytes.and_then(|b| VerifyingKey::from_bytes(&b).ok());
        Ok(key.ok_or(wire::WireError::new("the log key is not 32 bytes of an Ed25519 key"))?)
    }

    /// The newest signed head (or the one of `size`), its signature checked with `key`.
    pub async fn log_head(
        &self,
        key: &VerifyingKey,
        size: Option<u64>,
    ) -> Result<SignedTreeHead, AuditError> {
        let path = match size {
            Some(size) => format!("/transparency/tree-head?size={size}"),
            None => "/transparency/tree-head".to_owned(),
        };
        let body: TreeHeadBody = decode(self.get(&path).await?)?;
        let head = SignedTreeHead::try_from(&body)?;
        head.verify(key).map_err(|_| Alarm::BadSignature { size: head.head.size })?;
        Ok(head)
    }

    /// The consistency proof from the tree of `from` leaves to the tree of `to`.
    pub async fn log_consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, AuditError> {
        let body: ConsistencyProofBody =
            decode(self.get(&format!("/transparency/proof/consistency?from={from}&to={to}")).await?)?;
        Ok(wire::consistency_path(&body)?)
    }

    /// The inclusion proof of the leaf with hash `leaf` in the tree of `size`: its index and path.
    /// `None` when the server says it has no such leaf.
    pub async fn log_inclusion(
        &self,
        leaf: &Hash,
        size: u64,
    ) -> Result<Option<(u64, Vec<Hash>)>, AuditError> {
        let path = format!("/transparency/proof/inclusion?leaf_hash={}&size={size}", hex::encode(leaf));
        match self.get(&path).await {
            Ok(answer) => {
                let body: InclusionProofBody = decode(answer)?;
                Ok(Some((body.leaf_index, wire::inclusion_path(&body)?)))
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the leaves from `checked.size()` up to `head`'s size, hands each to `visit` with its
    /// index, and returns the frontier grown by them, once it gives `head`'s signed root. The
    /// caller keeps `checked` until this succeeds, so a failure leaves it as it was.
    pub async fn log_replay(
        &self,
        checked: &Frontier,
        head: &SignedTreeHead,
        mut visit: impl FnMut(u64, &[u8]),
    ) -> Result<Frontier, AuditError> {
        let size = head.head.size;
        if size < checked.size() {
            return Err(Alarm::Shrunk { old: checked.size(), new: size }.into());
        }
        let mut frontier = checked.clone();
        while frontier.size() < size {
            let start = frontier.size();
            let end = size.min(start + PAGE);
            let page: Vec<LogEntry> =
                decode(self.get(&format!("/transparency/entries?start={start}&end={end}")).await?)?;
            if page.is_empty() {
                // Fewer leaves than the head it signed.
                return Err(Alarm::EntriesMismatch { size }.into());
            }
            for entry in page {
                if entry.index != frontier.size() || entry.index >= size {
                    return Err(Alarm::EntriesMismatch { size }.into());
                }
                match (&entry.leaf, &entry.leaf_hash) {
                    (Some(leaf), _) => {
                        let leaf =
                            hex::decode(leaf).map_err(|_| wire::WireError::new("a leaf is not hex"))?;
                        frontier.push_hash(leaf_hash(&leaf));
                        visit(entry.index, &leaf);
                    }
                    // Another collaboration's envelope, shown by its hash: it counts for the
                    // root, and the root check below still binds it.
                    (None, Some(hash)) => frontier.push_hash(wire::hash_from_hex(hash)?),
                    (None, None) => {
                        return Err(wire::WireError::new("an entry has neither leaf nor hash").into());
                    }
                }
            }
        }
        if frontier.root() != head.head.root {
            return Err(Alarm::EntriesMismatch { size }.into());
        }
        Ok(frontier)
    }
}
