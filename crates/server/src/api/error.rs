//! The API's errors rendered in one place as `{"code", "message"}` (and `reason` for a refused
//! envelope) with the status of the code.

use std::convert::Infallible;

use warp::{Rejection, Reply};

use crate::app::AppError;
use crate::http::classify;

/// Renders any rejection as the API's JSON error body.
pub async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    Ok(render(&classify(&rejection)))
}

/// The JSON body of an error.
pub fn render(error: &AppError) -> warp::reply::Response {
    let mut body = serde_json::json!({ "code": error.code, "message": error.message });
    if let Some(reason) = error.reason {
        body["reason"] = reason.into();
    }
    let mut response = warp::reply::with_status(warp::reply::json(&body), error.status()).into_response();
    if let Some(secs) = error.retry_after_secs {
        response.headers_mut().insert(warp::http::header::RETRY_AFTER, secs.into());
    }
    response
}
