//! `/transparency/…`: the log's key, signed tree heads, inclusion and consistency proofs and the
//! leaves themselves, for every authenticated user and node. Everything here can be checked
//! against the log's key by whoever asks (`fedq audit`, the nodes' monitors): the answers are
//! evidence, not claims.

use serde::Deserialize;
use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::{AppError, Principal, State, db};
use crate::contract::{ConsistencyProofBody, InclusionProofBody, LogEntry, LogKey, TreeHeadBody};
use crate::db::directory;
use crate::db::transparency as table;
use fedq_transparency::{Leaf, leaf_hash, wire};

/// Entries answered at most per request.
const MAX_ENTRIES: u64 = 1000;

/// `GET /transparency/key`.
pub async fn key(_: Principal, state: State) -> Response {
    let body = LogKey {
        algorithm: "Ed25519".into(),
        public_key: hex::encode(state.transparency.public_key().as_bytes()),
    };
    Ok(reply(StatusCode::OK, &body))
}

/// `?size=`: a head signed earlier, instead of the newest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadQuery {
    size: Option<u64>,
}

/// `GET /transparency/tree-head[?size=N]`.
pub async fn tree_head(_: Principal, q: HeadQuery, state: State) -> Response {
    let client = db(&state).await?;
    let head = signed_head(&client, q.size).await?;
    Ok(reply(StatusCode::OK, &TreeHeadBody::from(&head)))
}

/// `?leaf_hash=HEX[&size=N]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    leaf_hash: String,
    size: Option<u64>,
}

/// `GET /transparency/proof/inclusion?leaf_hash=HEX[&size=N]`: the proof that the leaf with
/// this hash is in the tree of `size` leaves (the newest signed head's size by default).
pub async fn inclusion(_: Principal, q: InclusionQuery, state: State) -> Response {
    let hash = wire::hash_from_hex(&q.leaf_hash)
        .map_err(|_| AppError::invalid("leaf_hash: the leaf's RFC 9162 hash, 64 hex digits"))?;
    let client = db(&state).await?;
    let size = signed_head(&client, q.size).await?.head.size;
    let index = table::index_of(&client, &hash).await.map_err(AppError::from)?.ok_or_else(|| {
        AppError::not_found(
            "a leaf with this hash (leaves take their place within transparency.sequence_interval_ms; retry, \
             and if it stays absent the log left it out)",
        )
    })?;
    if index >= size {
        return Err(AppError::not_found(format!(
            "leaf {index} in the tree of size {size}; ask for a later head"
        ))
        .into());
    }
    let tree = state.transparency.tree(&client).await.map_err(AppError::from)?;
    let path = tree.inclusion_proof(index, size).ok_or_else(AppError::internal)?;
    Ok(reply(
        StatusCode::OK,
        &InclusionProofBody { leaf_index: index, tree_size: size, path: wire::path_to_hex(&path) },
    ))
}

/// `?from=M&to=N`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

/// `GET /transparency/proof/consistency?from=M[&to=N]`: the proof that the tree of `from`
/// leaves is a prefix of the tree of `to` (the newest signed head's size by default).
pub async fn consistency(_: Principal, q: ConsistencyQuery, state: State) -> Response {
    let client = db(&state).await?;
    let to = signed_head(&client, q.to).await?.head.size;
    if q.from > to {
        return Err(AppError::invalid(format!("from ({}) is larger than to ({to})", q.from)).into());
    }
    let tree = state.transparency.tree(&client).await.map_err(AppError::from)?;
    let path = tree.consistency_proof(q.from, to).ok_or_else(AppError::internal)?;
    Ok(reply(StatusCode::OK, &ConsistencyProofBody { from: q.from, to, path: wire::path_to_hex(&path) }))
}

/// `?start=M[&end=N]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    start: u64,
    end: Option<u64>,
}

/// `GET /transparency/entries?start=M[&end=N]`: the leaves with indexes in `start..end`, at most
/// 1,000 per request (fewer when the log is shorter: ask again from the last index + 1).
///
/// An envelope's leaf names who sent what to whom, in which collaboration, task and run, and
/// when: it is shown only to root and to members of its collaboration (and its sender and
/// recipient); everyone else gets its hash, which is all a monitor needs to recompute the root.
pub async fn entries(principal: Principal, q: EntriesQuery, state: State) -> Response {
    let end = q.end.unwrap_or(u64::MAX).min(q.start.saturating_add(MAX_ENTRIES));
    if end < q.start {
        return Err(AppError::invalid(format!("end ({end}) is smaller than start ({})", q.start)).into());
    }
    let client = db(&state).await?;
    let leaves = table::entries(&client, q.start, end).await.map_err(AppError::from)?;
    // Root sees every leaf; anyone else, the envelopes of its organization's collaborations.
    let reader = principal.scope();
    let member_of: std::collections::HashSet<_> = match reader {
        None => Default::default(),
        Some(org) => directory::member_collaborations(&**client, org).await.map_err(AppError::from)?,
    };
    let shown = |leaf: &[u8]| match (reader, Leaf::decode(leaf)) {
        (Some(org), Ok(Leaf::Envelope(e))) => {
            member_of.contains(&e.collaboration) || e.sender == org || e.recipient == org
        }
        _ => true,
    };
    let body: Vec<LogEntry> = leaves
        .into_iter()
        .map(|(index, leaf)| {
            if shown(&leaf) {
                LogEntry { index, leaf: Some(hex::encode(leaf)), leaf_hash: None }
            } else {
                LogEntry { index, leaf: None, leaf_hash: Some(hex::encode(leaf_hash(&leaf))) }
            }
        })
        .collect();
    Ok(reply(StatusCode::OK, &body))
}

/// The head signed for `size`, else the newest.
async fn signed_head(
    client: &deadpool_postgres::Object,
    size: Option<u64>,
) -> Result<fedq_transparency::SignedTreeHead, AppError> {
    table::head(client, size).await?.ok_or_else(|| match size {
        Some(size) => AppError::not_found(format!("a signed tree head of size {size}")),
        None => AppError::unavailable("the log has no signed tree head yet; retry in a second"),
    })
}
