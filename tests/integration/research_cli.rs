//! The researcher's command line against a real federation: log in, create a Secure Sum task
//! and wait for it, list, show and fetch results; and the clear errors for a wrong key, an
//! organization outside the collaboration, and an image a node does not have; analyses by name.

use crate::support;

use std::collections::BTreeMap;
use std::process::Output;

use fedq::keys::OrgKey;
use serde_json::Value;
use support::federation::Federation;

struct Cli {
    session: tempfile::TempDir,
}

impl Cli {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        support::fedq_output(self.session.path(), args, stdin)
    }

    /// Logs `user` (password `a-long-password-123`) in to `server`.
    fn login(&self, server: &str, user: &str) {
        let out = self.run(
            &["login", "--server", server, "--user", user, "--password-stdin"],
            Some("a-long-password-123\n"),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(out.status.success(), "fedq {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(!out.status.success(), "fedq {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

/// Registries A and B in one collaboration, and ada, a researcher of A.
async fn two_registries(app: &support::TestApp) -> (fedq::keys::Identity, fedq::keys::Identity) {
    let a = app.org("registry-a").await;
    let b = app.org("registry-b").await;
    app.collaboration("registries", &[a.org(), b.org()]).await;
    app.user(a.org(), "ada", "researcher").await;
    (a, b)
}

/// `fedq task create` arguments.
fn task_create(collaboration: &str, image: &str, key: &str, extra: &[&str]) -> Vec<String> {
    let base = ["task", "create", "--collaboration", collaboration, "--image", image, "--key", key];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_researcher_runs_secure_sum_from_the_command_line() {
    let mut fed = Federation::new(2, &["fedq/secure-sum"], |i, dir| {
        let path = dir.join("patients.csv");
        std::fs::write(&path, format!("id\n{}", "p\n".repeat(10 + i))).unwrap();
        BTreeMap::from([("patients".to_owned(), path)])
    })
    .await;
    let cli = Cli { session: tempfile::tempdir().unwrap() };
    let server = format!("http://{}", fed.app.addr);
    let key = cli.session.path().join("org.key");
    fed.orgs[0].current().write_new(&key).unwrap();
    let key = key.to_str().unwrap();

    assert!(cli.fails(&["task", "list"]).contains("not logged in"));
    cli.login(&server, "ada");
    let bad = cli.run(&["login", "--server", &server, "--user", "ada", "--password-stdin"], Some("wrong\n"));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("401"));

    let collaboration = fed.collaboration.to_string();
    let (a, b) = (fed.orgs[0].org().to_string(), fed.orgs[1].org().to_string());
    let image = "fedq/secure-sum:0.1.0";
    let create = |extra: &[&str]| task_create(&collaboration, image, key, extra);
    let args = create(&["--org", &a, "--org", &b, "--input-json", r#"{"share": true}"#, "--wait", "--json"]);
    // B's key is not trusted yet: nothing is sealed until its fingerprint is.
    let fingerprint_b = fed.orgs[1].current().id().to_string();
    let err = cli.fails(&strs(&args));
    assert!(err.contains("not trusted yet") && err.contains(&fingerprint_b), "{err}");
    assert!(err.contains(&format!("organization registry-1 ({b})")), "named, not by id alone: {err}");
    assert!(
        err.contains(&format!("`fedq keys trust {b} {fingerprint_b}`")),
        "the command keeps the id: {err}"
    );
    cli.ok(&["keys", "trust", &b, &fingerprint_b]);
    let trusted = cli.ok(&["keys", "trusted"]);
    assert!(
        trusted.contains(&format!("registry-1 ({b})  {fingerprint_b}  current  fingerprint")),
        "{trusted}"
    );
    let results: Value = serde_json::from_str(&cli.ok(&strs(&args))).unwrap();
    assert_eq!(results.as_array().unwrap().len(), 2);
    for r in results.as_array().unwrap() {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["output"]["N"], 21, "10 + 11 patients: {r}");
    }

    let listed = cli.ok(&["task", "list"]);
    assert!(listed.contains("2/2 done"), "{listed}");
    let task: Value = serde_json::from_str(&cli.ok(&["task", "list", "--json"])).unwrap();
    // The newest task is the subtask Secure Sum's first registry created; the researcher's is
    // the one without a parent.
    let root = task.as_array().unwrap().iter().find(|t| t["parent"].is_null()).unwrap();
    let id = root["id"].as_str().unwrap().to_owned();
    let sub = task.as_array().unwrap().iter().find(|t| !t["parent"].is_null()).unwrap();
    let err = cli.fails(&["result", sub["id"].as_str().unwrap(), "--key", key]);
    assert!(err.contains("subtask"), "{err}");
    assert!(cli.ok(&["task", "show", &id]).contains("completed"));
    let fetched = cli.ok(&["result", &id, "--key", key, "--timeout", "30"]);
    assert!(fetched.contains("\"N\":21"), "{fetched}");
    let fetched: Value = serde_json::from_str(&cli.ok(&["result", &id, "--key", key, "--json"])).unwrap();
    assert_eq!(fetched[0]["output"]["N"], 21, "{fetched}");
    assert!(fetched[0]["organization_name"].as_str().unwrap().starts_with("registry-"), "{fetched}");

    // A key that is not the organization's published one.
    let wrong = cli.session.path().join("other.key");
    OrgKey::generate().write_new(&wrong).unwrap();
    let args = task_create(&collaboration, image, wrong.to_str().unwrap(), &["--org", &a]);
    let err = cli.fails(&strs(&args));
    assert!(
        err.contains("is not the key the server publishes as organization")
            && err.contains("fedq audit verify"),
        "{err}"
    );

    // An organization outside the collaboration.
    let outsider = fed.app.org("outsider").await.org().to_string();
    let args = create(&["--org", &a, "--org", &outsider]);
    let err = cli.fails(&strs(&args));
    assert!(err.contains(&format!("organization {outsider} is not a member")), "{err}");

    // An image the nodes do not have: they refuse it, and the researcher sees why.
    let args = task_create(&collaboration, "fedq/secure-sum:9.9.9", key, &["--org", &b, "--wait"]);
    let out = cli.ok(&strs(&args));
    assert!(out.contains("refused") && out.contains("not available at this node"), "{out}");

    // Output names organizations, not only their ids.
    let shown = cli.ok(&["task", "show", &id]);
    assert!(shown.contains(&format!("registry-1 ({b})")), "{shown}");

    // A wait that ends before every result: the results so far, who is missing, and exit
    // status 3, not success.
    fed.nodes.remove(1).shutdown().await;
    let args = create(&["--org", &a, "--org", &b, "--input-json", r#"{"share": true}"#]);
    let pending = cli.ok(&strs(&args));
    let out = cli.run(&["result", pending.trim(), "--key", key, "--timeout", "2"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("had no result after 2 s") && err.contains(&format!("registry-1 ({b})")), "{err}");
    assert!(err.contains("partial"), "{err}");
    fed.cleanup().await;
}

/// `fedq analysis`: a regression and a summary by name at three registries, printed as tables
/// and as JSON, and a refusal that names each registry and its reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_researcher_runs_analyses_by_name_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().to_str().unwrap().to_owned();
    let pooled = concat!(env!("CARGO_MANIFEST_DIR"), "/python/fedq-algorithm/tests/pooled.py");
    let out = support::python().args([pooled, "generate", &folder, "120", "300", "80"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = data.path().to_owned();
    let patients = move |i: usize, _: &std::path::Path| {
        BTreeMap::from([("patients".to_owned(), root.join(format!("registry-{i}")).join("patients"))])
    };
    // numpy, pandas and scipy need more than the test kit's 64 MiB.
    let fed = Federation::configured(3, &["fedq/python-analysis"], patients, |_, config| {
        config.limits.memory_mib = 512;
    })
    .await;
    let cli = Cli { session: tempfile::tempdir().unwrap() };
    cli.login(&format!("http://{}", fed.app.addr), "ada");
    let key = cli.session.path().join("org.key");
    fed.orgs[0].current().write_new(&key).unwrap();
    for org in &fed.orgs[1..] {
        cli.ok(&["keys", "trust", &org.org().to_string(), &org.current().id().to_string()]);
    }
    let analysis = |name: &str, extra: &[&str]| -> Vec<String> {
        let base = [
            "analysis",
            name,
            "--collaboration",
            "registries",
            "--key",
            key.to_str().unwrap(),
            "--data",
            "patients",
        ];
        let orgs = ["--org", "registry-0", "--org", "registry-1", "--org", "registry-2"];
        base.iter().chain(&orgs).chain(extra).map(|s| s.to_string()).collect()
    };
    let model = analysis("linear", &["--outcome", "bmi", "--covariates", "age,visits"]);
    let table = cli.ok(&strs(&model));
    assert!(table.starts_with("linear over 3 organizations"), "{table}");
    for name in ["Intercept", "age", "visits", "r2", "df_resid"] {
        assert!(table.lines().any(|l| l.starts_with(name)), "{name} in\n{table}");
    }
    let mut as_json = model.clone();
    as_json.push("--json".into());
    let fitted: Value = serde_json::from_str(&cli.ok(&strs(&as_json))).unwrap();
    assert_eq!(fitted["coefficients"].as_array().unwrap().len(), 3, "{fitted}");
    let summary = cli.ok(&strs(&analysis("summary", &["--columns", "age,bmi", "--where", "sex == 'F'"])));
    assert!(summary.lines().any(|l| l.starts_with("age ")) && summary.contains("missing"), "{summary}");
    let err = cli.fails(&strs(&analysis("summary", &["--columns", "weight"])));
    for org in ["registry-0", "registry-1", "registry-2"] {
        assert!(err.contains(&format!("{org}: the data has no column 'weight' (column_missing)")), "{err}");
    }
    fed.cleanup().await;
}

/// `fedq admin`: what administrators did with curl, by name, with `--json` for scripts, and
/// with errors that say what to do.
#[tokio::test(flavor = "multi_thread")]
async fn administrators_work_by_name_from_the_command_line() {
    let app = support::spawn_app().await;
    let cli = Cli { session: tempfile::tempdir().unwrap() };
    let server = format!("http://{}", app.addr);
    let login = cli.run(
        &["login", "--server", &server, "--user", "root", "--password-stdin"],
        Some(&format!("{}\n", support::ROOT_PASSWORD)),
    );
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    cli.ok(&["admin", "org", "create", "registry-a"]);
    cli.ok(&["admin", "org", "create", "registry-b"]);
    let orgs: Value = serde_json::from_str(&cli.ok(&["admin", "--json", "org", "list"])).unwrap();
    assert_eq!(orgs.as_array().unwrap().len(), 2, "{orgs}");
    cli.ok(&["admin", "collab", "create", "registries", "--org", "registry-a"]);
    cli.ok(&["admin", "collab", "add", "registries", "registry-b"]);
    let collabs = cli.ok(&["admin", "collab", "list"]);
    assert!(
        collabs.contains("name=registries") && collabs.contains("members=registry-a,registry-b"),
        "{collabs}"
    );
    // Root creates an organization's first administrator, and no other user of it.
    let first = cli.run(
        &["admin", "user", "create", "admin-a", "--role", "org_admin", "--org", "registry-a"],
        Some("a-long-password-123\n"),
    );
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let refused = cli.run(
        &["admin", "user", "create", "ada", "--role", "researcher", "--org", "registry-a"],
        Some("a-long-password-456\n"),
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("root creates only the first administrator"),
        "{said}"
    );
    let root = cli;
    let cli = Cli { session: tempfile::tempdir().unwrap() };
    cli.login(&server, "admin-a");
    let user = cli.run(
        &["admin", "user", "create", "ada", "--role", "researcher", "--org", "registry-a"],
        Some("a-long-password-456\n"),
    );
    assert!(user.status.success(), "{}", String::from_utf8_lossy(&user.stderr));
    let users = cli.ok(&["admin", "user", "list"]);
    assert!(users.contains("username=ada") && users.contains("role=researcher"), "{users}");
    let ada = users.lines().find(|l| l.contains("username=ada")).unwrap();
    assert!(ada.contains("organization_name=registry-a"), "{users}");
    let registry_b = orgs.as_array().unwrap().iter().find(|o| o["name"] == "registry-b").unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.node(registry_b, "node-b0").await;
    let nodes = root.ok(&["admin", "node", "list"]);
    assert!(nodes.contains("name=node-b0") && nodes.contains("organization_name=registry-b"), "{nodes}");
    let changed = cli.ok(&["admin", "user", "role", "ada", "viewer"]);
    assert!(changed.contains("username=ada") && changed.contains("role=viewer"), "{changed}");
    let users = cli.ok(&["admin", "user", "list"]);
    assert!(users.contains("role=viewer") && !users.contains("role=researcher"), "{users}");
    let err = cli.fails(&["admin", "user", "role", "ada", "root"]);
    assert!(err.contains("belongs to no organization"), "{err}");
    let err = root.fails(&["admin", "collab", "add", "registries", "registry-z"]);
    assert!(err.contains("no organization named \"registry-z\""), "{err}");
    let created = root.run(&["admin", "enrollment", "create", "registry-b", "node-b1"], None);
    let token = String::from_utf8_lossy(&created.stdout);
    assert!(token.trim().starts_with("fedq_e_"), "{token}");
    // The token's expiry for people: a date and time a day from now, not a count of milliseconds.
    let said = String::from_utf8_lossy(&created.stderr);
    let until = said.split("valid once, until ").nth(1).and_then(|rest| rest.split(';').next()).unwrap();
    let until = humantime::parse_rfc3339(until).unwrap_or_else(|e| panic!("{until:?}: {e}"));
    let left = until.duration_since(std::time::SystemTime::now()).unwrap().as_secs();
    assert!((86_300..=86_400).contains(&left), "{said}");
    cli.ok(&["admin", "user", "delete", "ada"]);
    assert!(!cli.ok(&["admin", "user", "list"]).contains("username=ada"));
    app.cleanup().await;
}

/// `fedq admin dead-letters list` and `GET /dead-letters`: an envelope the router refused shows
/// up with its reason and the organizations by name; root reads every one, an organization's
/// administrator those to or from it, anyone else is refused.
#[tokio::test(flavor = "multi_thread")]
async fn refused_envelopes_are_listed_for_administrators() {
    use fedq::envelope::{self, SealOptions};
    use fedq::ids::{RunId, TaskId};
    use fedq::protocol::Kind;
    use fedq::time::Timestamp;

    let app = support::spawn_app().await;
    let a = app.org("registry-a").await;
    let b = app.org("registry-b").await;
    app.org("registry-c").await;
    let collaboration = app.collaboration("ab", &[a.org(), b.org()]).await;
    let researcher = app.user(a.org(), "ada", "researcher").await;
    let node_b = support::NodeBroker::connect(&app, &app.node(b.org(), "b-1").await).await.unwrap();
    // B's node writes to A about a task the server does not know: refused as `unknown_task`.
    let route = support::route(Kind::RunMessage, collaboration, TaskId::new(), RunId::new());
    let options = SealOptions::default();
    let sealed =
        envelope::seal(&b, a.org(), a.current().public(), &route, b"x1", &options, Timestamp::now()).unwrap();
    node_b.publish(&sealed.bytes).await.unwrap();

    let root = app.root_token.clone();
    let letters = support::eventually(10, "the dead letter", || async {
        let (status, body) = app.call("GET", "/dead-letters", Some(&root), None).await;
        (status == 200 && body.as_array()?.len() == 1).then_some(body)
    })
    .await;
    let letter = &letters[0];
    assert_eq!(letter["reason_code"], "unknown_task", "{letter}");
    assert_eq!(letter["sender"], b.org().to_string());
    assert_eq!(letter["recipient"], a.org().to_string());
    assert_eq!(letter["kind"], "run_message");
    assert_eq!(letter["size"], sealed.bytes.len());

    let password = "a-long-password-123";
    let admin_a = app.login("admin-of-registry-a", password).await;
    let admin_c = app.login("admin-of-registry-c", password).await;
    let count = |token: String, query: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app.call("GET", &format!("/dead-letters{query}"), Some(&token), None).await;
            assert_eq!(status, 200, "{body}");
            body.as_array().unwrap().len()
        }
    };
    assert_eq!(count(admin_a.clone(), "").await, 1, "the recipient's administrator reads it");
    assert_eq!(count(admin_c, "").await, 0, "an administrator of neither side does not");
    assert_eq!(count(root.clone(), "?reason=unknown_task").await, 1);
    assert_eq!(count(root.clone(), "?reason=expired").await, 0);
    assert_eq!(count(root.clone(), "?limit=1&offset=1").await, 0);
    let (status, body) = app.call("GET", "/dead-letters?limit=501", Some(&root), None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let (status, body) = app.call("GET", "/dead-letters", Some(&researcher), None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");

    // The command line, as A's administrator: the organizations by name.
    let cli = Cli { session: tempfile::tempdir().unwrap() };
    let server = format!("http://{}", app.addr);
    let login = cli.run(
        &["login", "--server", &server, "--user", "admin-of-registry-a", "--password-stdin"],
        Some(&format!("{password}\n")),
    );
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let listed = cli.ok(&["admin", "dead-letters", "list"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    for expected in
        ["unknown_task", "kind=run_message", "from=registry-b", "to=registry-a", "publisher=fedq-node-"]
    {
        assert!(listed.contains(expected), "{expected} in {listed}");
    }
    let listed: Value = serde_json::from_str(&cli.ok(&["admin", "--json", "dead-letters", "list"])).unwrap();
    assert_eq!(listed[0]["sender_name"], "registry-b", "{listed}");
    assert_eq!(listed[0]["recipient_name"], "registry-a", "{listed}");
    assert_eq!(cli.ok(&["admin", "dead-letters", "list", "--reason", "expired"]), "");
    app.cleanup().await;
}

/// `fedq keys trust`, `trusted` and `publish` name organizations as people know them: by name
/// beside the id, and `trust` takes either; without a session, ids work and print alone.
#[tokio::test(flavor = "multi_thread")]
async fn key_commands_take_and_show_organization_names() {
    let app = support::spawn_app().await;
    let (a, b) = two_registries(&app).await;
    let server = format!("http://{}", app.addr);
    let login = |cli: &Cli, user: &str| cli.login(&server, user);

    // A's administrator publishes a new key (a replacement, without a signed rotation).
    let admin = Cli { session: tempfile::tempdir().unwrap() };
    login(&admin, "admin-of-registry-a");
    let key = admin.session.path().join("new.key");
    admin.ok(&["keys", "generate", "--out", key.to_str().unwrap()]);
    let published = admin.ok(&["keys", "publish", "--key", key.to_str().unwrap()]);
    assert!(published.contains(&format!("for organization registry-a ({})", a.org())), "{published}");
    // ...and revokes the old one, the revocation signed with the new key (the old one is lost).
    let old = a.current().id().to_string();
    admin.ok(&["admin", "key", "revoke", "registry-a", &old, "--key", key.to_str().unwrap()]);
    let keys: Value =
        serde_json::from_str(&admin.ok(&["admin", "--json", "key", "list", "registry-a"])).unwrap();
    let revoked = keys.as_array().unwrap().iter().find(|k| k["key_id"] == old.as_str()).unwrap();
    let new_id = fedq::keys::OrgKey::load(&key).unwrap().id().to_string();
    assert!(
        !revoked["revoked_at"].is_null() && revoked["revoked_by"] == new_id.as_str(),
        "{revoked} signed by the new key ({new_id})"
    );

    // ada trusts B's key by B's name, then by its id.
    let ada = Cli { session: tempfile::tempdir().unwrap() };
    login(&ada, "ada");
    let fingerprint = b.current().id().to_string();
    let out = ada.run(&["keys", "trust", "registry-b", &fingerprint], None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("organization registry-b ({}): key {fingerprint} is now trusted", b.org())),
        "{said}"
    );
    let out = ada.run(&["keys", "trust", &b.org().to_string(), &fingerprint], None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("organization registry-b ({}): key {fingerprint} was already", b.org())),
        "{said}"
    );
    let trusted = ada.ok(&["keys", "trusted"]);
    assert!(
        trusted.contains(&format!("registry-b ({})  {fingerprint}  current  fingerprint", b.org())),
        "{trusted}"
    );
    let err = ada.fails(&["keys", "trust", "registry-z", &fingerprint]);
    assert!(err.contains("no organization named \"registry-z\""), "{err}");

    // Without a session: an id works and prints alone; a name needs a session, and says so.
    let offline = Cli { session: tempfile::tempdir().unwrap() };
    let out = offline.run(&["keys", "trust", &b.org().to_string(), &fingerprint], None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("organization {}: key {fingerprint} is now trusted", b.org())), "{said}");
    let listed = offline.ok(&["keys", "trusted"]);
    assert!(listed.starts_with(&format!("{}  {fingerprint}", b.org())), "{listed}");
    assert!(offline.fails(&["keys", "trust", "registry-b", &fingerprint]).contains("not logged in"));
    app.cleanup().await;
}

/// The README's commands that the other tests leave out: a key published with a rotation signed
/// by the key it replaces (`keys publish --previous-key`), a partner's first key trusted on first
/// use (`task create --trust-on-first-use`), and a task killed from the command line.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_rotation_first_use_and_kill_from_the_command_line() {
    let app = support::spawn_app().await;
    let (a, b) = two_registries(&app).await;
    let server = format!("http://{}", app.addr);
    let login = |cli: &Cli, user: &str| cli.login(&server, user);

    // A's administrator rotates A's key, signing the hand-over with the current one.
    let admin = Cli { session: tempfile::tempdir().unwrap() };
    login(&admin, "admin-of-registry-a");
    let (old, new) = (admin.session.path().join("old.key"), admin.session.path().join("new.key"));
    a.current().write_new(&old).unwrap();
    admin.ok(&["keys", "generate", "--out", new.to_str().unwrap()]);
    admin.ok(&["keys", "publish", "--key", new.to_str().unwrap(), "--previous-key", old.to_str().unwrap()]);
    let (_, history) =
        app.call("GET", &format!("/organizations/{}/keys", a.org()), Some(&app.root_token), None).await;
    assert_eq!(history[0]["previous_key_id"], a.current().id().to_string(), "{history}");
    assert!(history[0]["rotation_signature"].is_string(), "the rotation is signed: {history}");

    // ada seals with A's new key, trusting B's first key on first use; then kills the task.
    let ada = Cli { session: tempfile::tempdir().unwrap() };
    login(&ada, "ada");
    let key = ada.session.path().join("registry-a.key");
    std::fs::copy(&new, &key).unwrap();
    let key = key.to_str().unwrap();
    let base = ["--org", "registry-a", "--org", "registry-b", "--input-json", r#"{"share": true}"#];
    let err = ada.fails(&strs(&task_create("registries", "fedq/secure-sum:0.1.0", key, &base)));
    assert!(err.contains("not trusted yet"), "{err}");
    let with_first_use = [&base[..], &["--trust-on-first-use"]].concat();
    let out = ada.run(&strs(&task_create("registries", "fedq/secure-sum:0.1.0", key, &with_first_use)), None);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&b.current().id().to_string()), "the key trusted on first use is printed: {said}");
    let task = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let trusted = ada.ok(&["keys", "trusted"]);
    assert!(trusted.contains(&format!("{}  current  first-use", b.current().id())), "{trusted}");

    let out = ada.run(&["task", "kill", &task], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("task {task} killed")));
    let shown = ada.ok(&["task", "show", &task]);
    assert!(shown.contains("killed") && !shown.contains("pending"), "{shown}");
    app.cleanup().await;
}
