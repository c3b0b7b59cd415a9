//! Who is calling, as warp filters: the bearer token of a user's session or a node's API key
//! (`app::logins` decides which principal it is), and the `/login` and `/logout` routes.

use std::net::IpAddr;
use std::time::SystemTime;

use secrecy::{ExposeSecret as _, SecretString};
use warp::Filter;
use warp::Reply as _;

use crate::app::{AppError, Principal, State, logins};
use crate::contract;
use crate::http::with_state;

/// A filter that authenticates the request or rejects it as `unauthenticated`.
pub fn authenticated(state: State) -> impl Filter<Extract = (Principal,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization").and(with_state(state)).and_then(
        |header: Option<String>, state: State| async move {
            let token = header
                .as_deref()
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(AppError::unauthenticated)?;
            logins::authenticate(&state, token).await.map_err(warp::reject::custom)
        },
    )
}

/// `POST /login`: a bearer token for a user name and password.
pub async fn login(
    body: contract::Login,
    source: Option<IpAddr>,
    state: State,
) -> Result<warp::reply::Response, warp::Rejection> {
    let password = SecretString::from(body.password.into_inner());
    let user = logins::verify_credentials(&state, &body.username, &password, source).await?;
    let (token, expires_at) = logins::create_session(&state, &user).await?;
    let expires_ms = expires_at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let answer = contract::LoginAnswer {
        token: contract::ShownOnce::new(token.expose_secret()),
        expires_at_ms: expires_ms,
        user: user.into(),
    };
    Ok(warp::reply::json(&answer).into_response())
}

/// `POST /logout`: ends the caller's session.
pub async fn logout(header: Option<String>, state: State) -> Result<warp::reply::Response, warp::Rejection> {
    if let Some(token) = header.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
        logins::end_session(&state, token.trim()).await?;
    }
    Ok(warp::reply::with_status(warp::reply(), warp::http::StatusCode::NO_CONTENT).into_response())
}
