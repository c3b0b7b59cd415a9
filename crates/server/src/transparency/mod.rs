//! The transparency log as the server keeps it (docs/protocol.md, "The transparency log").
//!
//! Leaves are queued by the transactions that route envelopes and change trust
//! (`db::transparency::queue`). The sequencer, on one replica at a time, gives them their dense
//! place, signs the new tree head and stores both in one transaction. Every replica keeps the
//! tree's hashes in memory ([`Log`]), catching up from the database before it answers for a size
//! it has not seen, so proofs are served from memory by any replica.

mod key;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use fedq_transparency::{Hash, MerkleTree, SignedTreeHead, TreeHead, leaf_hash};
use tokio::sync::{Mutex, MutexGuard, watch};

use crate::db::{DbError, transparency as table};
use crate::keys::KeyFileError;
use crate::time::Timestamp;

/// Leaves sequenced per transaction at most, so that one step never holds its locks for long.
const BATCH: u32 = 10_000;

/// The log: its key and the tree's hashes.
#[derive(Debug)]
pub struct Log {
    key: SigningKey,
    tree: Mutex<MerkleTree>,
}

/// A shared handle.
pub type SharedLog = Arc<Log>;

impl Log {
    /// The log with the key at `key_file` (created there at the first start).
    pub fn open(key_file: &Path) -> Result<SharedLog, KeyFileError> {
        Ok(Arc::new(Self { key: key::load_or_create(key_file)?, tree: Mutex::new(MerkleTree::new()) }))
    }

    /// The key that verifies the log's tree heads.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The tree, with every leaf sequenced so far (read from the database if this replica has
    /// not seen them yet).
    pub async fn tree(
        &self,
        db: &impl deadpool_postgres::GenericClient,
    ) -> Result<MutexGuard<'_, MerkleTree>, DbError> {
        let mut tree = self.tree.lock().await;
        for hash in table::leaf_hashes(db, tree.size()).await? {
            tree.push_hash(hash);
        }
        Ok(tree)
    }

    /// One step of the sequencer: if no other replica is sequencing, appends the pending leaves
    /// (at most [`BATCH`]) and stores the signed head of the grown tree; with nothing pending,
    /// signs the current tree again once its head is `refresh` old, so that the newest head is
    /// always recent. Returns how many leaves were appended, or `None` when another replica holds
    /// the sequencer's lock.
    pub async fn sequence(
        &self,
        pool: &deadpool_postgres::Pool,
        refresh: Duration,
    ) -> Result<Option<usize>, DbError> {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        if !table::try_lock(&tx).await? {
            return Ok(None);
        }
        let mut tree = self.tree(&tx).await?;
        let pending = table::take_pending(&tx, BATCH).await?;
        if pending.is_empty() {
            let now_ms = u64::try_from(Timestamp::now().as_millis()).unwrap_or(0);
            let refresh_ms = u64::try_from(refresh.as_millis()).unwrap_or(u64::MAX);
            let due = match table::head(&tx, None).await? {
                None => true,
                Some(newest) => {
                    newest.head.size == tree.size()
                        && now_ms.saturating_sub(newest.head.timestamp_ms) >= refresh_ms
                }
            };
            if due {
                table::refresh_head(&tx, &self.sign(tree.size(), tree.root())).await?;
                tx.commit().await?;
            }
            return Ok(Some(0));
        }
        let first = tree.size();
        let hashes: Vec<Hash> = pending.iter().map(|(_, leaf)| leaf_hash(leaf)).collect();
        let step = async {
            table::append(&tx, first, &pending, &hashes).await?;
            for hash in &hashes {
                tree.push_hash(*hash);
            }
            let head = self.sign(tree.size(), tree.root());
            table::insert_head(&tx, &head).await?;
            tx.commit().await?;
            Ok::<(), DbError>(())
        };
        if let Err(e) = step.await {
            // Whatever failed, the transaction is rolled back and the tree in memory may have
            // gone ahead of the database: forget it, it is read again. Kept, the next step would
            // append the same leaves after a gap and sign a tree no one else can rebuild.
            *tree = MerkleTree::new();
            return Err(e);
        }
        Ok(Some(pending.len()))
    }

    fn sign(&self, size: u64, root: Hash) -> SignedTreeHead {
        let timestamp_ms = u64::try_from(Timestamp::now().as_millis()).unwrap_or(0);
        TreeHead { size, root, timestamp_ms }.sign(&self.key)
    }
}

/// Runs the sequencer every `interval` (at once again after a full batch), signing a tree that
/// did not grow again every `refresh`, until `shutdown`.
/// Every replica runs it; the advisory lock lets one at a time work.
pub(crate) async fn run(
    log: SharedLog,
    pool: deadpool_postgres::Pool,
    interval: Duration,
    refresh: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let again = match log.sequence(&pool, refresh).await {
            Ok(Some(n)) => n == BATCH as usize,
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "transparency log: sequencing failed; retrying");
                false
            }
        };
        if again {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
