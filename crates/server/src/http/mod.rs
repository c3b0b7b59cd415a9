//! warp plumbing shared by the REST API and the dashboard: the state handed to handlers, query
//! strings, the client's address, and what a warp rejection means as an [`AppError`]. Neither
//! front end imports the other; both import this and the application layer.

pub mod query;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use warp::http::HeaderMap;
use warp::{Filter, Rejection};

use crate::app::{AppError, ErrorCode, State};
use crate::https::PeerAddr;

pub use query::query;

/// A filter that provides the state.
pub fn with_state(state: State) -> impl Filter<Extract = (State,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The client's address: the connection's peer, or, when the peer is one of
/// `auth.trusted_proxies`, the last address of its `X-Forwarded-For`.
pub fn client_address(state: State) -> impl Filter<Extract = (Option<IpAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<PeerAddr>().and(warp::addr::remote()).and(warp::header::headers_cloned()).map(
        move |tls_peer: Option<PeerAddr>, plain_peer: Option<SocketAddr>, headers: HeaderMap| {
            let peer = tls_peer.map(|p| p.0).or(plain_peer)?.ip();
            if !state.config.auth.trusted_proxies.contains(&peer) {
                return Some(peer);
            }
            // The proxy appends the address it saw; whatever the client sent comes before it.
            let forwarded =
                headers.get_all("x-forwarded-for").iter().next_back().and_then(|v| v.to_str().ok());
            Some(
                forwarded
                    .and_then(|v| v.rsplit(',').next())
                    .and_then(|a| a.trim().parse().ok())
                    .unwrap_or(peer),
            )
        },
    )
}

/// The error a rejection stands for: the application's own, or warp's (no route, a body that
/// is not JSON, …) given its code. The API renders it as JSON, the dashboard as HTML.
pub fn classify(rejection: &Rejection) -> AppError {
    if let Some(e) = rejection.find::<AppError>() {
        e.clone()
    } else if rejection.is_not_found() {
        AppError::not_found("route")
    } else if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        AppError::new(ErrorCode::MalformedBody, format!("malformed JSON body: {e}"))
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        AppError::new(ErrorCode::TooLarge, "request body too large")
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        AppError::new(ErrorCode::LengthRequired, "a Content-Length header is required")
    } else if rejection.find::<warp::reject::UnsupportedMediaType>().is_some() {
        AppError::new(ErrorCode::UnsupportedMediaType, "send JSON (application/json)")
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        AppError::invalid(format!("invalid query string: {e}"))
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        AppError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
    } else if let Some(e) = rejection.find::<warp::reject::MissingHeader>() {
        AppError::invalid(e.to_string())
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        AppError::internal()
    }
}
