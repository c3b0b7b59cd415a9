//! One module per page of the dashboard. Handlers take the logged-in [`Admin`] and scope every
//! query by it; rendering goes through `view`.
//!
//! [`Admin`]: super::session::Admin

pub mod dead_letters;
pub mod organizations;
pub mod overview;
pub mod routing;
pub mod tasks;

use std::str::FromStr;

use tokio_postgres::GenericClient;

use super::view::Names;
use crate::app::AppError;
use crate::db::directory;
use crate::ids::OrgId;

/// What a page handler returns; errors are rendered as HTML by the dashboard's `recover`.
pub type Page = Result<warp::reply::Response, AppError>;

/// Names of the organizations the administrator may see (their own and those sharing a
/// collaboration with it, all for root).
pub async fn names(db: &impl GenericClient, scope: Option<OrgId>) -> Result<Names, AppError> {
    let orgs = directory::orgs(db, scope).await?;
    Ok(Names(orgs.into_iter().map(|o| (o.id, o.name)).collect()))
}

/// A filter value from a query string: empty means no filter; anything else must parse.
pub fn filter<T: FromStr>(value: &Option<String>, what: &str) -> Result<Option<T>, AppError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| AppError::invalid(format!("{what} {v:?} is not valid"))),
    }
}

/// The page number from a query string (1 when absent), and the offset of its first row.
pub fn page_of(page: Option<i64>) -> Result<(i64, i64), AppError> {
    match page.unwrap_or(1) {
        p @ 1..=100_000 => Ok((p, (p - 1) * super::view::PAGE_SIZE)),
        _ => Err(AppError::invalid("page is 1 to 100000")),
    }
}
