//! The application's one error type: a stable code, a message for people, and what else a
//! caller needs to act on it. The API renders it as JSON (`api::error`), the dashboard as an
//! HTML page; both take the HTTP status from the code.

use serde::Serialize;
use warp::http::StatusCode;

use crate::server::db::DbError;

/// The stable, documented error codes (`docs/api.md`), as they travel in `{"code": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No valid credentials.
    Unauthenticated,
    /// Wrong user name or password.
    BadCredentials,
    /// An enrollment token that is unknown, used or expired.
    InvalidToken,
    /// Too many failed logins; retry later.
    TooManyAttempts,
    /// Valid credentials, not allowed.
    Forbidden,
    /// Not there, or not visible to the caller.
    NotFound,
    /// The request's body or parameters break a rule.
    InvalidRequest,
    /// The body is not the JSON the route takes.
    MalformedBody,
    /// The body is not JSON at all (its `Content-Type`): `malformed_body` with status 415.
    #[serde(rename = "malformed_body")]
    UnsupportedMediaType,
    /// The body is larger than `http.max_body_bytes`.
    TooLarge,
    /// No `Content-Length`.
    LengthRequired,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// Conflicts with what exists (a duplicate name, say).
    Conflict,
    /// An envelope in the request did not parse or the router refused it.
    EnvelopeRefused,
    /// A dependency (database, broker) is down; retry later.
    Unavailable,
    /// A bug or unexpected failure; details are in the server's log.
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::Unauthenticated,
        ErrorCode::BadCredentials,
        ErrorCode::InvalidToken,
        ErrorCode::TooManyAttempts,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::InvalidRequest,
        ErrorCode::MalformedBody,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::TooLarge,
        ErrorCode::LengthRequired,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::EnvelopeRefused,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code as it is written in JSON and in `docs/api.md`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MalformedBody | ErrorCode::UnsupportedMediaType => "malformed_body",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::LengthRequired => "length_required",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::EnvelopeRefused => "envelope_refused",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthenticated | ErrorCode::BadCredentials | ErrorCode::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvalidRequest | ErrorCode::MalformedBody => StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::EnvelopeRefused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
        self.code.status()
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
    pub fn envelope_refused(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason: Some(reason),
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
