//! The transparency log's tables (migration V8): leaves waiting for the sequencer, the sequenced
//! leaves in their dense order, and the signed tree heads.
//!
//! A leaf is queued in the transaction that routes its envelope or makes its change, never
//! after: the commit that decides the one decides the other.

use deadpool_postgres::GenericClient;
use fedq_transparency::leaf::{EnvelopeLeaf, Event, EventLeaf, Leaf};
use fedq_transparency::{Hash, SignedTreeHead, TreeHead};

use super::DbError;
use crate::envelope::Header;
use crate::ids::OrgId;
use crate::time::Timestamp;

/// The advisory lock that makes one replica at a time the sequencer.
const SEQUENCER_LOCK: i64 = 0x6665_6471_6c6f_6773; // "fedqlogs"

/// Queues encoded leaves for the sequencer, in the caller's transaction (one statement).
pub async fn queue(db: &impl GenericClient, leaves: &[Vec<u8>]) -> Result<(), DbError> {
    if leaves.is_empty() {
        return Ok(());
    }
    let statement = db
        .prepare_cached("INSERT INTO transparency_pending (leaf) SELECT * FROM unnest($1::bytea[])")
        .await?;
    db.execute(&statement, &[&leaves]).await?;
    Ok(())
}

/// The encoded leaf of a routed envelope: the SHA-256 of its full bytes and its clear header.
pub fn envelope(header: &Header, bytes: &[u8]) -> Vec<u8> {
    Leaf::Envelope(EnvelopeLeaf::of(header, bytes)).encode()
}

/// The encoded leaf of an event about `organization`, as of now.
pub fn event(organization: OrgId, event: Event) -> Vec<u8> {
    Leaf::Event(EventLeaf { organization, at: Timestamp::now(), event }).encode()
}

/// Takes the sequencer's lock for the caller's transaction; `false` when another replica holds it.
pub async fn try_lock(tx: &impl GenericClient) -> Result<bool, DbError> {
    Ok(tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SEQUENCER_LOCK]).await?.get(0))
}

/// The leaf hashes from index `from` on, in order.
pub async fn leaf_hashes(db: &impl GenericClient, from: u64) -> Result<Vec<Hash>, DbError> {
    let rows = db
        .query("SELECT leaf_hash FROM transparency_leaves WHERE idx >= $1 ORDER BY idx", &[&to_i64(from)])
        .await?;
    Ok(rows.iter().filter_map(|r| <Hash>::try_from(r.get::<_, &[u8]>(0)).ok()).collect())
}

/// Takes at most `limit` pending leaves, oldest first, out of the queue (in the caller's
/// transaction, which the sequencer's lock makes the only one doing so): one statement.
pub async fn take_pending(tx: &impl GenericClient, limit: u32) -> Result<Vec<(i64, Vec<u8>)>, DbError> {
    let statement = tx
        .prepare_cached(
            "WITH taken AS (DELETE FROM transparency_pending
                            WHERE seq IN (SELECT seq FROM transparency_pending ORDER BY seq LIMIT $1)
                            RETURNING seq, leaf)
             SELECT seq, leaf FROM taken ORDER BY seq",
        )
        .await?;
    let rows = tx.query(&statement, &[&i64::from(limit)]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Appends leaves at indexes `first`, `first + 1`… in the caller's transaction.
pub async fn append(
    tx: &impl GenericClient,
    first: u64,
    leaves: &[(i64, Vec<u8>)],
    hashes: &[Hash],
) -> Result<(), DbError> {
    let indexes: Vec<i64> = (0..leaves.len() as u64).map(|i| to_i64(first + i)).collect();
    let bytes: Vec<&[u8]> = leaves.iter().map(|(_, leaf)| leaf.as_slice()).collect();
    let hashes: Vec<&[u8]> = hashes.iter().map(<[u8; 32]>::as_slice).collect();
    let statement = tx
        .prepare_cached(
            "INSERT INTO transparency_leaves (idx, leaf, leaf_hash)
             SELECT * FROM unnest($1::int8[], $2::bytea[], $3::bytea[])",
        )
        .await?;
    tx.execute(&statement, &[&indexes, &bytes, &hashes]).await?;
    Ok(())
}

/// Stores a signed tree head (the first one signed for its size stays).
pub async fn insert_head(tx: &impl GenericClient, head: &SignedTreeHead) -> Result<(), DbError> {
    put_head(tx, head, "DO NOTHING").await
}

/// Stores `head`, signed again later for a tree that did not grow, in place of the head of its
/// size (only if the root is the same: the history a head vouches for never changes).
pub async fn refresh_head(tx: &impl GenericClient, head: &SignedTreeHead) -> Result<(), DbError> {
    put_head(
        tx,
        head,
        "DO UPDATE SET timestamp_ms = EXCLUDED.timestamp_ms, signature = EXCLUDED.signature
         WHERE transparency_heads.root = EXCLUDED.root AND transparency_heads.timestamp_ms < EXCLUDED.timestamp_ms",
    )
    .await
}

/// Inserts `head`, doing `on_conflict` when its size has a head already.
async fn put_head(tx: &impl GenericClient, head: &SignedTreeHead, on_conflict: &str) -> Result<(), DbError> {
    let statement = format!(
        "INSERT INTO transparency_heads (size, root, timestamp_ms, signature) VALUES ($1, $2, $3, $4)
         ON CONFLICT (size) {on_conflict}"
    );
    tx.execute(
        &statement,
        &[
            &to_i64(head.head.size),
            &head.head.root.as_slice(),
            &to_i64(head.head.timestamp_ms),
            &head.signature.as_slice(),
        ],
    )
    .await?;
    Ok(())
}

/// The newest signed tree head, or the one of `size`.
pub async fn head(db: &impl GenericClient, size: Option<u64>) -> Result<Option<SignedTreeHead>, DbError> {
    let row = db
        .query_opt(
            "SELECT size, root, timestamp_ms, signature FROM transparency_heads
             WHERE $1::int8 IS NULL OR size = $1 ORDER BY size DESC LIMIT 1",
            &[&size.map(to_i64)],
        )
        .await?;
    Ok(row.and_then(|r| {
        Some(SignedTreeHead {
            head: TreeHead {
                size: u64::try_from(r.get::<_, i64>(0)).ok()?,
                root: <Hash>::try_from(r.get::<_, &[u8]>(1)).ok()?,
                timestamp_ms: u64::try_from(r.get::<_, i64>(2)).ok()?,
            },
            signature: <[u8; 64]>::try_from(r.get::<_, &[u8]>(3)).ok()?,
        })
    }))
}

/// The index of the first leaf whose hash is `hash`, if any.
pub async fn index_of(db: &impl GenericClient, hash: &Hash) -> Result<Option<u64>, DbError> {
    let row = db
        .query_opt("SELECT min(idx) FROM transparency_leaves WHERE leaf_hash = $1", &[&hash.as_slice()])
        .await?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).and_then(|i| u64::try_from(i).ok()))
}

/// The leaves with indexes in `start..end`, in order.
pub async fn entries(db: &impl GenericClient, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, DbError> {
    let rows = db
        .query(
            "SELECT idx, leaf FROM transparency_leaves WHERE idx >= $1 AND idx < $2 ORDER BY idx",
            &[&to_i64(start), &to_i64(end)],
        )
        .await?;
    Ok(rows.iter().map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1))).collect())
}

/// PostgreSQL has no unsigned integers; log sizes stay far below 2^63.
fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
