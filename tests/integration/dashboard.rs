//! The admin dashboard over HTTP against a real server, PostgreSQL and RabbitMQ: who may open
//! it, what an organization administrator sees, CSRF protection of every action, and the
//! security attributes of its cookies and headers. (The browser tests are in
//! `dashboard_browser.rs`.)

use crate::support;

use reqwest::StatusCode;
use support::dashboard::{Dash, pending_task, set_cookie};
use support::{ROOT_PASSWORD, spawn_app};

const PASSWORD: &str = "a-long-password-123";

#[tokio::test]
async fn without_a_session_every_page_leads_to_the_login_page() {
    let app = spawn_app().await;
    let dash = Dash::new(&app);
    for path in [
        "/admin",
        "/admin/live",
        "/admin/tasks",
        "/admin/organizations",
        "/admin/dead-letters",
        "/admin/routing",
    ] {
        let (status, location, _) = dash.get(path).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location.as_deref(), Some("/admin/login"), "{path}");
    }
    let (status, _) = dash.post("/admin/logout", &[("csrf", "x")], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "an action without a session goes to the login page too");
    // The API is untouched by the dashboard's routes.
    let (status, _) = app.call("GET", "/organizations", None, None).await;
    assert_eq!(status, 401);
    app.cleanup().await;
}

#[tokio::test]
async fn login_sets_a_protected_cookie_and_pages_forbid_framing_and_foreign_content() {
    let app = spawn_app().await;
    let mut dash = Dash::new(&app);
    let (status, body) = dash.login("root", "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Wrong user name or password"), "{body}");
    assert!(dash.session.is_none());

    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let form = http.get(format!("http://{}/admin/login", app.addr)).send().await.unwrap();
    let (login_token, attrs) = set_cookie(&form, "fedq_login").unwrap();
    assert!(
        attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict") && attrs.contains("Secure"),
        "{attrs}"
    );
    let response = http
        .post(format!("http://{}/admin/login", app.addr))
        .header("cookie", format!("fedq_login={login_token}"))
        .form(&[("username", "root"), ("password", ROOT_PASSWORD), ("csrf", &login_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (session, attrs) = set_cookie(&response, "fedq_admin").expect("a session cookie");
    assert!(session.starts_with("fedq_u_"));
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/admin"] {
        assert!(attrs.contains(attribute), "{attribute} missing from {attrs}");
    }

    // The login form's token must come back in its cookie: another site cannot post it.
    let forged = http
        .post(format!("http://{}/admin/login", app.addr))
        .form(&[("username", "root"), ("password", ROOT_PASSWORD), ("csrf", &login_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(&forged, "fedq_admin").is_none());

    let page = http
        .get(format!("http://{}/admin", app.addr))
        .header("cookie", format!("fedq_admin={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(!html.contains("https://") && !html.contains("http://"), "the page loads nothing from elsewhere");
    app.cleanup().await;
}

#[tokio::test]
async fn researchers_and_viewers_cannot_open_the_dashboard() {
    let app = spawn_app().await;
    let a = app.org("a").await;
    let researcher_token = app.user(a.org(), "rita", "researcher").await;
    app.user(a.org(), "vic", "viewer").await;
    for user in ["rita", "vic"] {
        let mut dash = Dash::new(&app);
        let (status, body) = dash.login(user, PASSWORD).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{user}");
        assert!(body.contains("the dashboard is for root and organization administrators"), "{body}");
        assert!(dash.session.is_none(), "no session cookie for {user}");
    }
    // A researcher's API token placed in the cookie by hand is refused too.
    let mut dash = Dash::new(&app);
    dash.session = Some(researcher_token);
    let (status, _, body) = dash.get("/admin").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, _) = dash.get("/admin/tasks").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.cleanup().await;
}

#[tokio::test]
async fn an_organization_administrator_sees_only_their_organization() {
    let app = spawn_app().await;
    let a = app.org("alpha-registry").await;
    let b = app.org("beta-registry").await;
    let c = app.org("gamma-registry").await;
    let ab = app.collaboration("alpha-beta", &[a.org(), b.org()]).await;
    let bc = app.collaboration("beta-gamma", &[b.org(), c.org()]).await;
    let rb = app.user(b.org(), "bea", "researcher").await;
    let shared = pending_task(&app, &rb, &b, ab, &[&a, &b], "shared-with-alpha").await;
    let hidden = pending_task(&app, &rb, &b, bc, &[&b, &c], "beta-gamma-only").await;
    let node_a = app.node(a.org(), "alpha-node").await;
    let node_c = app.node(c.org(), "gamma-node").await;
    app.user(a.org(), "alma", "org_admin").await;

    let mut dash = Dash::new(&app);
    assert_eq!(dash.login("alma", PASSWORD).await.0, StatusCode::SEE_OTHER);

    let (status, _, tasks) = dash.get("/admin/tasks").await;
    assert_eq!(status, 200);
    assert!(tasks.contains("shared-with-alpha"), "a task of alpha's collaboration is listed");
    assert!(!tasks.contains("beta-gamma-only"), "a task of another collaboration is not");
    let (status, _, _) = dash.get(&format!("/admin/tasks/{shared}")).await;
    assert_eq!(status, 200);
    let (status, _, body) = dash.get(&format!("/admin/tasks/{hidden}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another collaboration's task does not exist for alma: {body}");
    assert!(!body.contains("beta-gamma-only"));

    let (_, _, orgs) = dash.get("/admin/organizations").await;
    assert!(orgs.contains("alpha-node"));
    assert!(!orgs.contains("gamma-node") && !orgs.contains("gamma-registry"), "gamma is invisible");
    assert!(!orgs.contains("beta-registry\u{20}<small>"), "partners' sections are not shown");
    let (_, _, overview) = dash.get("/admin").await;
    assert!(overview.contains("alpha-node") && !overview.contains("gamma-node"));
    assert!(!overview.contains(&format!("fedq.org.{}", c.org())), "other organizations' queues are hidden");
    assert!(overview.contains(&format!("fedq.org.{}", a.org())), "alpha's own queue is shown");
    let (_, _, routing) = dash.get(&format!("/admin/routing?task={hidden}")).await;
    assert!(
        !routing.contains(&format!("href=\"/admin/tasks/{hidden}\"")),
        "another collaboration's routing is hidden"
    );
    let (_, _, routing) = dash.get(&format!("/admin/routing?task={shared}")).await;
    assert!(routing.contains(&format!("href=\"/admin/tasks/{shared}\"")), "alpha's own routing is shown");

    // Actions on what alma cannot see are refused even with a valid CSRF token.
    let csrf = dash.csrf().await;
    let node_c_id = node_c["node"]["id"].as_str().unwrap().to_owned();
    let (status, _) = dash.post(&format!("/admin/nodes/{node_c_id}/revoke"), &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = dash.post(&format!("/admin/tasks/{hidden}/kill"), &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Alma may not kill beta's task either, though she can see it.
    let (status, _) = dash.post(&format!("/admin/tasks/{shared}/kill"), &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let sql = app.sql().await;
    let live: i64 =
        sql.query_one("SELECT count(*) FROM nodes WHERE revoked_at IS NULL", &[]).await.unwrap().get(0);
    assert_eq!(live, 2, "no node was revoked");
    let killed: i64 =
        sql.query_one("SELECT count(*) FROM jobs WHERE status = 'killed'", &[]).await.unwrap().get(0);
    assert_eq!(killed, 0, "no job was killed");

    // Her own node she may revoke.
    let node_a_id = node_a["node"]["id"].as_str().unwrap().to_owned();
    let (status, _) = dash.post(&format!("/admin/nodes/{node_a_id}/revoke"), &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let revoked: i64 =
        sql.query_one("SELECT count(*) FROM nodes WHERE revoked_at IS NOT NULL", &[]).await.unwrap().get(0);
    assert_eq!(revoked, 1);

    // She creates an enrollment token for a new node of her organization, not of another.
    let (status, body) = dash
        .post(
            &format!("/admin/organizations/{}/enrollments", a.org()),
            &[("csrf", &csrf), ("node_name", "alpha-2")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body.split("fedq_e_").nth(1).and_then(|t| t.split('<').next()).map(|t| format!("fedq_e_{t}"));
    let token = token.unwrap_or_else(|| panic!("the token is shown: {body}"));
    let (status, enrolled) =
        app.call("POST", "/enroll", None, Some(serde_json::json!({"token": token}))).await;
    assert_eq!(status, 201, "{enrolled}");
    assert_eq!(enrolled["node"]["name"], "alpha-2");
    let (status, _) = dash
        .post(
            &format!("/admin/organizations/{}/enrollments", c.org()),
            &[("csrf", &csrf), ("node_name", "x")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = dash
        .post(
            &format!("/admin/organizations/{}/enrollments", a.org()),
            &[("csrf", &csrf), ("node_name", "bad name")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Root sees everything.
    let mut root = Dash::new(&app);
    root.login("root", ROOT_PASSWORD).await;
    let (_, _, tasks) = root.get("/admin/tasks").await;
    assert!(tasks.contains("shared-with-alpha") && tasks.contains("beta-gamma-only"));
    let (_, _, orgs) = root.get("/admin/organizations").await;
    assert!(orgs.contains("gamma-node") && orgs.contains("alpha-node"));
    app.cleanup().await;
}

#[tokio::test]
async fn actions_without_the_csrf_token_are_refused() {
    let app = spawn_app().await;
    let a = app.org("a").await;
    let b = app.org("b").await;
    let ab = app.collaboration("ab", &[a.org(), b.org()]).await;
    let ra = app.user(a.org(), "ada", "researcher").await;
    let task = pending_task(&app, &ra, &a, ab, &[&a, &b], "to-kill").await;
    let mut dash = Dash::new(&app);
    assert_eq!(dash.login("root", ROOT_PASSWORD).await.0, StatusCode::SEE_OTHER);
    let csrf = dash.csrf().await;
    let kill = format!("/admin/tasks/{task}/kill");

    let (status, body) = dash.post(&kill, &[("note", "no token")], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("CSRF token is missing or wrong"), "{body}");
    let (status, _) = dash.post(&kill, &[("csrf", "not-the-token")], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = dash.post(&kill, &[("csrf", &csrf)], Some("http://127.0.0.1:9")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a cross-site post is refused even with the token: {body}");
    let (status, _) = dash.post("/admin/logout", &[("note", "no token")], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "logout is an action too");

    let sql = app.sql().await;
    let killed = |sql: tokio_postgres::Client| async move {
        sql.query_one("SELECT count(*) FROM jobs WHERE status = 'killed' AND task_id = $1", &[task.as_uuid()])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(killed(sql).await, 0, "nothing was killed by the refused posts");

    let (status, _) = dash.post(&kill, &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(killed(app.sql().await).await, 2, "both jobs killed");
    let (_, _, page) = dash.get(&format!("/admin/tasks/{task}")).await;
    let jobs = &page[page.find("id=\"job-table\"").unwrap()..];
    let jobs = &jobs[..jobs.find("</table>").unwrap()];
    assert_eq!(jobs.matches("s-killed").count(), 2, "both jobs show killed:\n{jobs}");
    assert!(page.contains("id=\"task-status\"><span class=\"badge s-killed\""), "the task shows killed");
    assert!(!page.contains("id=\"kill\""), "no kill button on a finished task");

    // Logout ends the session at the server, not only in the browser.
    let session = dash.session.clone().unwrap();
    let (status, _) = dash.post("/admin/logout", &[("csrf", &csrf)], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let mut stale = Dash::new(&app);
    stale.session = Some(session);
    let (status, location, _) = stale.get("/admin").await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/admin/login")));
    app.cleanup().await;
}

#[tokio::test]
async fn bad_filters_get_a_clear_error_page() {
    let app = spawn_app().await;
    let mut dash = Dash::new(&app);
    dash.login("root", ROOT_PASSWORD).await;
    for (path, expected) in [
        ("/admin/tasks?collaboration=nope", "collaboration \"nope\" is not valid"),
        ("/admin/tasks?status=sleeping", "status \"sleeping\" is not valid"),
        ("/admin/routing?kind=gossip", "not an envelope kind"),
        ("/admin/routing?message=xyz", "up to 32 hex digits"),
        ("/admin/tasks?page=0", "page is 1 to 100000"),
    ] {
        let (status, _, body) = dash.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(body.contains(&expected.replace('"', "&quot;")), "{path}: {body}");
    }
    let (status, _, _) = dash.get("/admin/tasks/not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Empty filters, as an "any" option sends them, are no filter.
    let (status, _, _) = dash.get("/admin/tasks?collaboration=&status=&organization=&task_status=").await;
    assert_eq!(status, 200);
    app.cleanup().await;
}

/// An envelope published again after it was routed (a replay into ingress) is dropped, and the
/// overview counts it for the operators.
#[tokio::test]
async fn envelopes_repeated_into_ingress_are_counted_on_the_overview() {
    let app = spawn_app().await;
    let fixture = support::TwoOrgRun::start(&app).await;
    let bytes = fixture.b_to_a(b"once");
    fixture.node_b.publish(&bytes).await.unwrap();
    support::eventually(30, "the envelope to be routed", || async {
        (app.routed(fixture.task, "run_message").await == 1).then_some(())
    })
    .await;
    fixture.node_b.publish(&bytes).await.unwrap();
    let sql = app.sql().await;
    support::eventually(30, "the repeat to be counted", || async {
        let row = sql
            .query_opt(
                "SELECT count FROM repeated_envelopes WHERE sender_org = $1",
                &[fixture.b.org().as_uuid()],
            )
            .await
            .unwrap()?;
        (row.get::<_, i64>(0) == 1).then_some(())
    })
    .await;
    assert_eq!(app.routed(fixture.task, "run_message").await, 1, "routed once");

    let mut dash = Dash::new(&app);
    let (status, _) = dash.login("root", ROOT_PASSWORD).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, page) = dash.get("/admin").await;
    assert_eq!(status, StatusCode::OK);
    let card = page.split("id=\"repeated\"").nth(1).expect("the overview has the card");
    assert!(card.contains("<span class=\"n\">1</span>"), "{}", &card[..card.len().min(200)]);
    app.cleanup().await;
}
