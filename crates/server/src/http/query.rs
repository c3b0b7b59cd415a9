//! Query strings parsed so that a refusal names the broken rule. warp's own `query()` filter
//! drops the parser's message and answers every mistake with the same text.

use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

use crate::app::AppError;

/// The query string as `T`; an absent query string is an empty one. A query that does not
/// parse is refused with `invalid_request` and the parser's reason (the unknown parameter, or
/// the value that is not an id, a status or a number).
pub fn query<T: DeserializeOwned + Send + 'static>() -> impl Filter<Extract = (T,), Error = Rejection> + Clone
{
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move { parse::<T>(&raw).map_err(warp::reject::custom) })
}

fn parse<T: DeserializeOwned>(raw: &str) -> Result<T, AppError> {
    serde_urlencoded::from_str(raw).map_err(|e| AppError::invalid(format!("invalid query string: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobStatus;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Q {
        status: Option<JobStatus>,
        limit: Option<i64>,
    }

    #[test]
    fn a_refusal_names_what_is_wrong() {
        let err = |raw| parse::<Q>(raw).unwrap_err().message;
        assert!(err("status=bogus").contains("unknown variant `bogus`"), "{}", err("status=bogus"));
        assert!(err("limit=ten").contains("invalid digit"), "{}", err("limit=ten"));
        assert!(err("colour=red").contains("unknown field `colour`"), "{}", err("colour=red"));
        assert!(parse::<Q>("").is_ok());
    }
}
