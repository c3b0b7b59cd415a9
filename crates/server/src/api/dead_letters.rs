//! `/dead-letters`: envelopes the router refused, with what could be read of their headers and
//! why, newest first. Root reads every one; an organization's administrator those to or from it.

use serde::Deserialize;
use warp::http::StatusCode;

use super::{Response, reply};
use crate::contract::DeadLetter;
use crate::server::app::{AppError, Principal, State, access, db};
use crate::server::db::monitor;

/// `GET /dead-letters` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this reason code.
    reason: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

fn default_limit() -> i64 {
    50
}

/// Dead letters the caller may read, newest first, filtered and paginated.
pub async fn list(principal: Principal, q: ListQuery, state: State) -> Response {
    let scope = access::dead_letter_scope(&principal)?;
    if !(1..=500).contains(&q.limit) || q.offset < 0 {
        return Err(AppError::invalid("limit is 1 to 500 and offset at least 0").into());
    }
    let client = db(&state).await?;
    let rows = monitor::dead_letters(&**client, scope, q.reason.as_deref(), q.limit, q.offset)
        .await
        .map_err(AppError::from)?;
    let letters: Vec<DeadLetter> = rows
        .into_iter()
        .map(|d| DeadLetter {
            message_id: d.message_id,
            reason_code: d.reason_code,
            reason: d.reason,
            kind: d.kind,
            sender: d.sender,
            recipient: d.recipient,
            task: d.task,
            publisher: d.publisher,
            size: u64::try_from(d.size).unwrap_or_default(),
            received_at: d.received_at,
        })
        .collect();
    Ok(reply(StatusCode::OK, &letters))
}
