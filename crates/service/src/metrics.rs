//! Prometheus metrics, shared by the server and the node: the OpenMetrics text of a registry,
//! served on a listener of its own (`[metrics] listen`), so that the monitoring network reaches
//! neither the API nor the dashboard.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::watch;
use warp::Filter as _;

/// `[metrics]`: where `/metrics` is served. Unset: nowhere.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Address of the metrics listener (plain HTTP), e.g. `127.0.0.1:9464`. Keep it on
    /// loopback or a monitoring network: the counts say how busy each organization is.
    pub listen: Option<SocketAddr>,
}

/// A histogram of seconds from half a millisecond to about a minute.
pub fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// The registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String does not fail");
    text
}

/// Serves `GET /metrics` on `listen` until `shutdown` turns true. Returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let route = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            render(&registry),
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    });
    let task = tokio::spawn(
        warp::serve(route)
            .incoming(listener)
            .graceful(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .run(),
    );
    tracing::info!(%addr, "metrics listening");
    Ok((addr, task))
}

/// An HTTP path with its variable parts replaced, so that a label has few values whatever is
/// requested: ids and tokens become `{id}`, and a path no route matched is `unmatched`.
pub fn route_of(path: &str, status: u16) -> String {
    if status == 404 || status == 405 {
        return "unmatched".into();
    }
    let mut route = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        route.push('/');
        let fixed = segment.len() <= 24
            && segment
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.');
        route.push_str(if fixed { segment } else { "{id}" });
    }
    if route.is_empty() { "/".into() } else { route }
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn routes_have_few_values() {
        assert_eq!(
            route_of("/api/v1/tasks/6d1f2a52-5f0e-4f7e-9a43-5b3c1a0e8d21/results", 200),
            "/api/v1/tasks/{id}/results"
        );
        assert_eq!(
            route_of("/api/v1/organizations/x/keys/SHA256:00ff/revoke", 200),
            "/api/v1/organizations/x/keys/{id}/revoke"
        );
        assert_eq!(route_of("/anything/an-attacker/chose", 404), "unmatched");
        assert_eq!(route_of("/", 200), "/");
    }
}
