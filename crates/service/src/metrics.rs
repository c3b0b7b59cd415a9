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

/// The routes a service answers, as templates (`/api/v1/tasks/{id}/results`) whose `{…}`
/// segments match any one segment. A request's route label is the template it matches, or
/// `unmatched`: whatever is requested, a label takes one of these values and no other, so that
/// no caller can grow the metrics without bound.
#[derive(Debug, Clone)]
pub struct Routes {
    templates: Vec<(String, Vec<Option<String>>)>,
}

/// The label of a path that matches no template.
pub const UNMATCHED: &str = "unmatched";

impl Routes {
    /// The routes `templates` name.
    pub fn new<S: Into<String>>(templates: impl IntoIterator<Item = S>) -> Self {
        let templates = templates
            .into_iter()
            .map(|t| {
                let template: String = t.into();
                let segments = segments(&template)
                    .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
                    .collect();
                (template, segments)
            })
            .collect();
        Self { templates }
    }

    /// The template `path` matches, or [`UNMATCHED`]. A path the service answered 404 or 405 is
    /// always unmatched.
    pub fn label(&self, path: &str, status: u16) -> &str {
        if status == 404 || status == 405 {
            return UNMATCHED;
        }
        let wanted: Vec<&str> = segments(path).collect();
        self.templates
            .iter()
            .find(|(_, fixed)| {
                fixed.len() == wanted.len()
                    && fixed.iter().zip(&wanted).all(|(f, w)| f.as_deref().is_none_or(|f| f == *w))
            })
            .map_or(UNMATCHED, |(template, _)| template.as_str())
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// An HTTP method as a label: the methods of HTTP/1.1 and PATCH by name, anything else `other`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::{Routes, UNMATCHED, method_label};

    #[test]
    fn a_route_label_is_a_template_or_unmatched() {
        let routes =
            Routes::new(["/api/v1/tasks/{id}/results", "/api/v1/organizations/{id}/keys/{fp}/revoke", "/"]);
        assert_eq!(
            routes.label("/api/v1/tasks/6d1f2a52-5f0e-4f7e-9a43-5b3c1a0e8d21/results", 200),
            "/api/v1/tasks/{id}/results"
        );
        assert_eq!(
            routes.label("/api/v1/organizations/x/keys/ab/revoke", 403),
            "/api/v1/organizations/{id}/keys/{fp}/revoke"
        );
        assert_eq!(routes.label("/api/v1/tasks/x/other", 400), UNMATCHED);
        assert_eq!(routes.label("/api/v1/tasks/x/results", 404), UNMATCHED);
        assert_eq!(routes.label("/anything/an-attacker/chose", 401), UNMATCHED);
        assert_eq!(routes.label("/", 200), "/");
    }

    #[test]
    fn methods_are_a_closed_set() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("get"), "other");
    }
}
