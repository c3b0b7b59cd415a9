//! `/dead-letters`: envelopes the router refused, with what could be read of their headers and
//! why, newest first. Root reads every one; an organization's administrator those to or from it.

use serde::Deserialize;
use warp::http::StatusCode;

use super::{Response, reply};
use crate::app::{AppError, Principal, State, access, db};
use crate::db::monitor;

/// `GET /dead-letters` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this reason code.
    reason: Option<String>,
    #[serde(default = "super::default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

/// Dead letters the caller may read, newest first, filtered and paginated.
pub async fn list(principal: Principal, q: ListQuery, state: State) -> Response {
    let scope = access::dead_letter_scope(&principal)?;
    super::check_page(q.limit, q.offset)?;
    let client = db(&state).await?;
    let rows = monitor::dead_letters(&**client, scope, q.reason.as_deref(), q.limit, q.offset)
        .await
        .map_err(AppError::from)?;
    Ok(reply(StatusCode::OK, &rows))
}
