//! The server against real PostgreSQL and RabbitMQ: the REST API, the blind router, broker
//! credentials. Each test has its own database and virtual host.

use crate::support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fedq::envelope::{self, MemoryReplayGuard, OpenPolicy, SealOptions};
use fedq::ids::{JobId, OrgId, RunId, TaskId};
use fedq::keys::{Identity, Keyring, OrgKey};
use fedq::protocol::{JobResult, JobStatus, Kind, Payload};
use fedq::time::Timestamp;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;
use support::*;

/// A task of which the router refuses one envelope is neither stored nor forwarded anywhere:
/// its envelopes are checked as one group in the task's own transaction. Sent again with the
/// refused envelope fixed, it is created and both envelopes go.
#[tokio::test]
async fn a_task_with_one_refused_envelope_is_neither_stored_nor_forwarded() {
    let app = spawn_app().await;
    let a = app.org("registry-a").await;
    let b = app.org("registry-b").await;
    let c = app.org("registry-c").await;
    let collab = app.collaboration("counts", &[a.org(), b.org(), c.org()]).await;
    let researcher = app.user(a.org(), "ada", "researcher").await;
    let node_b = NodeBroker::connect(&app, &app.node(b.org(), "b-1").await).await.unwrap();
    let node_c = NodeBroker::connect(&app, &app.node(c.org(), "c-1").await).await.unwrap();

    let (task, run) = (TaskId::new(), RunId::new());
    let r = route(Kind::JobStart, collab, task, run);
    let all = [b.org(), c.org()];
    let (_, to_b, sealed_b) = job_entry(&a, b.org(), b.current().public(), &r, b"x", &all);
    // Signed with a key that is not A's published one: refused as unknown_sender_key.
    let not_a = Identity::new(a.org(), OrgKey::generate());
    let (_, forged_c, _) = job_entry(&not_a, c.org(), c.current().public(), &r, b"x", &all);
    let body = json!({"id": task, "run": run, "collaboration": collab, "image": "fedq/test@sha256:00",
                      "jobs": [to_b.clone(), forged_c]});
    let (status, answer) = app.call("POST", "/tasks", Some(&researcher), Some(body)).await;
    assert_eq!((status, answer["reason"].as_str()), (422, Some("unknown_sender_key")), "{answer}");
    let (status, _) = app.call("GET", &format!("/tasks/{task}"), Some(&researcher), None).await;
    assert_eq!(status, 404, "the task was not stored");
    // Whatever the router forwards is in the recipient's queue before the answer: none here.
    assert!(node_b.is_empty().await, "the valid envelope was not forwarded either");

    let (_, to_c, sealed_c) = job_entry(&a, c.org(), c.current().public(), &r, b"x", &all);
    let body = json!({"id": task, "run": run, "collaboration": collab, "image": "fedq/test@sha256:00",
                      "jobs": [to_b, to_c]});
    let (status, created) = app.call("POST", "/tasks", Some(&researcher), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(node_b.next(10).await.data, sealed_b);
    assert_eq!(node_c.next(10).await.data, sealed_c);
}

/// Researcher of A runs a task at B: the job_start reaches B's queue byte for byte, B's node
/// opens it, B's sealed result comes back through ingress and the API, and only ciphertext
/// touches the server's database.
#[tokio::test]
async fn a_task_travels_sealed_from_researcher_to_node_and_back() {
    let app = spawn_app().await;
    let a = app.org("registry-a").await;
    let b = app.org("registry-b").await;
    let collab = app.collaboration("counts", &[a.org(), b.org()]).await;
    let researcher = app.user(a.org(), "ada", "researcher").await;
    let node_b = NodeBroker::connect(&app, &app.node(b.org(), "b-1").await).await.unwrap();

    let (task, run) = (TaskId::new(), RunId::new());
    let marker = b"CANARY-7d1f0e-count-4242";
    let r = route(Kind::JobStart, collab, task, run);
    let (job, entry, sealed) = job_entry(&a, b.org(), b.current().public(), &r, marker, &[b.org()]);
    let body = json!({"id": task, "run": run, "collaboration": collab, "image": "fedq/test@sha256:00", "jobs": [entry]});
    let (status, created) = app.call("POST", "/tasks", Some(&researcher), Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["jobs"][0]["status"], "pending");

    let delivery = node_b.next(10).await;
    assert_eq!(delivery.data, sealed, "forwarded byte for byte");
    let mut b_trusts = Keyring::new();
    b_trusts.insert(a.org(), a.current().public().clone());
    let opened = envelope::open(
        &delivery.data,
        &b,
        &b_trusts,
        &mut MemoryReplayGuard::new(),
        &OpenPolicy::default(),
        Timestamp::now(),
    )
    .unwrap();
    match opened.decode().unwrap() {
        Payload::JobStart(start) => assert_eq!(start.input.as_ref(), marker),
        other => panic!("expected a job start, got {other:?}"),
    }

    // Retrying the same request routes nothing twice.
    let (status, _) = app.call("POST", "/tasks", Some(&researcher), Some(body)).await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(node_b.is_empty().await, "a retried task is not delivered twice");

    // B's node reports the result, sealed for A.
    let result = Payload::JobResult(JobResult {
        job,
        status: JobStatus::Completed,
        output: serde_bytes::ByteBuf::from(b"N = CANARY-result-9931".to_vec()),
        log: "CANARY-log-line".into(),
        reason: None,
        log_head: None,
    });
    let r = route(Kind::JobResult, collab, task, run);
    let sealed = envelope::seal(
        &b,
        a.org(),
        a.current().public(),
        &r,
        &result.to_bytes(),
        &SealOptions::default(),
        Timestamp::now(),
    )
    .unwrap();
    node_b.publish(&sealed.bytes).await.unwrap();
    node_b.publish(&sealed.bytes).await.unwrap(); // a duplicate is dropped

    let (status, results) =
        app.call("GET", &format!("/tasks/{task}/results?wait=20"), Some(&researcher), None).await;
    assert_eq!(status, 200, "{results}");
    assert_eq!(results["complete"], true, "{results}");
    let envelope_bytes = STANDARD.decode(results["results"][0]["envelope"].as_str().unwrap()).unwrap();
    let mut a_trusts = Keyring::new();
    a_trusts.insert(b.org(), b.current().public().clone());
    let opened = envelope::open(
        &envelope_bytes,
        &a,
        &a_trusts,
        &mut MemoryReplayGuard::new(),
        &OpenPolicy::default(),
        Timestamp::now(),
    )
    .unwrap();
    assert_eq!(opened.decode().unwrap(), result);

    let (_, shown) = app.call("GET", &format!("/tasks/{task}"), Some(&researcher), None).await;
    assert_eq!(shown["jobs"][0]["status"], "completed");
    let sql = app.sql().await;
    let routed: i64 = sql
        .query_one("SELECT count(*) FROM routing_log WHERE task_id = $1", &[task.as_uuid()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(routed, 2, "one job_start and one result, duplicates dropped");

    // The canary: no marker in any encoding in a dump of the server's database.
    let dump = std::process::Command::new("su")
        .args(["postgres", "-c", &format!("pg_dump --data-only {}", app.db_name)])
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout).to_string();
    assert!(dump.contains(&task.to_string()), "the dump holds the task's metadata");
    for secret in ["CANARY-7d1f0e-count-4242", "CANARY-result-9931", "CANARY-log-line"] {
        assert!(!dump.contains(secret), "{secret} in the database dump");
        assert!(!dump.contains(&hex::encode(secret)), "{secret} (hex) in the database dump");
    }
    app.cleanup().await;
}

/// Envelopes that break a rule go to the dead-letter queue with a reason, are recorded without
/// payload, and the router keeps routing.
#[tokio::test]
async fn refused_envelopes_are_dead_lettered_with_a_reason_and_routing_goes_on() {
    let app = spawn_app().await;
    let a = app.org("a").await;
    let b = app.org("b").await;
    let c = app.org("c-outsider").await;
    let collab = app.collaboration("ab", &[a.org(), b.org()]).await;
    app.collaboration("c-alone", &[c.org()]).await;
    let researcher = app.user(a.org(), "ada", "researcher").await;
    let node_a = NodeBroker::connect(&app, &app.node(a.org(), "a-1").await).await.unwrap();
    let node_b = NodeBroker::connect(&app, &app.node(b.org(), "b-1").await).await.unwrap();
    let node_c = NodeBroker::connect(&app, &app.node(c.org(), "c-1").await).await.unwrap();

    let (task, run) = (TaskId::new(), RunId::new());
    let r = route(Kind::JobStart, collab, task, run);
    let all = [a.org(), b.org()];
    let (_, ea, _) = job_entry(&a, a.org(), a.current().public(), &r, b"in-a", &all);
    let (_, eb, _) = job_entry(&a, b.org(), b.current().public(), &r, b"in-b", &all);
    let body = json!({"id": task, "run": run, "collaboration": collab, "image": "img", "jobs": [ea, eb]});
    let (status, created) = app.call("POST", "/tasks", Some(&researcher), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    node_a.next(10).await;
    node_b.next(10).await;

    let msg = route(Kind::RunMessage, collab, task, run);
    let seal = |from: &Identity, to: &Identity, at: Timestamp, ttl: Duration| {
        let options = SealOptions { ttl, ..SealOptions::default() };
        envelope::seal(from, to.org(), to.current().public(), &msg, b"x1", &options, at).unwrap().bytes
    };
    let hour = Duration::from_secs(3600);
    // B's node publishes an envelope whose header claims A as sender.
    let b_as_a = Identity::new(a.org(), OrgKey::generate());
    node_b.publish(&seal(&b_as_a, &a, Timestamp::now(), hour)).await.unwrap();
    // The outsider C writes into the run.
    node_c.publish(&seal(&c, &a, Timestamp::now(), hour)).await.unwrap();
    // Expired an hour ago.
    node_b.publish(&seal(&b, &a, Timestamp::now().saturating_sub(2 * hour), hour)).await.unwrap();
    // Not an envelope.
    node_b.publish(b"definitely not an envelope").await.unwrap();
    // And then a good one.
    let good = seal(&b, &a, Timestamp::now(), hour);
    node_b.publish(&good).await.unwrap();
    assert_eq!(node_a.next(10).await.data, good, "the router still routes after refusals");

    let sql = app.sql().await;
    let codes: Vec<String> = eventually(10, "four dead letters", || async {
        let rows = sql.query("SELECT reason_code FROM dead_letters ORDER BY id", &[]).await.ok()?;
        (rows.len() == 4).then(|| rows.iter().map(|r| r.get(0)).collect())
    })
    .await;
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, ["expired", "malformed", "not_a_member", "publisher_mismatch"], "{codes:?}");

    let admin = app.amqp("guest", "guest").await.unwrap();
    let ch = admin.create_channel().await.unwrap();
    let mut reasons = Vec::new();
    for _ in 0..4 {
        let m = ch
            .basic_get("fedq.dead-letters".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a dead letter");
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        match headers.inner().get("x-fedq-reason-code") {
            Some(AMQPValue::LongString(code)) => reasons.push(code.to_string()),
            other => panic!("dead letter without reason code: {other:?}"),
        }
        assert!(headers.inner().contains_key("x-fedq-reason"));
    }
    reasons.sort();
    assert_eq!(reasons, sorted);
    app.cleanup().await;
}

/// A node's broker user can consume only its organization's queue and publish only to ingress;
/// RabbitMQ itself refuses the rest. After revocation it cannot connect.
#[tokio::test]
async fn node_credentials_are_least_privilege_and_revocable() {
    let app = spawn_app().await;
    let a = app.org("a").await;
    let b = app.org("b").await;
    let reg_b = app.node(b.org(), "b-1").await;
    let node_b = NodeBroker::connect(&app, &reg_b).await.unwrap();
    let a_queue = fedq::broker::org_queue(a.org());

    let err = node_b.channel.basic_get(a_queue.as_str().into(), BasicGetOptions::default()).await;
    assert!(err.is_err(), "B must not read A's queue");

    let ch = node_b.connection.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let publish = async {
        ch.basic_publish(
            "fedq.deliver".into(),
            a.org().to_string().as_str().into(),
            Default::default(),
            b"x",
            Default::default(),
        )
        .await?
        .await
    }
    .await;
    assert!(publish.is_err(), "B must not publish to the delivery exchange");

    let ch = node_b.connection.create_channel().await.unwrap();
    let declared =
        ch.queue_declare("sneaky".into(), QueueDeclareOptions::default(), FieldTable::default()).await;
    assert!(declared.is_err(), "B must not declare queues");

    let ch = node_b.connection.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let spoof = async {
        ch.basic_publish(
            "fedq.ingress".into(),
            "".into(),
            Default::default(),
            b"x",
            lapin::BasicProperties::default().with_user_id("fedq-node-someone-else".into()),
        )
        .await?
        .await
    }
    .await;
    assert!(spoof.is_err(), "RabbitMQ refuses a user id that is not the publisher's");

    // Its own queue and ingress work.
    let ch = node_b.connection.create_channel().await.unwrap();
    assert!(ch.basic_get(node_b.queue.as_str().into(), BasicGetOptions::default()).await.is_ok());

    let node_id = reg_b["node"]["id"].as_str().unwrap();
    let (status, revoked) =
        app.call("DELETE", &format!("/nodes/{node_id}"), Some(&app.root_token), None).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_array() || !revoked["revoked_at"].is_null());
    eventually(10, "the revoked node's connection to close", || async {
        (!node_b.connection.status().connected()).then_some(())
    })
    .await;
    let again = NodeBroker::connect(&app, &reg_b).await;
    assert!(again.is_err(), "a revoked node cannot connect");
    let key = reg_b["api_key"].as_str().unwrap();
    let (status, _) = app.call("POST", "/node/heartbeat", Some(key), Some(json!({"version": "1"}))).await;
    assert_eq!(status, 401, "a revoked node's API key no longer works");
    app.cleanup().await;
}

/// Each resource: success, unauthenticated, forbidden across organizations, malformed body.
#[tokio::test]
async fn api_resources_answer_with_documented_codes() {
    let app = spawn_app().await;
    let a = app.org("a").await;
    let b = app.org("b").await;
    let collab = app.collaboration("ab-only-a", &[a.org()]).await;
    let admin_a = app.user(a.org(), "admin-a", "org_admin").await;
    let researcher_b = app.user(b.org(), "res-b", "researcher").await;
    let root = app.root_token.clone();

    // Unauthenticated.
    for (method, path) in
        [("GET", "/organizations"), ("POST", "/tasks"), ("GET", "/nodes"), ("GET", "/collaborations")]
    {
        let (status, body) = app.call(method, path, None, Some(json!({}))).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")), "{method} {path}");
    }
    let (status, body) = app.call("GET", "/organizations", Some("fedq_u_forged"), None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthenticated")));

    // Forbidden.
    let (status, body) =
        app.call("POST", "/organizations", Some(&researcher_b), Some(json!({"name": "x"}))).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) =
        app.call("POST", "/nodes", Some(&admin_a), Some(json!({"organization": b.org(), "name": "n"}))).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = app
        .call("POST", "/users", Some(&admin_a), Some(json!({"username": "u", "password": "a-long-password-1", "role": "researcher", "organization": b.org()})))
        .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    // B cannot see A's collaboration (not found, not forbidden: its existence is not revealed).
    let (status, body) =
        app.call("GET", &format!("/collaborations/{collab}"), Some(&researcher_b), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");

    // Malformed bodies.
    let resp = app
        .http
        .post(app.url("/organizations"))
        .bearer_auth(&root)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "malformed_body");
    let (status, body) = app
        .call("POST", "/organizations", Some(&root), Some(json!({"name": "x", "public_key": "nope"})))
        .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let (status, body) = app.call("POST", "/organizations", Some(&root), Some(json!({"nmae": "x"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed_body")), "{body}");

    // Conflicts and successes.
    let (status, body) = app.call("POST", "/organizations", Some(&root), Some(json!({"name": "a"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, orgs) = app.call("GET", "/organizations", Some(&admin_a), None).await;
    assert_eq!(status, 200);
    assert_eq!(orgs.as_array().unwrap().len(), 1, "A sees itself only: B shares no collaboration");
    let (status, keys) =
        app.call("GET", &format!("/collaborations/{collab}/public-keys"), Some(&admin_a), None).await;
    assert_eq!(status, 200);
    assert_eq!(keys[0]["public_key"], a.current().public().to_string());

    // Key rotation keeps history.
    let new_key = OrgKey::generate();
    let (status, org) = app
        .call(
            "PUT",
            &format!("/organizations/{}/public-key", a.org()),
            Some(&admin_a),
            Some(json!({"public_key": new_key.public().to_string()})),
        )
        .await;
    assert_eq!(status, 200, "{org}");
    assert_eq!(org["fingerprint"], new_key.id().to_string());
    let (_, history) =
        app.call("GET", &format!("/organizations/{}/keys", a.org()), Some(&admin_a), None).await;
    assert_eq!(history.as_array().unwrap().len(), 2);
    let (status, _) = app
        .call(
            "PUT",
            &format!("/organizations/{}/public-key", a.org()),
            Some(&researcher_b),
            Some(json!({"public_key": new_key.public().to_string()})),
        )
        .await;
    assert_eq!(status, 403);

    // A task naming an organization outside the collaboration.
    let researcher_a = app.user(a.org(), "res-a", "researcher").await;
    let (task, run) = (TaskId::new(), RunId::new());
    let r = route(Kind::JobStart, collab, task, run);
    let (_, entry, _) = job_entry(&a, b.org(), b.current().public(), &r, b"x", &[b.org()]);
    let body = json!({"id": task, "run": run, "collaboration": collab, "image": "img", "jobs": [entry]});
    let (status, body) = app.call("POST", "/tasks", Some(&researcher_a), Some(body)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let (status, body) = app
        .call("POST", "/login", None, Some(json!({"username": "res-a", "password": "wrong-password-1"})))
        .await;
    assert_eq!((status, body["code"].as_str()), (401, Some("bad_credentials")));
    let (status, body) = app.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{body}");
    let _ = (JobId::new(), OrgId::new());
    app.cleanup().await;
}

/// Envelopes published while the server is down wait in the durable ingress queue and are
/// routed, each once, when it comes back.
#[tokio::test]
async fn envelopes_published_while_the_server_is_down_are_routed_when_it_returns() {
    let mut app = spawn_app().await;
    let fixture = TwoOrgRun::start(&app).await;
    app.stop().await;
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let bytes = fixture.b_to_a(&[i]);
        fixture.node_b.publish(&bytes).await.unwrap();
        sent.push(bytes);
    }
    app.restart().await;
    let node_a = &fixture.node_a;
    let mut received = Vec::new();
    for _ in 0..20 {
        received.push(node_a.next(20).await.data);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(node_a.is_empty().await, "nothing delivered twice");
    sent.sort();
    received.sort();
    assert_eq!(sent, received);
    app.cleanup().await;
}

/// Two server replicas consume ingress together: every envelope is routed exactly once.
#[tokio::test]
async fn two_replicas_share_ingress_without_routing_anything_twice() {
    let app = spawn_app().await;
    let second = fedq::server::start(app.config.clone()).await.expect("a second replica starts");
    let fixture = TwoOrgRun::start(&app).await;
    let (node_a, node_b) = (&fixture.node_a, &fixture.node_b);
    let mut sent = Vec::new();
    for i in 0..200u8 {
        let bytes = fixture.b_to_a(&[i]);
        node_b.publish(&bytes).await.unwrap();
        // Every tenth envelope is published twice, as a retrying node would.
        if i % 10 == 0 {
            node_b.publish(&bytes).await.unwrap();
        }
        sent.push(bytes);
    }
    let mut received = Vec::new();
    for _ in 0..sent.len() {
        received.push(node_a.next(20).await.data);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(node_a.is_empty().await, "nothing routed twice");
    sent.sort();
    received.sort();
    assert_eq!(sent, received);
    let sql = app.sql().await;
    let publishers: i64 = sql
        .query_one("SELECT count(*) FROM routing_log WHERE kind = 'run_message'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(publishers, 200);
    second.shutdown().await;
    app.cleanup().await;
}

/// A node creates a subtask; killing the researcher's task kills the subtask's jobs too, and
/// every affected node is told by a control message from the server's broker user.
#[tokio::test]
async fn kill_reaches_subtasks_and_their_nodes() {
    let app = spawn_app().await;
    let a = app.org("a").await;
    let b = app.org("b").await;
    let collab = app.collaboration("ab", &[a.org(), b.org()]).await;
    let researcher = app.user(a.org(), "ada", "researcher").await;
    let viewer_b = app.user(b.org(), "vic", "viewer").await;
    let reg_a = app.node(a.org(), "a-1").await;
    let node_a = NodeBroker::connect(&app, &reg_a).await.unwrap();
    let node_b = NodeBroker::connect(&app, &app.node(b.org(), "b-1").await).await.unwrap();
    let (task, run) = (TaskId::new(), RunId::new());
    let r = route(Kind::JobStart, collab, task, run);
    let (_, ea, _) = job_entry(&a, a.org(), a.current().public(), &r, b"a", &[a.org()]);
    let body = json!({"id": task, "run": run, "collaboration": collab, "image": "img", "jobs": [ea]});
    assert_eq!(app.call("POST", "/tasks", Some(&researcher), Some(body)).await.0, 201);
    node_a.next(10).await;

    // A's node creates a subtask at B in the same run.
    let sub = TaskId::new();
    let r = route(Kind::JobStart, collab, sub, run);
    let (_, eb, _) = job_entry(&a, b.org(), b.current().public(), &r, b"sub", &[b.org()]);
    let key_a = reg_a["api_key"].as_str().unwrap();
    let body =
        json!({"id": sub, "run": run, "collaboration": collab, "image": "img", "parent": task, "jobs": [eb]});
    let (status, created) = app.call("POST", "/tasks", Some(key_a), Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["parent"], task.to_string());
    node_b.next(10).await;
    // A researcher cannot create a subtask, and a node cannot create a top-level task.
    let (status, _) = app.call("POST", "/tasks", Some(&researcher), Some(body)).await;
    assert_eq!(status, 400);

    // A viewer of another organization may not kill it.
    let (status, _) = app.call("POST", &format!("/tasks/{task}/kill"), Some(&viewer_b), None).await;
    assert_eq!(status, 403);
    let (status, killed) = app.call("POST", &format!("/tasks/{task}/kill"), Some(&researcher), None).await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["jobs"][0]["status"], "killed");
    let (_, sub_task) = app.call("GET", &format!("/tasks/{sub}"), Some(&researcher), None).await;
    assert_eq!(sub_task["jobs"][0]["status"], "killed");

    for (node, expected) in [(&node_a, task), (&node_b, sub)] {
        let delivery = node.next(10).await;
        assert_eq!(delivery.properties.kind().as_ref().map(|k| k.as_str()), Some("control"));
        assert_eq!(delivery.properties.user_id().as_ref().map(|u| u.as_str()), Some("guest"));
        let control = fedq::protocol::control::Control::from_bytes(&delivery.data).unwrap();
        assert_eq!(control, fedq::protocol::control::Control::Kill { task: expected, run });
    }
    app.cleanup().await;
}

/// Listing and reading across organizations: each organization sees its own users, nodes and
/// the tasks of its collaborations, and nothing of the others'.
#[tokio::test]
async fn organizations_see_only_their_own_users_nodes_and_tasks() {
    let app = spawn_app().await;
    let a = app.org("a").await;
    let b = app.org("b").await;
    let collab = app.collaboration("a-only", &[a.org()]).await;
    let admin_a = app.user(a.org(), "admin-a", "org_admin").await;
    let admin_b = app.user(b.org(), "admin-b", "org_admin").await;
    let viewer_b = app.user(b.org(), "viewer-b", "viewer").await;
    let researcher_a = app.user(a.org(), "res-a", "researcher").await;
    let reg_a = app.node(a.org(), "a-1").await;
    let node_a_id = reg_a["node"]["id"].as_str().unwrap().to_owned();

    let (task, run) = (TaskId::new(), RunId::new());
    let r = route(Kind::JobStart, collab, task, run);
    let (_, entry, _) = job_entry(&a, a.org(), a.current().public(), &r, b"x", &[a.org()]);
    let body = json!({"id": task, "run": run, "collaboration": collab, "image": "img", "jobs": [entry]});
    assert_eq!(app.call("POST", "/tasks", Some(&researcher_a), Some(body.clone())).await.0, 201);
    // A viewer may not create tasks; B's researcher-less admin may not use A's collaboration.
    let (status, _) = app.call("POST", "/tasks", Some(&viewer_b), Some(body)).await;
    assert_eq!(status, 403);

    let (_, users_b) = app.call("GET", "/users", Some(&admin_b), None).await;
    let names: Vec<&str> =
        users_b.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin-b", "admin-of-b", "viewer-b"]);
    let (_, nodes_b) = app.call("GET", "/nodes", Some(&admin_b), None).await;
    assert_eq!(nodes_b.as_array().unwrap().len(), 0);
    let (status, _) = app.call("GET", &format!("/nodes/{node_a_id}"), Some(&admin_b), None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("DELETE", &format!("/nodes/{node_a_id}"), Some(&admin_b), None).await;
    assert_eq!(status, 404);
    let (_, tasks_b) = app.call("GET", "/tasks", Some(&admin_b), None).await;
    assert_eq!(tasks_b.as_array().unwrap().len(), 0);
    let (status, _) = app.call("GET", &format!("/tasks/{task}"), Some(&viewer_b), None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("GET", &format!("/tasks/{task}/results"), Some(&admin_b), None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("POST", &format!("/tasks/{task}/kill"), Some(&admin_b), None).await;
    assert_eq!(status, 404);

    let (_, tasks_a) =
        app.call("GET", &format!("/tasks?collaboration={collab}&status=pending"), Some(&admin_a), None).await;
    assert_eq!(tasks_a.as_array().unwrap().len(), 1);
    let (status, body) = app.call("GET", "/tasks?limit=0", Some(&admin_a), None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")));
    let (status, body) = app.call("GET", "/tasks?status=bogus", Some(&admin_a), None).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    // The message names the broken rule, not only that the query string is invalid.
    assert!(body["message"].as_str().unwrap().contains("unknown variant `bogus`, expected one of"), "{body}");
    let (_, body) = app.call("GET", "/tasks?colour=red", Some(&admin_a), None).await;
    assert!(body["message"].as_str().unwrap().contains("unknown field `colour`"), "{body}");
    let (_, body) = app.call("GET", "/tasks?limit=ten", Some(&admin_a), None).await;
    assert!(body["message"].as_str().unwrap().contains("invalid digit"), "{body}");

    // Users: an admin deletes their own users only.
    let (_, me) = app.call("GET", "/users/me", Some(&viewer_b), None).await;
    let viewer_id = me["id"].as_str().unwrap().to_owned();
    let (status, _) = app.call("DELETE", &format!("/users/{viewer_id}"), Some(&admin_a), None).await;
    assert_eq!(status, 404);
    let (status, _) = app.call("DELETE", &format!("/users/{viewer_id}"), Some(&admin_b), None).await;
    assert_eq!(status, 200);
    let (status, _) = app.call("GET", "/users/me", Some(&viewer_b), None).await;
    assert_eq!(status, 401, "a deleted user's session ends");

    // Heartbeats are for nodes.
    let (status, _) =
        app.call("POST", "/node/heartbeat", Some(&admin_a), Some(json!({"version": "1"}))).await;
    assert_eq!(status, 403);
    let key = reg_a["api_key"].as_str().unwrap();
    let (status, _) = app.call("POST", "/node/heartbeat", Some(key), Some(json!({"version": "0.1.0"}))).await;
    assert_eq!(status, 200);
    let (_, node) = app.call("GET", &format!("/nodes/{node_a_id}"), Some(&admin_a), None).await;
    assert_eq!((node["online"].as_bool(), node["version"].as_str()), (Some(true), Some("0.1.0")));
    let (status, body) = app.call("POST", "/node/heartbeat", Some(key), Some(json!({"versoin": "1"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed_body")));
    app.cleanup().await;
}

/// Failed logins are counted per user name and client address, per client address, and per
/// user name from addresses it has not logged in from; behind a reverse proxy named in
/// `auth.trusted_proxies`, the client's address is the last of `X-Forwarded-For`.
#[tokio::test]
async fn failed_logins_are_limited_per_user_and_address_per_address_and_per_user() {
    let (mut config, db_name, vhost) = prepare().await;
    config.auth.failures_per_user_and_address = 3;
    config.auth.failures_per_user = 12;
    config.auth.failures_per_address = 5;
    config.auth.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let server = fedq::server::start(config.clone()).await.expect("the server starts");
    let mut app = attach(config, db_name, vhost, server.addr).await;
    app.server = Some(server);
    let org = app.org("limited").await;
    app.user(org.org(), "alice", "researcher").await;
    app.user(org.org(), "bob", "researcher").await;
    let login = |user: &'static str, password: &'static str, client: String| {
        let http = app.http.clone();
        let url = app.url("/login");
        async move {
            let response = http
                .post(url)
                .header("x-forwarded-for", format!("203.0.113.200, {client}"))
                .json(&json!({ "username": user, "password": password }))
                .send()
                .await
                .unwrap();
            let retry = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["code"].as_str().unwrap_or_default().to_owned(), retry)
        }
    };
    const RIGHT: &str = "a-long-password-123";
    let at = |a: &str| a.to_owned();
    // Alice logs in from her own address once: it is known for her from then on.
    assert_eq!(login("alice", RIGHT, at("192.0.2.50")).await.0, 200);

    // Three wrong passwords for alice from one client: alice is refused there, even with her
    // password, and with a Retry-After; not from another address, and bob is not.
    for _ in 0..3 {
        assert_eq!(login("alice", "wrong", at("192.0.2.1")).await.0, 401);
    }
    let (status, code, retry) = login("alice", RIGHT, at("192.0.2.1")).await;
    assert_eq!((status, code.as_str()), (429, "too_many_attempts"));
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    assert_eq!(login("alice", RIGHT, at("192.0.2.2")).await.0, 200);
    assert_eq!(login("bob", RIGHT, at("192.0.2.1")).await.0, 200);

    // A thousand wrong passwords for alice from two hundred addresses: after 12 failures in all
    // from addresses she has not logged in from, none is checked; alice still gets in from
    // the addresses she used, not from a new one.
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..1000 {
        let (status, _, _) = login("alice", "wrong", format!("198.51.100.{}", i % 200)).await;
        *answers.entry(status).or_default() += 1;
    }
    assert_eq!(answers.get(&401).copied(), Some(12 - 3), "the three above counted too: {answers:?}");
    assert_eq!(login("alice", RIGHT, at("192.0.2.50")).await.0, 200);
    assert_eq!(login("alice", RIGHT, at("192.0.2.2")).await.0, 200);
    assert_eq!(login("alice", RIGHT, at("192.0.2.3")).await.1, "too_many_attempts");

    // Five failures from one client address, whatever the user: that address is refused, others
    // are not; the address the client put first in the header does not count.
    for user in ["u1", "u2", "u3", "u4", "u5"] {
        assert_eq!(login(user, "wrong", at("192.0.2.9")).await.0, 401);
    }
    assert_eq!(login("bob", RIGHT, at("192.0.2.9")).await.1, "too_many_attempts");
    assert_eq!(login("bob", RIGHT, at("192.0.2.10")).await.0, 200);
    app.cleanup().await;
}

/// A task of A's researcher with a job at A and one at B, both delivered to nodes connected to
/// the broker: what run messages between A and B need.
struct RunOfTwo {
    collab: fedq::ids::CollaborationId,
    task: TaskId,
    run: RunId,
    researcher: String,
    node_a: NodeBroker,
    node_b: NodeBroker,
}

impl RunOfTwo {
    /// A and B, with `others`, in a new collaboration, and the task.
    async fn start(app: &TestApp, a: &Identity, b: &Identity, others: &[&Identity]) -> Self {
        let members: Vec<OrgId> = [a, b].iter().chain(others).map(|o| o.org()).collect();
        let collab = app.collaboration("run-of-two", &members).await;
        let researcher = app.user(a.org(), "ada", "researcher").await;
        let node_a = NodeBroker::connect(app, &app.node(a.org(), "a-1").await).await.unwrap();
        let node_b = NodeBroker::connect(app, &app.node(b.org(), "b-1").await).await.unwrap();
        let (task, run) = (TaskId::new(), RunId::new());
        let start = route(Kind::JobStart, collab, task, run);
        let both = [a.org(), b.org()];
        let (_, ea, _) = job_entry(a, a.org(), a.current().public(), &start, b"in-a", &both);
        let (_, eb, _) = job_entry(a, b.org(), b.current().public(), &start, b"in-b", &both);
        let body = json!({"id": task, "run": run, "collaboration": collab, "image": "img", "jobs": [ea, eb]});
        let (status, created) = app.call("POST", "/tasks", Some(&researcher), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        node_a.next(10).await;
        node_b.next(10).await;
        Self { collab, task, run, researcher, node_a, node_b }
    }

    /// A run message from `from` to `to`, created at `at`.
    fn message(&self, from: &Identity, to: &Identity, at: Timestamp) -> Vec<u8> {
        let msg = route(Kind::RunMessage, self.collab, self.task, self.run);
        envelope::seal(from, to.org(), to.current().public(), &msg, b"x1", &SealOptions::default(), at)
            .unwrap()
            .bytes
    }
}

/// A node floods ingress with large envelopes the router refuses: the dead-letter queue keeps
/// only their header bytes and at most `router.dead_letter_max_messages` of them, a message
/// above the broker's size limit is refused by RabbitMQ, and the others' traffic keeps flowing.
#[tokio::test]
async fn a_flood_of_refused_envelopes_is_contained_while_others_keep_working() {
    const FLOOD: usize = 300;
    const BIG: usize = 256 * 1024;
    let (mut config, db_name, vhost) = prepare().await;
    config.router.dead_letter_max_messages = 100;
    let server = fedq::server::start(config.clone()).await.expect("the server starts");
    let mut app = attach(config, db_name, vhost, server.addr).await;
    app.server = Some(server);
    let (a, b, c) = (app.org("a").await, app.org("b").await, app.org("c").await);
    let shared = RunOfTwo::start(&app, &a, &b, &[&c]).await;
    let node_c = NodeBroker::connect(&app, &app.node(c.org(), "c-1").await).await.unwrap();

    // C floods: large byte strings that are no envelopes.
    let garbage = vec![0xAB_u8; BIG];
    for _ in 0..FLOOD {
        node_c.publish(&garbage).await.unwrap();
    }
    // Meanwhile B's run message reaches A.
    let good = shared.message(&b, &a, Timestamp::now());
    shared.node_b.publish(&good).await.unwrap();
    assert_eq!(shared.node_a.next(60).await.data, good, "B's message arrives through the flood");

    let sql = app.sql().await;
    eventually(60, "every refusal recorded", || async {
        let n: i64 = sql.query_one("SELECT count(*) FROM dead_letters", &[]).await.ok()?.get(0);
        (n == FLOOD as i64).then_some(())
    })
    .await;
    // The broker's statistics lag by a few seconds: wait for them to show the bound reached.
    let dead = eventually(60, "the dead-letter queue at its bound of 100", || async {
        let q = management().queue(&app.vhost, "fedq.dead-letters").await.ok().flatten()?;
        (q.messages == 100).then_some(q)
    })
    .await;
    eprintln!("{FLOOD} refused envelopes of {BIG} bytes: dead-letter queue {dead:?}");
    let admin = app.amqp("guest", "guest").await.unwrap();
    let ch = admin.create_channel().await.unwrap();
    let m = ch
        .basic_get("fedq.dead-letters".into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a dead letter");
    assert_eq!(m.delivery.data.len(), fedq::broker::DEAD_LETTER_KEEP_BYTES, "only the header bytes are kept");
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    assert_eq!(headers.inner().get("x-fedq-size"), Some(&AMQPValue::LongLongInt(BIG as i64)));

    // Above the broker's message size limit, RabbitMQ itself refuses the publish.
    let huge = vec![0u8; 18 * 1024 * 1024];
    assert!(node_c.publish(&huge).await.is_err(), "an 18 MiB message is refused by the broker");
    app.cleanup().await;
}

/// A node floods ingress faster than its rate: past its burst its envelopes are refused
/// `rate_limited` before they are parsed, only `router.dead_letters_per_publisher_hour` of its
/// refusals are recorded, and another node's message arrives through the flood. Every queue is
/// bounded by the `fedq-queues` policy: with A's node not consuming, A's queue holds at most
/// `router.queue_max_mib`, the envelope past it is refused by the broker and dead-lettered by
/// the router as `undeliverable`, and A's queue takes envelopes again once drained.
#[tokio::test]
async fn a_flooding_node_is_rate_limited_and_every_queue_is_bounded() {
    const FLOOD: usize = 1000;
    let (mut config, db_name, vhost) = prepare().await;
    config.router.publisher_envelopes_per_sec = 5;
    config.router.publisher_burst_secs = 4;
    config.router.dead_letters_per_publisher_hour = 50;
    config.router.queue_max_mib = 1;
    let server = fedq::server::start(config.clone()).await.expect("the server starts");
    let mut app = attach(config, db_name, vhost, server.addr).await;
    app.server = Some(server);
    let (a, b, c) = (app.org("a").await, app.org("b").await, app.org("c").await);
    let shared = RunOfTwo::start(&app, &a, &b, &[&c]).await;
    let node_c = NodeBroker::connect(&app, &app.node(c.org(), "c-1").await).await.unwrap();

    for i in 0..FLOOD {
        node_c.publish(&vec![(i % 251) as u8; 256]).await.unwrap();
    }
    let good = shared.message(&b, &a, Timestamp::now());
    shared.node_b.publish(&good).await.unwrap();
    assert_eq!(shared.node_a.next(60).await.data, good, "B's message arrives through the flood");
    let sql = app.sql().await;
    let by_code = || async {
        let rows = sql
            .query(
                "SELECT reason_code, count(*) FROM dead_letters WHERE publisher = $1 GROUP BY 1",
                &[&node_c.user],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    eventually(60, "the flood taken off the ingress queue", || async {
        let q = management().queue(&app.vhost, "fedq.ingress").await.ok().flatten()?;
        (q.messages == 0).then_some(())
    })
    .await;
    let recorded = by_code().await;
    assert_eq!(recorded.values().sum::<i64>(), 50, "{recorded:?}");
    assert!(recorded.get("malformed").is_some_and(|&n| n >= 20), "the burst was parsed: {recorded:?}");
    assert!(recorded.get("rate_limited").is_some_and(|&n| n > 0), "{recorded:?}");

    // A's queue: five envelopes of 400 KiB from B. A quorum queue refuses publishes once it
    // holds more than its bound, so it keeps at most the bound and the envelope that crossed it.
    let route = route(Kind::RunMessage, shared.collab, shared.task, shared.run);
    let big = |n: u8| {
        let payload = vec![n; 400 * 1024];
        envelope::seal(
            &b,
            a.org(),
            a.current().public(),
            &route,
            &payload,
            &SealOptions::default(),
            Timestamp::now(),
        )
        .unwrap()
        .bytes
    };
    // One at a time, each routed before the next, as the bound holds between envelopes (those
    // forwarded at the same moment are all taken).
    let admin = app.amqp("guest", "guest").await.unwrap();
    let ch = admin.create_channel().await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let queue_a = fedq::broker::org_queue(a.org());
    let settled = || async {
        let queued = ch.queue_declare(queue_a.as_str().into(), passive, FieldTable::default()).await.unwrap();
        let dead: i64 = sql
            .query_one("SELECT count(*) FROM dead_letters WHERE reason_code = 'undeliverable'", &[])
            .await
            .unwrap()
            .get(0);
        (i64::from(queued.message_count()), dead)
    };
    let sent: Vec<Vec<u8>> = (1..=5).map(big).collect();
    for (i, bytes) in sent.iter().enumerate() {
        shared.node_b.publish(bytes).await.unwrap();
        eventually(60, "the envelope queued at A or dead-lettered", || async {
            let (queued, dead) = settled().await;
            (queued + dead == i as i64 + 1).then_some(())
        })
        .await;
    }
    let undeliverable: String = sql
        .query_one("SELECT reason FROM dead_letters WHERE reason_code = 'undeliverable' LIMIT 1", &[])
        .await
        .unwrap()
        .get(0);
    assert!(undeliverable.contains("queue at its bound"), "{undeliverable}");
    let mut queued = Vec::new();
    while let Some(m) = shared.node_a.try_next().await {
        queued.push(m.data);
    }
    assert!((2..=3).contains(&queued.len()), "1 MiB and the envelope that crossed it: {}", queued.len());
    assert!(queued.iter().all(|q| sent.contains(q)));
    let again = big(6);
    shared.node_b.publish(&again).await.unwrap();
    assert_eq!(shared.node_a.next(60).await.data, again, "a drained queue takes envelopes again");
    app.cleanup().await;
}

/// Request bodies: a route other than task creation takes at most 1 MiB, whatever
/// `http.max_body_bytes`; a task body reserves its size from `http.body_budget_mib` (half of it
/// per organization) before it is read, and one larger than an organization's share is refused
/// at once, naming the setting, while a smaller one goes through.
#[tokio::test]
async fn request_bodies_are_bounded_per_route_and_in_flight() {
    let (mut config, db_name, vhost) = prepare().await;
    config.http.body_budget_mib = 4;
    let server = fedq::server::start(config.clone()).await.expect("the server starts");
    let mut app = attach(config, db_name, vhost, server.addr).await;
    app.server = Some(server);
    let a = app.org("a").await;
    let researcher = app.user(a.org(), "ada", "researcher").await;
    let root = app.root_token.clone();
    let big_name = json!({"name": "x".repeat(2 * 1024 * 1024)});
    let (status, body) = app.call("POST", "/organizations", Some(&root), Some(big_name)).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")), "{body}");
    let task = |mib: usize| json!({"id": TaskId::new(), "padding": "x".repeat(mib * 1024 * 1024)});
    let (status, body) = app.call("POST", "/tasks", Some(&researcher), Some(task(3))).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("http.body_budget_mib"), "{body}");
    // Within the share, the body is read and judged on what it says.
    let (status, body) = app.call("POST", "/tasks", Some(&researcher), Some(task(1))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed_body")), "{body}");
    app.cleanup().await;
}

/// A compromised key revoked by its organization's administrator signs nothing any more: an
/// envelope signed with it is refused even with a creation time from before the revocation
/// (which its signer chooses), the collaboration's key listing says it is revoked, and clients
/// that trusted it stop trusting it and follow no rotation from it.
#[tokio::test]
async fn a_revoked_key_signs_nothing_whatever_time_it_claims() {
    let app = spawn_app().await;
    let (a, b) = (app.org("a").await, app.org("b").await);
    let shared = RunOfTwo::start(&app, &a, &b, &[]).await;
    let (node_a, node_b) = (&shared.node_a, &shared.node_b);
    let signed_by_b = |at: Timestamp| shared.message(&b, &a, at);
    let ten_minutes_ago = Timestamp::now().saturating_sub(Duration::from_secs(600));
    let before = signed_by_b(ten_minutes_ago);
    node_b.publish(&before).await.unwrap();
    assert_eq!(node_a.next(10).await.data, before, "B's key signs before the revocation");

    // B's administrator revokes the key with a statement signed by it (another organization's
    // administrator may not, nor root, nor anyone without a signature of B's).
    let fingerprint = b.current().id().to_string();
    let admin_a = app.login("admin-of-a", "a-long-password-123").await;
    let path = format!("/organizations/{}/keys/{fingerprint}/revoke", b.org());
    let signed = |by: &fedq::keys::OrgKey| {
        let revocation = fedq::keys::Revocation::sign(b.org(), b.current().id(), by);
        json!({"signature": STANDARD.encode(revocation.signature), "signed_by": by.id().to_string()})
    };
    assert_eq!(app.call("POST", &path, Some(&admin_a), Some(signed(b.current()))).await.0, 403);
    let (status, body) = app.call("POST", &path, Some(&app.root_token), Some(signed(b.current()))).await;
    assert_eq!(status, 403, "root does not revoke an organization's key: {body}");
    let admin_b = app.login("admin-of-b", "a-long-password-123").await;
    let (status, body) = app.call("POST", &path, Some(&admin_b), Some(json!({}))).await;
    assert_eq!(status, 400, "unsigned: {body}");
    let (status, body) = app.call("POST", &path, Some(&admin_b), Some(signed(a.current()))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "signed by A's key: {body}");
    let mut forged = signed(b.current());
    forged["signature"] = json!(STANDARD.encode([7u8; 64]));
    let (status, body) = app.call("POST", &path, Some(&admin_b), Some(forged)).await;
    assert!(status == 400 && body["message"].as_str().unwrap().contains("does not verify"), "{body}");
    assert_eq!(app.call("POST", &path, Some(&admin_b), Some(signed(b.current()))).await.0, 204);

    // Signed "ten minutes ago", before the revocation: refused all the same.
    let backdated = signed_by_b(ten_minutes_ago.saturating_add(Duration::from_secs(1)));
    node_b.publish(&backdated).await.unwrap();
    let sql = app.sql().await;
    let code: String = eventually(10, "the backdated envelope dead-lettered", || async {
        sql.query_opt("SELECT reason_code FROM dead_letters", &[]).await.ok()?.map(|r| r.get(0))
    })
    .await;
    assert_eq!(code, "unknown_sender_key");
    assert!(node_a.is_empty().await, "nothing reached A");

    // The listing says so, and a client that trusted the key stops trusting it.
    let (collab, researcher) = (shared.collab, shared.researcher.clone());
    let (_, listed) =
        app.call("GET", &format!("/collaborations/{collab}/public-keys"), Some(&researcher), None).await;
    let entry =
        listed.as_array().unwrap().iter().find(|k| k["key_id"] == fingerprint.as_str()).expect("listed");
    assert!(!entry["revoked_at"].is_null(), "{listed}");
    let trust = std::sync::Arc::new(fedq::keys::KeyTrust::in_memory(fedq::keys::FirstUse::Refuse));
    trust.trust(b.org(), b.current().id()).unwrap();
    trust.trust(a.org(), a.current().id()).unwrap();
    let client = fedq::client::Client::with_token(
        &format!("http://{}", app.addr),
        &Default::default(),
        researcher.clone().into(),
    )
    .unwrap()
    .with_trust(trust.clone());
    let decisions = client.trusted_keys(collab).await.unwrap();
    assert!(decisions.iter().all(|d| d.org != b.org()), "B has no current key to decide on");
    assert!(trust.current(b.org()).is_none(), "nothing is sealed to B's revoked key");
    use fedq::keys::SenderKeys as _;
    assert!(trust.sender_key(b.org(), &b.current().id()).is_none(), "nor does it verify anything");

    // A revocation the server makes up (no signature of A's) takes nothing away from A.
    sql.execute("UPDATE organization_keys SET revoked_at = now() WHERE org_id = $1", &[a.org().as_uuid()])
        .await
        .unwrap();
    client.trusted_keys(collab).await.unwrap();
    assert!(trust.sender_key(a.org(), &a.current().id()).is_some(), "A's key still verifies at the client");
    app.cleanup().await;
}

/// The server's AMQP user needs no RabbitMQ tag and nothing outside fedq's objects in its own
/// virtual host: with such a user (and the management API user kept apart), tasks are created
/// and envelopes routed, and the user can reach no other virtual host.
#[tokio::test]
async fn the_server_routes_with_an_amqp_user_without_tags_confined_to_fedq_objects() {
    use secrecy::ExposeSecret as _;
    let (mut config, db_name, vhost) = prepare().await;
    let user = format!("fedq-server-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = secrecy::SecretString::from(uuid::Uuid::new_v4().simple().to_string());
    let mgmt = management();
    mgmt.put_user(&user, &password).await.unwrap();
    let fedq_only = fedq::broker::management::Permissions {
        configure: "^fedq\\..*".into(),
        write: "^fedq\\..*".into(),
        read: "^fedq\\..*".into(),
    };
    mgmt.set_permissions(&vhost, &user, &fedq_only).await.unwrap();
    config.broker.url = secrecy::SecretString::from(format!(
        "amqp://{user}:{}@127.0.0.1:5672/{vhost}",
        password.expose_secret()
    ));
    let server = fedq::server::start(config.clone()).await.expect("the server starts");
    let mut app = attach(config, db_name, vhost, server.addr).await;
    app.server = Some(server);

    let (a, b) = (app.org("a").await, app.org("b").await);
    let shared = RunOfTwo::start(&app, &a, &b, &[]).await;
    let registration = app.node(b.org(), "b-2").await;
    assert_eq!(registration["broker"]["server_user"], user.as_str(), "nodes trust its control messages");
    let good = shared.message(&b, &a, Timestamp::now());
    shared.node_b.publish(&good).await.unwrap();
    assert_eq!(shared.node_a.next(20).await.data, good, "routed by the untagged user");

    let elsewhere = lapin::Connection::connect(
        &format!("amqp://{user}:{}@127.0.0.1:5672/%2f", password.expose_secret()),
        lapin::ConnectionProperties::default(),
    )
    .await;
    assert!(elsewhere.is_err(), "the server's AMQP user reaches no other virtual host");
    app.cleanup().await;
    mgmt.delete_user(&user).await.unwrap();
}

/// The client keeps what the server says about a refusal: its status, its stable code and its
/// message, so that callers (the command line, bindings in other languages) can tell them apart.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_keeps_the_code_of_a_refusal() {
    let app = spawn_app().await;
    let base = format!("http://{}", app.addr);
    let tls = fedq::tls::ClientTls::default();
    let client = fedq::client::Client::login(&base, &tls, "root", ROOT_PASSWORD).await.unwrap();
    let missing = TaskId::new();
    let err = client.task(missing).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(404), Some("not_found")), "{err}");
    assert!(err.to_string().contains(&missing.to_string()), "{err}");
    let wrong = fedq::client::Client::login(&base, &tls, "root", "not-the-password").await.unwrap_err();
    assert_eq!((wrong.status(), wrong.code()), (Some(401), Some("bad_credentials")), "{wrong}");
    app.cleanup().await;
}

/// The status the database keeps for each task (migration V7) follows its jobs by the same rule
/// as `TaskStatus::of`, for every combination of three jobs' statuses, whether the jobs change
/// one statement at a time or together, and from the moment they are inserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_task_status_follows_its_jobs_by_the_protocols_rule() {
    use fedq::protocol::TaskStatus;
    let app = spawn_app().await;
    let orgs = [app.org("a").await, app.org("b").await, app.org("c").await];
    let ids: Vec<OrgId> = orgs.iter().map(|o| o.org()).collect();
    let collaboration = app.collaboration("abc", &ids).await;
    let sql = app.sql().await;
    let task = uuid::Uuid::new_v4();
    sql.execute(
        "INSERT INTO tasks (id, collaboration_id, run_id, image, name, creator_org_id)
         VALUES ($1, $2, $3, 'img', 'statuses', $4)",
        &[&task, collaboration.as_uuid(), &uuid::Uuid::new_v4(), ids[0].as_uuid()],
    )
    .await
    .unwrap();
    let jobs: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::new_v4()).collect();
    sql.execute(
        "INSERT INTO jobs (id, task_id, org_id) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[])",
        &[&jobs, &vec![task; 3], &ids.iter().map(|o| *o.as_uuid()).collect::<Vec<_>>()],
    )
    .await
    .unwrap();
    let stored = || async {
        let row = sql.query_one("SELECT status FROM tasks WHERE id = $1", &[&task]).await.unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(stored().await, "pending");

    let mut checked = 0;
    for a in JobStatus::ALL {
        for b in JobStatus::ALL {
            for c in JobStatus::ALL {
                let statuses = [a, b, c];
                // Alternately in one statement and in three.
                if checked % 2 == 0 {
                    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
                    sql.execute(
                        "UPDATE jobs SET status = u.status FROM unnest($1::uuid[], $2::text[]) u(id, status)
                         WHERE jobs.id = u.id",
                        &[&jobs, &names],
                    )
                    .await
                    .unwrap();
                } else {
                    for (job, status) in jobs.iter().zip(statuses) {
                        sql.execute("UPDATE jobs SET status = $2 WHERE id = $1", &[job, &status.as_str()])
                            .await
                            .unwrap();
                    }
                }
                assert_eq!(stored().await, TaskStatus::of(statuses).as_str(), "jobs {statuses:?}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 512);
    app.cleanup().await;
}

/// The retention job removes what is older than the settings, a batch per statement, while
/// routing goes on: routing-log rows, a result and dead letters past their days and an expired
/// session go; the recent ones, the envelopes routed meanwhile and live sessions stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_rows_in_batches_while_routing_goes_on() {
    let mut app = spawn_app().await;
    let fixture = TwoOrgRun::start(&app).await;
    let (a, b) = (*fixture.a.org().as_uuid(), *fixture.b.org().as_uuid());
    let sql = app.sql().await;
    sql.execute(
        "INSERT INTO routing_log (message_id, kind, sender_org, recipient_org, collaboration_id, task_id, run_id,
                                  size, outcome, via, publisher, routed_at)
         SELECT decode(md5('old' || i), 'hex'), 'run_message', $1, $2, $3, $4, $5, 100, 'forwarded', 'broker',
                'old', now() - interval '40 days'
         FROM generate_series(1, 20000) i",
        &[&b, &a, fixture.collaboration.as_uuid(), fixture.task.as_uuid(), fixture.run.as_uuid()],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO dead_letters (reason_code, reason, publisher, size, received_at)
         SELECT 'malformed', 'old', 'test', 10, now() - CASE WHEN i <= 300 THEN interval '40 days' ELSE interval '0' END
         FROM generate_series(1, 303) i",
        &[],
    )
    .await
    .unwrap();
    // An old result of A's job, a recent one of B's.
    sql.execute(
        "INSERT INTO results (job_id, message_id, envelope, received_at)
         SELECT id, decode(md5(id::text), 'hex'), '\\x00'::bytea,
                now() - CASE WHEN org_id = $2 THEN interval '40 days' ELSE interval '0' END
         FROM jobs WHERE task_id = $1",
        &[fixture.task.as_uuid(), &a],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO sessions (token_hash, user_id, expires_at)
         SELECT decode(md5('expired'), 'hex'), id, now() - interval '1 hour' FROM users WHERE username = 'root'",
        &[],
    )
    .await
    .unwrap();
    let count = |query: &'static str| {
        let sql = &sql;
        async move { sql.query_one(query, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let recent_log = count("SELECT count(*) FROM routing_log WHERE publisher <> 'old'").await;

    app.stop().await;
    app.config.retention.routing_log_days = 32;
    app.config.retention.batch_rows = 500;
    app.restart().await;
    // Routed while the first round runs.
    for i in 0..100u8 {
        fixture.node_b.publish(&fixture.b_to_a(&[i])).await.unwrap();
    }
    for _ in 0..100 {
        fixture.node_a.next(30).await;
    }
    eventually(60, "the old rows to be removed", || async {
        let old = count("SELECT count(*) FROM routing_log WHERE publisher = 'old'").await
            + count("SELECT count(*) FROM dead_letters WHERE received_at < now() - interval '1 day'").await
            + count("SELECT count(*) FROM results WHERE received_at < now() - interval '1 day'").await
            + count("SELECT count(*) FROM sessions WHERE expires_at < now()").await;
        (old == 0).then_some(())
    })
    .await;
    assert_eq!(count("SELECT count(*) FROM routing_log").await, recent_log + 100);
    assert_eq!(count("SELECT count(*) FROM dead_letters").await, 3);
    assert_eq!(count("SELECT count(*) FROM results").await, 1);
    let (status, _) = app.call("GET", "/collaborations", Some(&app.root_token.clone()), None).await;
    assert_eq!(status, 200, "a live session outlives the round");
    let metrics = scrape(app.server.as_ref().unwrap().metrics_addr.unwrap()).await;
    assert_eq!(sample(&metrics, "fedq_retention_removed_rows_total{table=\"routing_log\"}"), Some(20000.0));
    app.cleanup().await;
}

/// `PATCH /users/{id}`: an organization's administrator changes the roles of its users, and
/// no one else does, root included; no one becomes or stops being root this way; the new role
/// holds in the user's session at once.
#[tokio::test]
async fn roles_change_within_an_organization_by_its_administrators() {
    let app = spawn_app().await;
    let a = app.org("a").await;
    app.org("b").await;
    let password = "a-long-password-123";
    let admin_a = app.login("admin-of-a", password).await;
    let admin_b = app.login("admin-of-b", password).await;
    let ada = app.user(a.org(), "ada", "researcher").await;
    let (_, me) = app.call("GET", "/users/me", Some(&ada), None).await;
    let ada_id = me["id"].as_str().unwrap().to_owned();
    let (_, users) = app.call("GET", "/users", Some(&app.root_token), None).await;
    let root_id = users.as_array().unwrap().iter().find(|u| u["username"] == "root").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let set = |token: String, id: String, body: serde_json::Value| {
        let app = &app;
        async move { app.call("PATCH", &format!("/users/{id}"), Some(&token), Some(body)).await }
    };
    let role = |r: &str| json!({"role": r});

    // Another organization's administrator does not see ada; ada may not promote herself.
    let (status, body) = set(admin_b.clone(), ada_id.clone(), role("viewer")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = set(ada.clone(), ada_id.clone(), role("org_admin")).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    // Nobody becomes or stops being root this way.
    let (status, body) = set(admin_a.clone(), ada_id.clone(), role("root")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let (status, body) = set(app.root_token.clone(), ada_id.clone(), role("root")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    let (status, body) = set(app.root_token.clone(), root_id.clone(), role("viewer")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("root administrator"), "{body}");
    let (status, _) = set(admin_a.clone(), root_id, role("viewer")).await;
    assert_eq!(status, 404, "an organization's administrator does not see root");
    let (status, body) = set(admin_a.clone(), ada_id.clone(), json!({"role": "boss"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("malformed_body")), "{body}");
    let (status, _) = set(admin_a.clone(), uuid::Uuid::new_v4().to_string(), role("viewer")).await;
    assert_eq!(status, 404);

    // A's administrator makes ada a viewer; her session has the new role at once.
    let (status, body) = set(admin_a.clone(), ada_id.clone(), role("viewer")).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("viewer")), "{body}");
    assert_eq!(body["organization"], a.org().to_string());
    let (_, me) = app.call("GET", "/users/me", Some(&ada), None).await;
    assert_eq!(me["role"], "viewer");
    // Root may not make her an administrator of A; A's administrator may, and she may now list
    // A's dead letters.
    let (status, body) = set(app.root_token.clone(), ada_id.clone(), role("org_admin")).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("by its own administrators, not by root"), "{body}");
    let (_, me) = app.call("GET", "/users/me", Some(&ada), None).await;
    assert_eq!(me["role"], "viewer");
    let (status, body) = set(admin_a.clone(), ada_id.clone(), role("org_admin")).await;
    assert_eq!((status, body["role"].as_str()), (200, Some("org_admin")), "{body}");
    let (status, _) = app.call("GET", "/dead-letters", Some(&ada), None).await;
    assert_eq!(status, 200);
    app.cleanup().await;
}

/// Root creates an organization's first administrator and nothing else inside it: not a second
/// administrator, not a researcher, and it neither deletes nor re-roles the organization's
/// users. Two roots racing to create a first administrator make one.
#[tokio::test]
async fn root_creates_only_an_organizations_first_administrator() {
    let app = spawn_app().await;
    let password = "a-long-password-123";
    let create = |token: String, org: OrgId, name: &str, role: &str| {
        let app = &app;
        let body = json!({"username": name, "password": password, "role": role, "organization": org});
        async move { app.call("POST", "/users", Some(&token), Some(body)).await }
    };
    let new_org = |name: &'static str| {
        let app = &app;
        async move {
            let (status, body) =
                app.call("POST", "/organizations", Some(&app.root_token), Some(json!({"name": name}))).await;
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().parse::<OrgId>().unwrap()
        }
    };
    let a = new_org("a").await;
    let root = app.root_token.clone();
    // Root may not create a researcher in an organization, even one with no administrator.
    let (status, body) = create(root.clone(), a, "ada", "researcher").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("root creates only the first administrator"),
        "{body}"
    );
    let (status, body) = create(root.clone(), a, "alice", "org_admin").await;
    assert_eq!(status, 201, "{body}");
    // A second administrator is refused to root, and nothing is written.
    let (status, body) = create(root.clone(), a, "mallory", "org_admin").await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("has an administrator"), "{body}");
    let (status, _) =
        app.call("POST", "/login", None, Some(json!({"username": "mallory", "password": password}))).await;
    assert_eq!(status, 401, "the refused administrator does not exist");

    // The organization's administrator creates its users; root deletes none of them.
    let alice = app.login("alice", password).await;
    let (status, body) = create(alice.clone(), a, "ada", "researcher").await;
    assert_eq!(status, 201, "{body}");
    let ada_id = body["id"].as_str().unwrap().to_owned();
    // The last administrator can neither step down nor be deleted: the organization would be
    // left to root's next first administrator.
    let (_, me) = app.call("GET", "/users/me", Some(&alice), None).await;
    let alice_id = me["id"].as_str().unwrap().to_owned();
    let (status, body) =
        app.call("PATCH", &format!("/users/{alice_id}"), Some(&alice), Some(json!({"role": "viewer"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("last administrator"), "{body}");
    let (status, body) = app.call("DELETE", &format!("/users/{alice_id}"), Some(&alice), None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body) = create(alice.clone(), a, "bob", "org_admin").await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.call("DELETE", &format!("/users/{ada_id}"), Some(&root), None).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, _) = app.call("DELETE", &format!("/users/{ada_id}"), Some(&alice), None).await;
    assert_eq!(status, 200);
    // Root knows the password it gave alice: the organization replaces her with bob, whose
    // password is his own, and root may not make another administrator.
    let bob = app.login("bob", password).await;
    let (status, body) = app.call("DELETE", &format!("/users/{alice_id}"), Some(&bob), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = app.call("GET", "/users/me", Some(&alice), None).await;
    assert_eq!(status, 401, "alice's sessions end with her");
    let (status, _) = create(root.clone(), a, "alice-again", "org_admin").await;
    assert_eq!(status, 403);

    // A first administrator created while another one's insert is not yet committed waits for
    // it, and is then refused: the organization's row is locked while the check runs.
    let b = new_org("b").await;
    let d = &app.config.database;
    let pool = fedq::server::db::pool(&d.url, 2, &d.tls).unwrap();
    let mut holder = pool.get().await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE", &[b.as_uuid()]).await.unwrap();
    tx.execute(
        "INSERT INTO users (id, org_id, username, password_hash, role) VALUES ($1, $2, 'b-one', 'x', 'org_admin')",
        &[&uuid::Uuid::new_v4(), b.as_uuid()],
    )
    .await
    .unwrap();
    let mut second = pool.get().await.unwrap();
    let racing = tokio::spawn(async move {
        fedq::server::db::users::insert_first_admin(&mut second, b, "b-two", "x").await.unwrap()
    });
    let sql = app.sql().await;
    while !racing.is_finished() {
        let waiting: i64 = sql
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'",
                &[],
            ).await.unwrap().get(0);
        if waiting > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    tx.commit().await.unwrap();
    assert!(racing.await.unwrap().is_none(), "a second first administrator was inserted");
    app.cleanup().await;
}
