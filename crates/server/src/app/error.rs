//! The application's one error type: a stable code, a message for people, and what else a
//! caller needs to act on it. The API renders it as JSON (`api::error`), the dashboard as an
//! HTML page; both take the HTTP status from the code.

use warp::http::StatusCode;

use crate::contract::RouterRefusal;
use crate::db::DbError;

pub use crate::contract::ErrorCode;

/// The HTTP status that goes with `code` ([`ErrorCode::status`]).
pub fn http_status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// An error of the application: what the API and the dashboard answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    /// Stable, documented code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// For `envelope_refused`: the router's or the parser's reason code (`bad_signature`, …).
    pub reason: Option<&'static str>,
    /// For `too_many_attempts`: when to try again (`Retry-After`).
    pub retry_after_secs: Option<u64>,
}

impl warp::reject::Reject for AppError {}

impl AppError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reason: None, retry_after_secs: None }
    }

    /// The HTTP status of the error's code.
    pub fn status(&self) -> StatusCode {
        http_status(self.code)
    }

    /// Refused before any work: too many failures; retry after `secs`.
    pub fn too_many_attempts(message: impl Into<String>, secs: u64) -> Self {
        Self { retry_after_secs: Some(secs), ..Self::new(ErrorCode::TooManyAttempts, message) }
    }

    /// Wrong user name or password (the same answer whether the user exists or not).
    pub fn bad_credentials() -> Self {
        Self::new(ErrorCode::BadCredentials, "wrong user name or password")
    }

    /// No valid credentials.
    pub fn unauthenticated() -> Self {
        Self::new(ErrorCode::Unauthenticated, "log in, or send a valid API key")
    }

    /// Valid credentials, not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// The resource does not exist (or is not visible to the caller).
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, format!("{} not found", what.into()))
    }

    /// The request body is larger than a bound.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    /// The request body or parameters are invalid.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// The request conflicts with existing state (a duplicate name, say).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// An envelope in the request was refused by the router's checks.
    /// `reason` is the refusal's stable code; it travels as its own field, and starts the
    /// message for people.
    pub fn envelope_refused(reason: RouterRefusal, message: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.as_str()),
            ..Self::new(ErrorCode::EnvelopeRefused, format!("{reason}: {}", message.into()))
        }
    }

    /// A dependency (database, broker) is down; retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// A bug or an unexpected failure; details are in the server's log, not the response.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match &e {
            DbError::Pool(_) => {
                tracing::warn!(error = %e, "database unavailable");
                AppError::unavailable("the database is unavailable; retry later")
            }
            DbError::Query(q) if q.is_closed() || q.as_db_error().is_none() => {
                tracing::warn!(error = %e, "database connection failed");
                AppError::unavailable("the database is unavailable; retry later")
            }
            _ if e.is_unique_violation() => AppError::conflict("already exists"),
            _ if e.is_foreign_key_violation() => AppError::invalid("refers to something that does not exist"),
            _ => {
                tracing::error!(error = %e, "database error");
                AppError::internal()
            }
        }
    }
}

impl From<deadpool_postgres::PoolError> for AppError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        DbError::from(e).into()
    }
}

impl From<tokio_postgres::Error> for AppError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_travels_under_its_documented_name() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str(), "{code:?}");
            assert_eq!(code.to_string(), code.as_str());
        }
    }
}
