//! A cookie-carrying HTTP client of the admin dashboard: logs in through the form (with its
//! double-submit token), reads pages, posts forms with or without the CSRF token.

use fedq::ids::{CollaborationId, OrgId, RunId, TaskId};
use fedq::keys::Identity;
use fedq::protocol::Kind;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::json;

use super::{TestApp, job_entry, route};

pub struct Dash {
    base: String,
    http: reqwest::Client,
    pub session: Option<String>,
}

/// The value of cookie `name` among a response's `Set-Cookie` headers, with its attributes.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (pair, attributes) = v.split_once(';').unwrap_or((v, ""));
        let (k, value) = pair.split_once('=')?;
        (k == name).then(|| (value.to_owned(), attributes.to_owned()))
    })
}

/// The `value` of the hidden `csrf` input of a page.
pub fn csrf_field(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_owned())
}

impl Dash {
    pub fn new(app: &TestApp) -> Self {
        let http = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        Self { base: format!("http://{}", app.addr), http, session: None }
    }

    /// Logs in through the form; returns the final response's status (303 on success).
    pub async fn login(&mut self, user: &str, password: &str) -> (StatusCode, String) {
        let form = self.http.get(format!("{}/admin/login", self.base)).send().await.unwrap();
        let (login_cookie, _) = set_cookie(&form, "fedq_login").expect("the login page sets its cookie");
        let token = csrf_field(&form.text().await.unwrap()).expect("the login form has a token");
        let response = self
            .http
            .post(format!("{}/admin/login", self.base))
            .header("cookie", format!("fedq_login={login_cookie}"))
            .form(&[("username", user), ("password", password), ("csrf", &token)])
            .send()
            .await
            .unwrap();
        if let Some((session, _)) = set_cookie(&response, "fedq_admin") {
            self.session = Some(session);
        }
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    fn cookie(&self) -> String {
        self.session.as_ref().map(|s| format!("fedq_admin={s}")).unwrap_or_default()
    }

    /// GET a dashboard path; status, `Location` and body.
    pub async fn get(&self, path: &str) -> (StatusCode, Option<String>, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie())
            .send()
            .await
            .unwrap();
        let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        (response.status(), location, response.text().await.unwrap())
    }

    /// The CSRF token of this session, read off a page.
    pub async fn csrf(&self) -> String {
        let (status, _, body) = self.get("/admin").await;
        assert_eq!(status, 200, "{body}");
        csrf_field(&body).expect("pages carry the session's CSRF token")
    }

    /// POST a form, with extra headers.
    pub async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request =
            self.http.post(format!("{}{path}", self.base)).header("cookie", self.cookie()).form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }
}

/// Creates a task from `creator` with a job at each of `orgs`; nobody consumes the jobs, so they
/// stay pending until killed.
pub async fn pending_task(
    app: &TestApp,
    researcher: &str,
    creator: &Identity,
    collaboration: CollaborationId,
    orgs: &[&Identity],
    name: &str,
) -> TaskId {
    let (task, run) = (TaskId::new(), RunId::new());
    let r = route(Kind::JobStart, collaboration, task, run);
    let all: Vec<OrgId> = orgs.iter().map(|o| o.org()).collect();
    let jobs: Vec<_> =
        orgs.iter().map(|o| job_entry(creator, o.org(), o.current().public(), &r, b"x", &all).1).collect();
    let body = json!({"id": task, "run": run, "collaboration": collaboration, "image": "fedq/probe:0.1.0",
                      "name": name, "jobs": jobs});
    let (status, created) = app.call("POST", "/tasks", Some(researcher), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    task
}
