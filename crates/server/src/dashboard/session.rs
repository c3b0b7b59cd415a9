//! Dashboard sessions: the API's login sessions, carried in an `HttpOnly; SameSite=Strict;
//! Secure` cookie instead of a bearer header, and CSRF protection for every form.
//!
//! CSRF has three layers: `SameSite=Strict` keeps the cookie off cross-site requests; a request
//! with an `Origin` header from another host is refused; and every form carries a token derived
//! from the session secret (SHA-256 under a label), which a page from another site cannot read.
//! The login form, which has no session yet, uses a random token in a short-lived cookie
//! (double submit), so another site cannot log a browser in under its own account.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::html;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use warp::Filter;
use warp::http::StatusCode;

use super::view::{self, Nav};
use crate::app::{AppError, ErrorCode, State, logins};
use crate::db::users::Role;
use crate::http::with_state;

pub use super::admin::Admin;

/// What a dashboard handler answers.
type Response = Result<warp::reply::Response, warp::Rejection>;

/// The session cookie.
pub const SESSION_COOKIE: &str = "fedq_admin";
/// The login form's double-submit cookie.
const LOGIN_COOKIE: &str = "fedq_login";
/// Largest form body accepted.
const FORM_LIMIT: u64 = 16 * 1024;

/// No valid session: the dashboard answers with the login page.
#[derive(Debug)]
pub struct LoginRequired;

impl warp::reject::Reject for LoginRequired {}

/// The CSRF token of a session: bound to its secret, unguessable without it, stable for its life.
fn csrf_of(session_token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"fedq dashboard csrf v1\0");
    hash.update(session_token.as_bytes());
    URL_SAFE_NO_PAD.encode(hash.finalize())
}

/// Compares without an early exit, so timing does not tell how much of a token was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The logged-in administrator, or a rejection: `LoginRequired` without a live session,
/// `forbidden` for users who are not administrators.
pub fn admin(state: State) -> impl Filter<Extract = (Admin,), Error = warp::Rejection> + Clone {
    warp::cookie::optional::<String>(SESSION_COOKIE).and(with_state(state)).and_then(
        |cookie: Option<String>, state: State| async move {
            let token = cookie.ok_or_else(|| warp::reject::custom(LoginRequired))?;
            let user = logins::session_user(&state, &token)
                .await?
                .ok_or_else(|| warp::reject::custom(LoginRequired))?;
            if !matches!(user.role, Role::Root | Role::OrgAdmin) {
                return Err(warp::reject::custom(not_an_administrator()));
            }
            Ok::<_, warp::Rejection>(Admin::new(user, csrf_of(&token)))
        },
    )
}

fn not_an_administrator() -> AppError {
    AppError::forbidden(
        "the dashboard is for root and organization administrators; researchers use the fedq command line or the API",
    )
}

/// An administrator for a state-changing request: a URL-encoded form whose `csrf` field matches
/// the session's token, from a page of this server.
pub fn action(state: State) -> impl Filter<Extract = (Admin,), Error = warp::Rejection> + Clone {
    action_with_form(state).map(|admin, _form| admin)
}

/// As [`action`], with the form's fields for the handler.
pub fn action_with_form(
    state: State,
) -> impl Filter<Extract = (Admin, HashMap<String, String>), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("origin")
        .and(warp::header::optional::<String>("host"))
        .and(warp::body::content_length_limit(FORM_LIMIT))
        .and(warp::body::form::<HashMap<String, String>>())
        .and(admin(state))
        .and_then(
            |origin: Option<String>, host: Option<String>, form: HashMap<String, String>, admin: Admin| async move {
                same_origin(origin.as_deref(), host.as_deref())?;
                match form.get("csrf") {
                    Some(token) if same(token, admin.csrf()) => Ok((admin, form)),
                    _ => Err(warp::reject::custom(AppError::forbidden(
                        "this form's CSRF token is missing or wrong; reload the page and try again",
                    ))),
                }
            },
        )
        .untuple_one()
}

/// Refuses a request whose `Origin` names another host than the one it was sent to.
fn same_origin(origin: Option<&str>, host: Option<&str>) -> Result<(), warp::Rejection> {
    let Some(origin) = origin else { return Ok(()) };
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(warp::reject::custom(AppError::forbidden("a request from another site was refused"))),
    }
}

fn cookie(state: &State, name: &str, value: &str, path: &str, max_age: u64) -> String {
    let secure = if state.config.http.secure_cookies { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

fn set_cookie(response: &mut warp::reply::Response, value: &str) {
    if let Ok(value) = warp::http::HeaderValue::from_str(value) {
        response.headers_mut().append(warp::http::header::SET_COOKIE, value);
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The login form, with a fresh double-submit token.
fn login_form(state: &State, status: StatusCode, error: Option<&str>) -> warp::reply::Response {
    let token = random_token();
    let body = html! {
        form.login method="post" action="/admin/login" {
            @if let Some(error) = error { p.error role="alert" { (error) } }
            input type="hidden" name="csrf" value=(token);
            label { "User name" input name="username" autocomplete="username" required autofocus; }
            label { "Password" input name="password" type="password" autocomplete="current-password" required; }
            button type="submit" { "Log in" }
            p.muted { "For root and organization administrators. Sessions end after "
                (state.config.auth.session_ttl_secs / 3600) " hours." }
        }
    };
    let mut response = view::respond(status, view::page("Log in", None, Nav::None, body));
    set_cookie(&mut response, &cookie(state, LOGIN_COOKIE, &token, "/admin/login", 600));
    response
}

/// `GET /admin/login`.
pub async fn login_page(state: State) -> Response {
    Ok(login_form(&state, StatusCode::OK, None))
}

/// `POST /admin/login`: checks the double-submit token, the password and the role, then sets
/// the session cookie.
pub async fn login(
    login_cookie: Option<String>,
    form: HashMap<String, String>,
    source: Option<std::net::IpAddr>,
    state: State,
) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    match login_cookie {
        Some(expected) if same(field("csrf"), &expected) => {}
        _ => {
            return Ok(login_form(
                &state,
                StatusCode::FORBIDDEN,
                Some("The login form expired or came from another site; try again."),
            ));
        }
    }
    let password = SecretString::from(field("password").to_owned());
    let user = match logins::verify_credentials(&state, field("username"), &password, source).await {
        Ok(user) => user,
        Err(e) if e.code == ErrorCode::BadCredentials => {
            return Ok(login_form(&state, StatusCode::UNAUTHORIZED, Some("Wrong user name or password.")));
        }
        Err(e) if e.code == ErrorCode::TooManyAttempts => {
            return Ok(login_form(&state, StatusCode::TOO_MANY_REQUESTS, Some(&format!("{}.", e.message))));
        }
        Err(e) => return Err(e.into()),
    };
    if !matches!(user.role, Role::Root | Role::OrgAdmin) {
        tracing::info!(username = %user.username, "dashboard login refused: not an administrator");
        return Ok(login_form(&state, StatusCode::FORBIDDEN, Some(&not_an_administrator().message)));
    }
    let (token, _) = logins::create_session(&state, &user).await?;
    tracing::info!(username = %user.username, "dashboard login");
    let mut response = view::redirect("/admin");
    let ttl = state.config.auth.session_ttl_secs;
    set_cookie(&mut response, &cookie(&state, SESSION_COOKIE, token.expose_secret(), "/admin", ttl));
    set_cookie(&mut response, &cookie(&state, LOGIN_COOKIE, "", "/admin/login", 0));
    Ok(response)
}

/// `POST /admin/logout`: ends the session and clears the cookie.
pub async fn logout(session: Option<String>, _admin: Admin, state: State) -> Response {
    if let Some(token) = session {
        logins::end_session(&state, &token).await?;
    }
    let mut response = view::redirect("/admin/login");
    set_cookie(&mut response, &cookie(&state, SESSION_COOKIE, "", "/admin", 0));
    Ok(response)
}

/// The login form's cookie, for `POST /admin/login`.
pub fn login_cookie() -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::cookie::optional::<String>(LOGIN_COOKIE)
}

/// A URL-encoded form body of bounded size.
pub fn form() -> impl Filter<Extract = (HashMap<String, String>,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(FORM_LIMIT).and(warp::body::form::<HashMap<String, String>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        let a = csrf_of("fedq_u_one");
        assert_eq!(a, csrf_of("fedq_u_one"));
        assert_ne!(a, csrf_of("fedq_u_two"));
        assert!(!a.contains("fedq_u_one"));
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(!same("", "a"));
    }

    #[test]
    fn origins_of_other_hosts_are_refused() {
        assert!(same_origin(None, Some("localhost:8080")).is_ok());
        assert!(same_origin(Some("http://localhost:8080"), Some("localhost:8080")).is_ok());
        assert!(same_origin(Some("http://127.0.0.1:9"), Some("localhost:8080")).is_err());
        assert!(same_origin(Some("null"), Some("localhost:8080")).is_err());
        assert!(same_origin(Some("http://localhost:8080"), None).is_err());
    }
}
