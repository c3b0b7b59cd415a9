//! The admin dashboard in a real browser (headless Chromium through ChromeDriver) against a real
//! federation: a server on PostgreSQL and RabbitMQ, two organizations with in-process nodes
//! running probe containers in Docker, and a third whose node is a `fedq node` process.
//!
//! An administrator logs in, sees the nodes online, opens a finished task with its subtask and
//! per-organization status, kills a running task and sees its jobs killed, finds a refused
//! envelope with its reason, and watches a node go offline on the live overview when its
//! process is killed. Screenshots of each page are written under `target/tmp/screenshots/`.

use crate::support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::ids::TaskId;
use serde_json::{Value, json};
use support::browser::Browser;
use support::federation::Federation;
use support::node::{Fed, NodeGuard, PROBE, register_node};
use support::{NodeBroker, ROOT_PASSWORD, eventually};

fn spec(fed: &Federation, name: &str, steps: Value) -> TaskSpec {
    TaskSpec {
        collaboration: fed.collaboration,
        image: PROBE.into(),
        organizations: fed.orgs.iter().map(|o| o.org()).collect(),
        inputs: Inputs::Same(serde_json::to_vec(&steps).unwrap()),
        name: name.into(),
        return_log: false,
    }
}

async fn job_statuses(fed: &Federation, task: TaskId) -> Vec<String> {
    let task = fed.researcher.task(task).await.unwrap();
    task.jobs.iter().map(|j| j.status.as_str().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_follows_the_federation_in_a_browser() {
    let fed = Federation::new(2, &["fedq/probe"], |_, _| BTreeMap::new()).await;
    let app = &fed.app;

    // A third organization, outside the collaboration, whose node runs as a process.
    let clinic = app.org("clinic-3").await;
    let dir = tempfile::tempdir().unwrap();
    let (config, config_path, _) =
        register_node(app, &clinic, dir.path(), Fed::limits(), &["fedq/probe"]).await;
    let node_name = config.node.name.clone();
    let mut guard = NodeGuard { name: node_name.clone(), process: None };
    guard.process = Some(
        Command::new(env!("CARGO_BIN_EXE_fedq"))
            .args(["node", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("node.log")).unwrap())
            .spawn()
            .expect("fedq node starts"),
    );

    // A finished task whose algorithm started a subtask, and a long one to kill.
    let me = &fed.orgs[0];
    let finished = spec(
        &fed,
        "row-count-check",
        json!([{"op": "subtask", "orgs": ["self"], "steps": [{"op": "sleep", "ms": 10}]}]),
    );
    let finished = fed.researcher.create_task(me, &finished).await.expect("the task is created");
    fed.researcher
        .wait_and_open(me, fed.collaboration, finished.task, Duration::from_secs(120))
        .await
        .expect("the task finishes");
    let long = spec(&fed, "long-running-model", json!([{"op": "sleep", "ms": 120_000}]));
    let long = fed.researcher.create_task(me, &long).await.expect("the task is created");
    eventually(60, "both jobs of the long task run", || async {
        job_statuses(&fed, long.task).await.iter().all(|s| s == "running").then_some(())
    })
    .await;

    // A refused envelope: bytes that are no envelope, from a node's broker user.
    let registration = app.node(fed.orgs[1].org(), "garbage-sender").await;
    let sender = NodeBroker::connect(app, &registration).await.unwrap();
    sender.publish(b"this is not an envelope").await.unwrap();
    let sql = app.sql().await;
    eventually(30, "the envelope is dead-lettered", || async {
        let n: i64 = sql.query_one("SELECT count(*) FROM dead_letters", &[]).await.unwrap().get(0);
        (n == 1).then_some(())
    })
    .await;

    let browser = Browser::start().await;
    // `localhost`, not 127.0.0.1: browsers keep `Secure` cookies for localhost over plain HTTP.
    let base = format!("http://localhost:{}", app.addr.port());
    let c = &browser.client;

    // Log in.
    c.goto(&format!("{base}/admin")).await.unwrap();
    browser.wait_for_text("h1", "Log in", 10).await;
    browser.screenshot("login").await;
    browser.fill("input[name=username]", "root").await;
    browser.fill("input[name=password]", ROOT_PASSWORD).await;
    browser.click("form.login button[type=submit]").await;
    browser.wait_for_text("h1", "Overview", 10).await;
    let node_status = format!("#node-table tr[data-node=\"{node_name}\"] td.status");
    browser.wait_for_text(&node_status, "online", 30).await;
    // Three serving nodes and the registration that only published garbage (never online).
    browser.wait_for_text("#nodes-online", "3 / 4", 30).await;
    browser.screenshot("overview").await;

    // The task list, and the finished task with each organization's status and its subtask.
    c.goto(&format!("{base}/admin/tasks")).await.unwrap();
    browser.wait_for_text("#task-table", "row-count-check", 10).await;
    browser.wait_for_text("#task-table", "long-running-model", 10).await;
    browser.screenshot("tasks").await;
    c.goto(&format!("{base}/admin/tasks/{}", finished.task)).await.unwrap();
    browser.wait_for_text("#task-status", "completed", 10).await;
    for org in &fed.orgs {
        let row = format!("#job-table tr[data-org=\"{}\"] td.status", org.org());
        browser.wait_for_text(&row, "completed", 10).await;
    }
    let tree = browser.text("ul.tree").await.unwrap_or_default();
    assert_eq!(
        tree.matches("completed").count(),
        3,
        "the task and its two subtasks (one per organization): {tree}"
    );
    browser.screenshot("task").await;

    // Kill the long task from its page.
    c.goto(&format!("{base}/admin/tasks/{}", long.task)).await.unwrap();
    browser.wait_for_text("#task-status", "running", 10).await;
    browser.click("#kill").await;
    c.accept_alert().await.expect("the kill button asks for confirmation");
    browser.wait_for_text("#task-status", "killed", 10).await;
    for org in &fed.orgs {
        let row = format!("#job-table tr[data-org=\"{}\"] td.status", org.org());
        browser.wait_for_text(&row, "killed", 10).await;
    }
    browser.screenshot("task-killed").await;
    assert_eq!(job_statuses(&fed, long.task).await, ["killed", "killed"], "the API agrees");

    // The refused envelope, with its reason and no payload.
    c.goto(&format!("{base}/admin/dead-letters")).await.unwrap();
    browser.wait_for_text("#reason-counts", "malformed", 10).await;
    browser.wait_for_text("#dead-letter-table", "malformed", 10).await;
    let page = c.source().await.unwrap();
    assert!(!page.contains("this is not an envelope"), "no payload is ever shown");
    browser.screenshot("dead-letters").await;

    c.goto(&format!("{base}/admin/routing")).await.unwrap();
    browser.wait_for_text("#routing-table", "job_result", 10).await;
    browser.screenshot("routing").await;
    c.goto(&format!("{base}/admin/organizations")).await.unwrap();
    browser.wait_for_text("section.org[data-org=\"clinic-3\"]", &node_name, 10).await;
    browser.wait_for_text("section.org[data-org=\"clinic-3\"]", "fedq/probe@*", 10).await;
    browser.screenshot("organizations").await;

    // Stop the node's process: the overview, left open, shows it offline by itself.
    c.goto(&format!("{base}/admin")).await.unwrap();
    browser.wait_for_text(&node_status, "online", 10).await;
    let mut child = guard.process.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    browser.wait_for_text(&node_status, "offline", 40).await;
    browser.wait_for_text("#nodes-online", "2 / 4", 10).await;
    let refreshed =
        c.find(fantoccini::Locator::Css("#live")).await.unwrap().attr("data-refreshed-at").await.unwrap();
    assert!(refreshed.is_some(), "the change arrived through the live refresh, not a reload");
    browser.screenshot("overview-node-offline").await;

    browser.close().await;
    drop(guard);
    fed.cleanup().await;
}
