//! The REST API, `/api/v1`: JSON in and out, the application's errors rendered in one place
//! (`error::recover`). Every route is listed in `routes`; the handlers, one module per
//! resource, parse the request, call the application layer (`server::app`) and render its answer.

pub mod auth;
mod collaborations;
mod dead_letters;
mod enrollments;
pub mod error;
mod nodes;
mod organizations;
mod system;
mod tasks;
mod transparency;
mod users;

use std::convert::Infallible;

use fedq_service::metrics::{Routes, method_label};
use serde::Serialize;
use warp::Filter;
use warp::http::StatusCode;

use crate::app::State;
use crate::http::{client_address, query, with_state};
use crate::ids::{CollaborationId, NodeId, OrgId, TaskId, UserId};

/// A JSON body of at most the configured size.
fn json_body<T: serde::de::DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(limit).and(warp::body::json())
}

/// The largest body of a route other than task creation.
const SMALL_BODY: u64 = 1024 * 1024;

/// Reserves a task body's size from the budget of bodies in flight (`app/bodies.rs`) before it
/// is read: the caller, and the reservation, which the handler holds until it answers.
fn reserved_body(
    auth: impl Filter<Extract = (crate::app::Principal,), Error = warp::Rejection> + Clone,
    state: State,
) -> impl Filter<Extract = (crate::app::Principal, crate::app::bodies::Reservation), Error = warp::Rejection> + Clone
{
    auth.and(warp::header::optional::<u64>("content-length"))
        .and(with_state(state))
        .and_then(|principal: crate::app::Principal, length: Option<u64>, state: State| async move {
            let reserved = state
                .bodies
                .reserve(principal.scope(), length.unwrap_or(0), crate::app::bodies::WAIT)
                .await
                .map_err(warp::reject::custom)?;
            Ok::<_, warp::Rejection>((principal, reserved))
        })
        .untuple_one()
}

/// A JSON reply with a status.
pub fn reply<T: Serialize>(status: StatusCode, body: &T) -> warp::reply::Response {
    use warp::Reply as _;
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// The page size of a list when the query names none.
fn default_limit() -> i64 {
    50
}

/// Refuses a page of a list outside its bounds: 1 to 500 items, from offset 0 on.
fn check_page(limit: i64, offset: i64) -> Result<(), crate::app::AppError> {
    if !(1..=500).contains(&limit) || offset < 0 {
        return Err(crate::app::AppError::invalid("limit is 1 to 500 and offset at least 0"));
    }
    Ok(())
}

/// The result type of handlers.
pub type Response = Result<warp::reply::Response, warp::Rejection>;

/// A route, type-erased.
type BoxedRoute = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// Every route of the API.
pub fn routes(state: State) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let limit = state.config.http.max_body_bytes;
    let v1 = warp::path("api").and(warp::path("v1"));
    let auth = auth::authenticated(state.clone());
    let st = with_state(state.clone());
    let metrics = state.metrics.clone();

    let login = v1
        .and(warp::path!("login"))
        .and(warp::post())
        .and(json_body(4096))
        .and(client_address(state.clone()))
        .and(st.clone())
        .and_then(auth::login);
    let logout = v1
        .and(warp::path!("logout"))
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(st.clone())
        .and_then(auth::logout);
    let health = v1.and(warp::path!("health")).and(warp::get()).and(st.clone()).and_then(system::health);
    let openapi = v1.and(warp::path!("openapi.json")).and(warp::get()).and_then(system::openapi);

    let orgs_create = v1
        .and(warp::path!("organizations"))
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(SMALL_BODY))
        .and(st.clone())
        .and_then(organizations::create);
    let orgs_list = v1
        .and(warp::path!("organizations"))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(organizations::list);
    let orgs_get = v1
        .and(warp::path!("organizations" / OrgId))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(organizations::get);
    let orgs_key = v1
        .and(warp::path!("organizations" / OrgId / "public-key"))
        .and(warp::put())
        .and(auth.clone())
        .and(json_body(SMALL_BODY))
        .and(st.clone())
        .and_then(organizations::publish_key);
    let orgs_key_revoke = v1
        .and(warp::path!("organizations" / OrgId / "keys" / String / "revoke"))
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(SMALL_BODY))
        .and(st.clone())
        .and_then(organizations::revoke_key);
    let orgs_keys = v1
        .and(warp::path!("organizations" / OrgId / "keys"))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(organizations::key_history);

    let users_create = v1
        .and(warp::path!("users"))
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(SMALL_BODY))
        .and(st.clone())
        .and_then(users::create);
    let users_list =
        v1.and(warp::path!("users")).and(warp::get()).and(auth.clone()).and(st.clone()).and_then(users::list);
    let users_me = v1.and(warp::path!("users" / "me")).and(warp::get()).and(auth.clone()).and_then(users::me);
    let users_delete = v1
        .and(warp::path!("users" / UserId))
        .and(warp::delete())
        .and(auth.clone())
        .and(st.clone())
        .and_then(users::delete);

    let users_set_role = v1
        .and(warp::path!("users" / UserId))
        .and(warp::patch())
        .and(auth.clone())
        .and(json_body(4096))
        .and(st.clone())
        .and_then(users::set_role);

    let collab_create = v1
        .and(warp::path!("collaborations"))
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(SMALL_BODY))
        .and(st.clone())
        .and_then(collaborations::create);
    let collab_list = v1
        .and(warp::path!("collaborations"))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(collaborations::list);
    let collab_get = v1
        .and(warp::path!("collaborations" / CollaborationId))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(collaborations::get);
    let collab_member_add = v1
        .and(warp::path!("collaborations" / CollaborationId / "organizations" / OrgId))
        .and(warp::put())
        .and(auth.clone())
        .and(st.clone())
        .and_then(|c, o, p, s| collaborations::set_member(c, o, p, s, true));
    let collab_member_remove = v1
        .and(warp::path!("collaborations" / CollaborationId / "organizations" / OrgId))
        .and(warp::delete())
        .and(auth.clone())
        .and(st.clone())
        .and_then(|c, o, p, s| collaborations::set_member(c, o, p, s, false));
    let collab_keys = v1
        .and(warp::path!("collaborations" / CollaborationId / "public-keys"))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(collaborations::public_keys);

    let nodes_create = v1
        .and(warp::path!("nodes"))
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(SMALL_BODY))
        .and(st.clone())
        .and_then(nodes::create);
    let nodes_list =
        v1.and(warp::path!("nodes")).and(warp::get()).and(auth.clone()).and(st.clone()).and_then(nodes::list);
    let nodes_get = v1
        .and(warp::path!("nodes" / NodeId))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(nodes::get);
    let nodes_delete = v1
        .and(warp::path!("nodes" / NodeId))
        .and(warp::delete())
        .and(auth.clone())
        .and(st.clone())
        .and_then(nodes::revoke);
    let enrollments_create = v1
        .and(warp::path!("organizations" / OrgId / "enrollments"))
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(4096))
        .and(st.clone())
        .and_then(enrollments::create);
    // The token is the only credential: no session, no API key.
    let enroll = v1
        .and(warp::path!("enroll"))
        .and(warp::post())
        .and(json_body(4096))
        .and(st.clone())
        .and_then(enrollments::enroll);
    let nodes_heartbeat = v1
        .and(warp::path!("node" / "heartbeat"))
        .and(warp::post())
        .and(auth.clone())
        .and(json_body(4096))
        .and(st.clone())
        .and_then(nodes::heartbeat);

    let tasks_create = v1
        .and(warp::path!("tasks"))
        .and(warp::post())
        .and(reserved_body(auth.clone(), state.clone()))
        .and(json_body(limit))
        .and(st.clone())
        .and_then(tasks::create);
    let tasks_list = v1
        .and(warp::path!("tasks"))
        .and(warp::get())
        .and(auth.clone())
        .and(query::<tasks::ListQuery>())
        .and(st.clone())
        .and_then(tasks::list);
    let tasks_get = v1
        .and(warp::path!("tasks" / TaskId))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(tasks::get);
    let tasks_kill = v1
        .and(warp::path!("tasks" / TaskId / "kill"))
        .and(warp::post())
        .and(auth.clone())
        .and(st.clone())
        .and_then(tasks::kill);
    let tasks_results = v1
        .and(warp::path!("tasks" / TaskId / "results"))
        .and(warp::get())
        .and(auth.clone())
        .and(query::<tasks::ResultsQuery>())
        .and(st.clone())
        .and_then(tasks::results);

    let dead_letters_list = v1
        .and(warp::path!("dead-letters"))
        .and(warp::get())
        .and(auth.clone())
        .and(query::<dead_letters::ListQuery>())
        .and(st.clone())
        .and_then(dead_letters::list);
    let log_key = v1
        .and(warp::path!("transparency" / "key"))
        .and(warp::get())
        .and(auth.clone())
        .and(st.clone())
        .and_then(transparency::key);
    let log_head = v1
        .and(warp::path!("transparency" / "tree-head"))
        .and(warp::get())
        .and(auth.clone())
        .and(query::<transparency::HeadQuery>())
        .and(st.clone())
        .and_then(transparency::tree_head);
    let log_inclusion = v1
        .and(warp::path!("transparency" / "proof" / "inclusion"))
        .and(warp::get())
        .and(auth.clone())
        .and(query::<transparency::InclusionQuery>())
        .and(st.clone())
        .and_then(transparency::inclusion);
    let log_consistency = v1
        .and(warp::path!("transparency" / "proof" / "consistency"))
        .and(warp::get())
        .and(auth.clone())
        .and(query::<transparency::ConsistencyQuery>())
        .and(st.clone())
        .and_then(transparency::consistency);
    let log_entries = v1
        .and(warp::path!("transparency" / "entries"))
        .and(warp::get())
        .and(auth.clone())
        .and(query::<transparency::EntriesQuery>())
        .and(st.clone())
        .and_then(transparency::entries);

    // Each route is boxed before combining: a long chain of unboxed `or` filters makes the
    // compiler's type checking explode.
    let all: Vec<BoxedRoute> = vec![
        login.boxed(),
        logout.boxed(),
        health.boxed(),
        openapi.boxed(),
        orgs_create.boxed(),
        orgs_list.boxed(),
        orgs_get.boxed(),
        orgs_key.boxed(),
        orgs_keys.boxed(),
        orgs_key_revoke.boxed(),
        users_create.boxed(),
        users_list.boxed(),
        users_me.boxed(),
        users_delete.boxed(),
        users_set_role.boxed(),
        collab_create.boxed(),
        collab_list.boxed(),
        collab_get.boxed(),
        collab_member_add.boxed(),
        collab_member_remove.boxed(),
        collab_keys.boxed(),
        nodes_create.boxed(),
        nodes_list.boxed(),
        nodes_get.boxed(),
        nodes_delete.boxed(),
        nodes_heartbeat.boxed(),
        enrollments_create.boxed(),
        enroll.boxed(),
        tasks_create.boxed(),
        tasks_list.boxed(),
        tasks_get.boxed(),
        tasks_kill.boxed(),
        tasks_results.boxed(),
        dead_letters_list.boxed(),
        log_key.boxed(),
        log_head.boxed(),
        log_inclusion.boxed(),
        log_consistency.boxed(),
        log_entries.boxed(),
    ];
    all.into_iter()
        .reduce(|a, b| a.or(b).unify().boxed())
        .expect("there are routes")
        .recover(error::recover)
        .unify()
        .with(warp::log::custom(move |info| access_log(&metrics, info)))
}

/// The API's routes, as `docs/openapi.json` lists them (a test checks that it lists exactly the
/// routes served): the only values of the request metrics' route label.
static ROUTES: std::sync::LazyLock<Routes> = std::sync::LazyLock::new(|| {
    let spec: serde_json::Value =
        serde_json::from_str(system::OPENAPI).expect("docs/openapi.json is valid JSON (checked by a test)");
    let paths = spec["paths"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    Routes::new(paths.into_iter().map(|p| format!("/api/v1{p}")))
});

/// One line per request. A node's heartbeat every few seconds is routine: it is logged only at
/// debug level unless it fails, so that it does not bury what an administrator looks for.
fn access_log(metrics: &crate::metrics::ServerMetrics, info: warp::log::Info<'_>) {
    let status = info.status();
    let (method, route) = (method_label(info.method().as_str()), ROUTES.label(info.path(), status.as_u16()));
    metrics.request(method, route, status.as_u16(), info.elapsed());
    let millis = format!("{:.1}", info.elapsed().as_secs_f64() * 1000.0);
    let (method, path) = (info.method(), info.path());
    let code = status.as_u16();
    // A health check answers 503 while the server is not ready yet: an answer, not a failure.
    if status.is_server_error() && !path.ends_with("/health") {
        tracing::warn!(%method, %path, status = code, %millis, "request failed");
    } else if status.is_success() && path.ends_with("/node/heartbeat") {
        tracing::debug!(%method, %path, status = code, %millis, "request");
    } else {
        tracing::info!(%method, %path, status = code, %millis, "request");
    }
}

#[cfg(test)]
mod tests {
    use super::{ROUTES, method_label};
    use crate::metrics::ServerMetrics;
    use std::time::Duration;

    fn series(metrics: &ServerMetrics) -> usize {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry()).unwrap();
        text.lines().filter(|l| l.starts_with("fedq_http_request")).count()
    }

    /// Random methods and random short segments in every route (ids, fingerprints) add no
    /// series: the labels come from the routes served, not from the request.
    #[test]
    fn random_requests_add_no_series() {
        let metrics = ServerMetrics::new();
        let mut bytes = vec![0u8; 100_000 * 8];
        getrandom::fill(&mut bytes).unwrap();
        let record = |i: usize| {
            let r = &bytes[i * 8..i * 8 + 8];
            let word = hex::encode(&r[..3]);
            let method = ["GET", "POST", "DELETE", "PATCH"][r[3] as usize % 4].to_owned();
            let method = if r[4].is_multiple_of(3) { word.to_uppercase() } else { method };
            let path = match r[5] % 4 {
                0 => format!("/api/v1/organizations/{word}/keys/{word}/revoke"),
                1 => format!("/api/v1/tasks/{word}/results"),
                2 => format!("/api/v1/{word}"),
                _ => format!("/api/v1/tasks/{word}/{word}"),
            };
            let status = [200, 400, 401, 403, 404][r[6] as usize % 5];
            metrics.request(method_label(&method), ROUTES.label(&path, status), status, Duration::ZERO);
        };
        // Every combination of method, route and status drawn here is likely above 1/120, so
        // the first 10,000 requests have made every series these can make.
        for i in 0..10_000 {
            record(i);
        }
        let warm = series(&metrics);
        for i in 10_000..100_000 {
            record(i);
        }
        assert_eq!(series(&metrics), warm, "random requests grew the series");
        assert!(warm < 2_000, "{warm} series");
    }
}
