//! The API's one error type, rendered in one place as `{"code", "message"}` with its status.

use std::convert::Infallible;

use warp::http::StatusCode;
use warp::{Rejection, Reply};

use crate::server::db::DbError;

/// An API error: an HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable, documented code (`docs/api.md`).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// For `too_many_attempts`: when to try again (`Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }

    /// Refused before any work: too many failures; retry after `secs`.
    pub fn too_many_attempts(message: impl Into<String>, secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", message)
        }
    }

    /// Wrong user name or password (the same answer whether the user exists or not).
    pub fn bad_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "bad_credentials", "wrong user name or password")
    }

    /// No valid credentials.
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "log in, or send a valid API key")
    }

    /// Valid credentials, not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The resource does not exist (or is not visible to the caller).
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{} not found", what.into()))
    }

    /// The request body or parameters are invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// The request conflicts with existing state (a duplicate name, say).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// An envelope in the request was refused by the router's checks.
    pub fn envelope_refused(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "envelope_refused", format!("{code}: {}", message.into()))
    }

    /// A dependency (database, broker) is down; retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A bug or an unexpected failure; details are in the server's log, not the response.
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match &e {
            DbError::Pool(_) => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::unavailable("the database is unavailable; retry later")
            }
            DbError::Query(q) if q.is_closed() || q.as_db_error().is_none() => {
                tracing::warn!(error = %e, "database connection failed");
                ApiError::unavailable("the database is unavailable; retry later")
            }
            _ if e.is_unique_violation() => ApiError::conflict("already exists"),
            _ if e.is_foreign_key_violation() => ApiError::invalid("refers to something that does not exist"),
            _ => {
                tracing::error!(error = %e, "database error");
                ApiError::internal()
            }
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

/// Renders any rejection as the API's JSON error body.
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    Ok(render(&classify(&rejection)))
}

/// The error a rejection stands for (the dashboard renders the same errors as HTML).
pub fn classify(rejection: &Rejection) -> ApiError {
    if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::not_found("route")
    } else if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", format!("malformed JSON body: {e}"))
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "request body too large")
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(StatusCode::LENGTH_REQUIRED, "length_required", "a Content-Length header is required")
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "malformed_body", "send JSON (application/json)")
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::invalid(format!("invalid query string: {e}"))
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        ApiError::invalid(e.to_string())
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        ApiError::internal()
    }
}

/// The JSON body of an error.
pub fn render(error: &ApiError) -> warp::reply::Response {
    let body = serde_json::json!({ "code": error.code, "message": error.message });
    let mut response = warp::reply::with_status(warp::reply::json(&body), error.status).into_response();
    if let Some(secs) = error.retry_after_secs {
        response.headers_mut().insert(warp::http::header::RETRY_AFTER, secs.into());
    }
    response
}
