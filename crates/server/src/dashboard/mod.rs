//! The admin dashboard, `/admin`: server-rendered HTML for root and organization administrators,
//! behind the API's logins (in a cookie) with CSRF protection on every form. A stylesheet and a
//! few lines of JavaScript (live refresh, confirmations) are compiled into the binary: nothing is
//! fetched from elsewhere, and the Content-Security-Policy forbids it.
//!
//! What an organization administrator sees is decided by `Admin::scope`, passed to every query.

pub mod admin;
mod pages;
pub mod session;
mod view;

use maud::html;
use warp::Filter;
use warp::http::{HeaderValue, header};

use crate::app::State;
use crate::http::{self, with_state};
use crate::ids::{NodeId, OrgId, TaskId};
use session::{LoginRequired, admin};
use view::Nav;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// A route, type-erased (long chains of unboxed filters make type checking explode).
type Route = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// Every route under `/admin`. Errors inside are rendered as HTML pages; requests outside
/// `/admin` pass through to the API.
pub fn routes(state: State) -> Route {
    let st = with_state(state.clone());
    let admin = admin(state.clone());
    let action = session::action(state.clone());

    let overview = warp::path::end()
        .and(warp::get())
        .and(admin.clone())
        .and(st.clone())
        .and_then(|a, s| run(pages::overview::page(a, s)));
    let live = warp::path!("live")
        .and(warp::get())
        .and(admin.clone())
        .and(st.clone())
        .and_then(|a, s| run(pages::overview::live(a, s)));
    let login_page = warp::path!("login").and(warp::get()).and(st.clone()).and_then(session::login_page);
    let login = warp::path!("login")
        .and(warp::post())
        .and(session::login_cookie())
        .and(session::form())
        .and(http::client_address(state.clone()))
        .and(st.clone())
        .and_then(session::login);
    let logout = warp::path!("logout")
        .and(warp::post())
        .and(warp::cookie::optional::<String>(session::SESSION_COOKIE))
        .and(action.clone())
        .and(st.clone())
        .and_then(session::logout);
    let tasks = warp::path!("tasks")
        .and(warp::get())
        .and(admin.clone())
        .and(http::query::<pages::tasks::ListQuery>())
        .and(st.clone())
        .and_then(|a, q, s| run(pages::tasks::list(a, q, s)));
    let task = warp::path!("tasks" / TaskId)
        .and(warp::get())
        .and(admin.clone())
        .and(st.clone())
        .and_then(|id, a, s| run(pages::tasks::show(id, a, s)));
    let kill = warp::path!("tasks" / TaskId / "kill")
        .and(warp::post())
        .and(action.clone())
        .and(st.clone())
        .and_then(|id, a, s| run(pages::tasks::kill(id, a, s)));
    let organizations = warp::path!("organizations")
        .and(warp::get())
        .and(admin.clone())
        .and(st.clone())
        .and_then(|a, s| run(pages::organizations::page(a, s)));
    let revoke = warp::path!("nodes" / NodeId / "revoke")
        .and(warp::post())
        .and(action.clone())
        .and(st.clone())
        .and_then(|id, a, s| run(pages::organizations::revoke(id, a, s)));
    let enroll = warp::path!("organizations" / OrgId / "enrollments")
        .and(warp::post())
        .and(session::action_with_form(state.clone()))
        .and(st.clone())
        .and_then(|org, a, f, s| run(pages::organizations::enroll(org, a, f, s)));
    let dead_letters = warp::path!("dead-letters")
        .and(warp::get())
        .and(admin.clone())
        .and(http::query::<pages::dead_letters::Query>())
        .and(st.clone())
        .and_then(|a, q, s| run(pages::dead_letters::page(a, q, s)));
    let routing = warp::path!("routing")
        .and(warp::get())
        .and(admin.clone())
        .and(http::query::<pages::routing::Query>())
        .and(st.clone())
        .and_then(|a, q, s| run(pages::routing::page(a, q, s)));
    let style =
        warp::path!("static" / "style.css").and(warp::get()).map(|| asset(STYLE, "text/css; charset=utf-8"));
    let script = warp::path!("static" / "app.js")
        .and(warp::get())
        .map(|| asset(SCRIPT, "text/javascript; charset=utf-8"));

    let all: Vec<Route> = vec![
        overview.boxed(),
        live.boxed(),
        login_page.boxed(),
        login.boxed(),
        logout.boxed(),
        tasks.boxed(),
        task.boxed(),
        kill.boxed(),
        organizations.boxed(),
        revoke.boxed(),
        enroll.boxed(),
        dead_letters.boxed(),
        routing.boxed(),
        style.boxed(),
        script.boxed(),
    ];
    let inner = all
        .into_iter()
        .reduce(|a, b| a.or(b).unify().boxed())
        .expect("there are routes")
        .recover(recover)
        .unify()
        .map(secure);
    warp::path("admin").and(inner).boxed()
}

/// A page handler's result as a warp answer.
async fn run(page: impl Future<Output = pages::Page>) -> Result<warp::reply::Response, warp::Rejection> {
    page.await.map_err(warp::reject::custom)
}

fn asset(body: &'static str, content_type: &'static str) -> warp::reply::Response {
    let mut response = warp::http::Response::new(body.into());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Headers on every dashboard response: nothing from elsewhere, no framing, no caching of pages
/// that show the federation's state.
fn secure(mut response: warp::reply::Response) -> warp::reply::Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Renders a rejection as an HTML page: the login page's address when there is no session,
/// otherwise the application's error (status, code, message) in the dashboard's layout.
async fn recover(rejection: warp::Rejection) -> Result<warp::reply::Response, std::convert::Infallible> {
    if rejection.find::<LoginRequired>().is_some() {
        return Ok(view::redirect("/admin/login"));
    }
    let e = http::classify(&rejection);
    let body = html! {
        p.error role="alert" { (e.message) }
        p.muted { "Error code " code { (e.code) } ". " a href="/admin" { "Back to the overview" } }
    };
    let title = e.status().canonical_reason().unwrap_or("Error");
    Ok(view::respond(e.status(), view::page(title, None, Nav::None, body)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_script_and_stylesheet_load_nothing_from_elsewhere() {
        for asset in [super::STYLE, super::SCRIPT] {
            assert!(!asset.contains("http://") && !asset.contains("https://") && !asset.contains("//cdn"));
        }
    }

    #[test]
    fn error_statuses_have_titles() {
        assert_eq!(warp::http::StatusCode::FORBIDDEN.canonical_reason(), Some("Forbidden"));
    }
}
