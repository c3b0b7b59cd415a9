//! Health and the API's description.

use warp::http::StatusCode;

use super::{Response, State, reply};

/// Whether the database and the broker answer.
pub async fn health(state: State) -> Response {
    let database = match state.db.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    let broker = state.broker.is_connected().await;
    let ok = database && broker;
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok(reply(
        status,
        &serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "database": database,
            "broker": broker,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    ))
}

/// The OpenAPI description of the API.
pub async fn openapi() -> Response {
    let spec: serde_json::Value =
        serde_json::from_str(OPENAPI).expect("docs/openapi.json is valid JSON (checked by a test)");
    Ok(reply(StatusCode::OK, &spec))
}

/// `docs/openapi.json`, compiled in.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");
