//! Health and the API's description.

use warp::http::StatusCode;

use super::{Response, reply};
use crate::server::app::State;

/// Whether the database and the broker answer.
pub async fn health(state: State) -> Response {
    let database = match state.db.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    let broker = state.broker.is_connected();
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
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (method, path) of every route in `routes()`, read from its source, parameters as `{}`.
    fn routes_in_source() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let mut routes = BTreeSet::new();
        let mut rest = source;
        while let Some(at) = rest.find("warp::path!(") {
            rest = &rest[at + "warp::path!(".len()..];
            let end = rest.find(')').expect("a path! macro closes");
            let path: String = rest[..end]
                .split('/')
                .map(|segment| {
                    let segment = segment.trim();
                    if segment.starts_with('"') {
                        segment.trim_matches('"').to_owned()
                    } else {
                        "{}".to_owned()
                    }
                })
                .fold(String::new(), |acc, s| format!("{acc}/{s}"));
            let method = ["get", "post", "put", "delete"]
                .iter()
                .filter_map(|m| rest.find(&format!("warp::{m}()")).map(|i| (i, *m)))
                .min()
                .expect("a route names its method")
                .1;
            routes.insert((method.to_owned(), path));
        }
        routes
    }

    #[test]
    fn the_openapi_description_lists_exactly_the_routes() {
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let mut documented = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().expect("paths") {
            let normalized: String = path
                .split('/')
                .skip(1)
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .fold(String::new(), |acc, s| format!("{acc}/{s}"));
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.clone(), normalized.clone()));
            }
        }
        let routes = routes_in_source();
        assert_eq!(routes.len(), 32, "{routes:?}");
        assert_eq!(documented, routes);
    }

    #[test]
    fn the_openapi_error_codes_are_the_applications() {
        use crate::server::app::ErrorCode;
        let spec: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("valid JSON");
        let documented: BTreeSet<&str> = spec["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
            .as_array()
            .expect("the Error schema lists its codes")
            .iter()
            .map(|c| c.as_str().expect("a code is a string"))
            .collect();
        let codes: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(documented, codes);
    }
}
