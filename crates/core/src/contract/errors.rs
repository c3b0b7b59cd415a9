//! The error codes of the REST API, as `{"code": …}` carries them: one enum for the server that
//! answers them and the clients that act on them, each with its stable text and HTTP status.
//! `docs/api.md` and `docs/openapi.json` list exactly these (`server::api::system`'s tests).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The stable, documented error codes (`docs/api.md`), as they travel in `{"code": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    /// The code of its JSON text; `malformed_body` reads as [`ErrorCode::MalformedBody`]
    /// (its 415 form is the server's to choose). `None` for a code this build does not know
    /// (a newer server's): a client then goes by the HTTP status.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated | ErrorCode::BadCredentials | ErrorCode::InvalidToken => 401,
            ErrorCode::TooManyAttempts => 429,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::InvalidRequest | ErrorCode::MalformedBody => 400,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::TooLarge => 413,
            ErrorCode::LengthRequired => 411,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::EnvelopeRefused => 422,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown error code {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_from_its_text_and_has_an_error_status() {
        for code in ErrorCode::ALL {
            let back = ErrorCode::parse(code.as_str()).unwrap();
            // The 415 form shares `malformed_body` and reads back as the 400 one.
            let expected =
                if code == ErrorCode::UnsupportedMediaType { ErrorCode::MalformedBody } else { code };
            assert_eq!(back, expected);
            assert!((400..600).contains(&code.status()), "{code}");
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(ErrorCode::parse("a_code_from_the_future"), None);
    }
}
