//! The page layout and the small pieces every page uses: times, status badges, organization
//! names, pagination. Markup is built with `maud`, so it is checked at compile time and every
//! interpolated value is HTML-escaped.

use std::collections::HashMap;
use std::time::SystemTime;

use maud::{DOCTYPE, Markup, html};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use warp::Reply as _;
use warp::http::StatusCode;

use super::admin::Admin;
use crate::ids::OrgId;

/// The pages in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/admin`.
    Overview,
    /// `/admin/tasks`.
    Tasks,
    /// `/admin/organizations`.
    Organizations,
    /// `/admin/dead-letters`.
    DeadLetters,
    /// `/admin/routing`.
    Routing,
    /// Pages outside the navigation (login, errors).
    None,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Overview, "/admin", "Overview"),
    (Nav::Tasks, "/admin/tasks", "Tasks"),
    (Nav::Organizations, "/admin/organizations", "Organizations & nodes"),
    (Nav::DeadLetters, "/admin/dead-letters", "Dead letters"),
    (Nav::Routing, "/admin/routing", "Routing log"),
];

/// A full page: navigation for a logged-in administrator, then `body`.
pub fn page(title: &str, admin: Option<&Admin>, active: Nav, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · fedq" }
                link rel="stylesheet" href="/admin/static/style.css";
                script src="/admin/static/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/admin" { "fedq" }
                    @if let Some(admin) = admin {
                        nav {
                            @for (nav, href, label) in NAV {
                                a href=(href) class=[(nav == active).then_some("active")] { (label) }
                            }
                        }
                        div.who {
                            span.user { (admin.user.username) }
                            span.role { (admin.role_label()) }
                            form method="post" action="/admin/logout" {
                                input type="hidden" name="csrf" value=(admin.csrf());
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An HTML response.
pub fn respond(status: StatusCode, markup: Markup) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::html(markup.into_string()), status).into_response()
}

/// A `303 See Other` to `location`, the answer to a form post.
pub fn redirect(location: &str) -> warp::reply::Response {
    let mut response = warp::reply::with_status(warp::reply(), StatusCode::SEE_OTHER).into_response();
    if let Ok(value) = warp::http::HeaderValue::from_str(location) {
        response.headers_mut().insert(warp::http::header::LOCATION, value);
    }
    response
}

/// How long ago, for people: `4 s`, `12 min`, `3 h`, `2 d`.
pub fn ago(t: SystemTime) -> String {
    let secs = SystemTime::now().duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86400),
    }
}

/// A time: relative, with the exact UTC time as tooltip.
pub fn when(t: SystemTime) -> Markup {
    let exact = humantime::format_rfc3339_seconds(t).to_string();
    html! { time datetime=(exact) title=(exact) { (ago(t)) } }
}

/// An optional time, `–` when absent.
pub fn when_opt(t: Option<SystemTime>) -> Markup {
    match t {
        Some(t) => when(t),
        None => html! { span.muted { "–" } },
    }
}

/// A duration between two times, `–` unless both are known.
pub fn between(from: Option<SystemTime>, to: Option<SystemTime>) -> Markup {
    match (from, to) {
        (Some(a), Some(b)) => {
            let ms = b.duration_since(a).map(|d| d.as_millis()).unwrap_or(0);
            if ms < 10_000 {
                html! { (ms) " ms" }
            } else {
                html! { (format!("{:.1}", ms as f64 / 1000.0)) " s" }
            }
        }
        _ => html! { span.muted { "–" } },
    }
}

/// A status as a coloured badge.
pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge s-" (status) } { (status) } }
}

/// The first eight characters of an identifier, with the whole as tooltip.
pub fn short(id: &impl ToString) -> Markup {
    let id = id.to_string();
    html! { code title=(id) { (id.get(..8).unwrap_or(&id)) } }
}

/// A key fingerprint as everywhere else (`SHA256:…`, one word to copy), in a monospace element
/// that wraps anywhere so that it fits narrow screens.
pub fn fingerprint(text: &str) -> Markup {
    html! { code.fingerprint { (text) } }
}

/// A size in bytes, for people.
pub fn bytes(n: i64) -> String {
    match n {
        ..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// Organization names by id, for showing names instead of identifiers.
#[derive(Debug, Default)]
pub struct Names(pub HashMap<OrgId, String>);

impl Names {
    /// An organization's name, or its short id if the caller may not see it.
    pub fn org(&self, id: OrgId) -> Markup {
        match self.0.get(&id) {
            Some(name) => html! { span.org title=(id) { (name) } },
            None => short(&id),
        }
    }

    /// The `<option>`s of an organization filter, by name.
    pub fn options(&self, current: &str) -> Markup {
        let mut sorted: Vec<_> = self.0.iter().collect();
        sorted.sort_by(|a, b| a.1.cmp(b.1));
        html! { @for (id, name) in sorted { (option(&id.to_string(), name, current)) } }
    }

    /// As [`Names::org`], for an optional organization.
    pub fn org_opt(&self, id: Option<OrgId>) -> Markup {
        match id {
            Some(id) => self.org(id),
            None => html! { span.muted { "–" } },
        }
    }
}

/// A query string from the pairs whose value is not empty.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// Rows per page of every list.
pub const PAGE_SIZE: i64 = 50;

/// Previous and next links; `filters` are the list's query pairs without the page.
pub fn pager(base: &str, filters: &[(&str, &str)], page: i64, has_next: bool) -> Markup {
    let link = |p: i64| {
        let p = p.to_string();
        let mut pairs = filters.to_vec();
        pairs.push(("page", &p));
        format!("{base}{}", query(&pairs))
    };
    html! {
        nav.pager {
            @if page > 1 { a rel="prev" href=(link(page - 1)) { "← newer" } }
            span { "page " (page) }
            @if has_next { a rel="next" href=(link(page + 1)) { "older →" } }
        }
    }
}

/// An `<option>` of a filter's `<select>`.
pub fn option(value: &str, label: &str, current: &str) -> Markup {
    html! { option value=(value) selected[value == current] { (label) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let names = Names([(OrgId::new(), "<script>alert(1)</script>".to_owned())].into_iter().collect());
        let id = *names.0.keys().next().unwrap();
        let out = names.org(id).into_string();
        assert!(!out.contains("<script>"), "{out}");
        assert!(out.contains("&lt;script&gt;"), "{out}");
    }

    #[test]
    fn query_strings_skip_empty_values_and_encode() {
        assert_eq!(query(&[("a", ""), ("b", "x y&z")]), "?b=x%20y%26z");
        assert_eq!(query(&[("a", "")]), "");
    }

    #[test]
    fn fingerprints_are_shown_as_everywhere_else() {
        let text = "SHA256:0123456789abcdef";
        assert_eq!(fingerprint(text).into_string(), format!("<code class=\"fingerprint\">{text}</code>"));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(3 * 1_048_576), "3.0 MiB");
    }
}
