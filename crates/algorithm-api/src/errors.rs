//! The endpoint's error answers: `{"code": …, "message": …}` with a stable code and its status.

use serde::{Deserialize, Serialize};

/// The stable error codes of the node-local endpoint (`docs/algorithm-api.md`, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body or a query value is not what the route takes.
    Malformed,
    /// No token, or a token that is not a running job's.
    Unauthorized,
    /// A policy refusal, or the server's refusal of a subtask (then with the server's status).
    Refused,
    /// A message to an organization with no job in the run.
    NotInRun,
    /// No such route, or no such subtask in this run.
    NotFound,
    /// An organization the node has no trusted key for.
    UnknownOrganization,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// A second result, or a second contribution to a secure-sum round.
    AlreadyPosted,
    /// A body, result or subtask input above the node's limits.
    TooLarge,
    /// The job has its most requests in flight.
    TooManyRequests,
    /// The node's own state failed; its log says why.
    Internal,
    /// The broker or the server is unreachable for now; retry.
    Unavailable,
    /// A secure-sum round still misses a participant's run key or contribution after the wait.
    RoundIncomplete,
}

impl ErrorCode {
    /// Every code, in the order of their statuses.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::Malformed,
        ErrorCode::Unauthorized,
        ErrorCode::Refused,
        ErrorCode::NotInRun,
        ErrorCode::NotFound,
        ErrorCode::UnknownOrganization,
        ErrorCode::MethodNotAllowed,
        ErrorCode::AlreadyPosted,
        ErrorCode::TooLarge,
        ErrorCode::TooManyRequests,
        ErrorCode::Internal,
        ErrorCode::Unavailable,
        ErrorCode::RoundIncomplete,
    ];

    /// The code as it is written in JSON and in the docs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Refused => "refused",
            ErrorCode::NotInRun => "not_in_run",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownOrganization => "unknown_organization",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlreadyPosted => "already_posted",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RoundIncomplete => "round_incomplete",
        }
    }

    /// The HTTP status that goes with the code (`refused` may carry the server's own 4xx).
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::Malformed => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Refused | ErrorCode::NotInRun => 403,
            ErrorCode::NotFound | ErrorCode::UnknownOrganization => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyPosted => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::RoundIncomplete => 504,
        }
    }

    /// The code of its text; `None` for one this build does not know (a newer node's).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer as it travels. The code stays text so that a client reads a code a newer node
/// adds ([`ErrorBody::code`] tells whether this build knows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code's text.
    pub code: String,
    /// Why, for people.
    pub message: String,
}

impl ErrorBody {
    /// An answer with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code: code.as_str().to_owned(), message: message.into() }
    }

    /// The code, if this build knows it.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.code)
    }
}
