//! A malicious partner's node: envelopes it seals with its own organization's real key and
//! publishes with its own broker credentials, so that the router lets them through (their
//! headers are ones it may send), while their sealed payloads ask for more.
//!
//! Asserted: no way of hers to stop another researcher's job works (the API refuses her, the
//! router dead-letters a control message she publishes, the broker refuses a publish to the
//! target's queue), and the job completes. A result
//! for another organization's subtask job is refused. And the partner's own container, through
//! the endpoint, cannot start a subtask in another organization's run volume.

use crate::support;

use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::envelope::{self, Route, SealOptions};
use fedq::ids::{RunId, TaskId};
use fedq::protocol::control::{CONTROL_TYPE, Control};
use fedq::protocol::{JobStatus, Kind, Payload};
use fedq::time::Timestamp;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use secrecy::ExposeSecret as _;
use serde_json::json;
use support::eventually;
use support::federation::Federation;
use support::node::PROBE;

/// Publishes `bytes` to ingress with the broker credentials of organization `i`'s node, as that
/// node would; returns the connection, to keep it open until the test is done with it.
async fn publish_as_node(fed: &Federation, i: usize, bytes: &[u8]) -> Connection {
    let broker = &fed.configs[i].broker;
    let connection =
        Connection::connect(broker.url.expose_secret(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    channel
        .basic_publish(
            fedq::broker::INGRESS_EXCHANGE.into(),
            "".into(),
            BasicPublishOptions::default(),
            bytes,
            BasicProperties::default().with_delivery_mode(2).with_user_id(broker.username.as_str().into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    connection
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_cannot_kill_another_researchers_job() {
    let fed = Federation::new(3, &["fedq/probe"], |_, _| Default::default()).await;
    let (researcher_org, mallory_org, target) = (&fed.orgs[0], &fed.orgs[1], &fed.orgs[2]);

    // The victim: a job at the target organization, requested by the researcher, running a while.
    let steps = json!([{"op": "sleep", "ms": 10000}, {"op": "print", "text": "survived"}]);
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: PROBE.into(),
        organizations: vec![target.org()],
        inputs: Inputs::Same(serde_json::to_vec(&steps).unwrap()),
        name: "victim".into(),
        return_log: false,
    };
    let victim = fed.researcher.create_task(researcher_org, &spec).await.unwrap();
    eventually(60, "the victim's job to run", || async {
        let shown = fed.researcher.task(victim.task).await.ok()?;
        (shown.jobs[0].status == JobStatus::Running).then_some(())
    })
    .await;

    // Through the API, as a researcher of her own organization: refused.
    let mallory = fed.app.user(mallory_org.org(), "mallory", "researcher").await;
    let path = format!("/tasks/{}/kill", victim.task);
    let (status, answer) = fed.app.call("POST", &path, Some(&mallory), None).await;
    assert_eq!(status, 403, "{answer}");

    // As the server would say it: a control message, published with her node's broker user to
    // the only exchange it may write. No envelope kind stops jobs, and the router dead-letters
    // what is not an envelope.
    let control = Control::Kill { task: victim.task, run: victim.run };
    let connection = publish_as_node(&fed, 1, &control.to_bytes()).await;
    eventually(30, "the forged control message to be dead-lettered", || async {
        let sql = fed.app.sql().await;
        let n: i64 = sql.query_one("SELECT count(*) FROM dead_letters", &[]).await.ok()?.get(0);
        (n == 1).then_some(())
    })
    .await;

    // Straight to the target's queue: the broker refuses the publish.
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let published = channel
        .basic_publish(
            "".into(),
            fedq::broker::org_queue(target.org()).as_str().into(),
            BasicPublishOptions::default(),
            &control.to_bytes(),
            BasicProperties::default().with_type(CONTROL_TYPE.into()),
        )
        .await;
    // The broker answers a publish it does not permit by closing the channel, which fails the
    // confirm; an accepted one is confirmed.
    let refused = match published {
        Err(_) => true,
        Ok(confirm) => confirm.await.is_err(),
    };
    assert!(refused, "a node's broker user published to another organization's queue");

    let results = fed
        .researcher
        .wait_and_open(researcher_org, fed.collaboration, victim.task, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(results[0].status, JobStatus::Completed, "the victim's job was not stopped: {:?}", results[0]);
    drop(connection);
    fed.cleanup().await;
}

/// A participant of a subtask tries to replace the result of another organization's job in it,
/// after the genuine one arrived (sealed with its own key, for the node that created the
/// subtask): that node refuses it and keeps the genuine result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_cannot_replace_another_organizations_subtask_result() {
    let fed = Federation::new(3, &["fedq/probe"], |_, _| Default::default()).await;
    let (creator, mallory_org, honest) = (&fed.orgs[0], &fed.orgs[1], &fed.orgs[2]);

    // The creator's job makes a subtask at Mallory's organization and the honest one.
    let sub_steps = json!([{"op": "print", "text": "genuine"}]);
    let steps = json!([{"op": "subtask", "orgs": [mallory_org.org().to_string(), honest.org().to_string()], "steps": sub_steps}]);
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: PROBE.into(),
        organizations: vec![creator.org()],
        inputs: Inputs::Same(serde_json::to_vec(&steps).unwrap()),
        name: "creator".into(),
        return_log: false,
    };
    let root = fed.researcher.create_task(creator, &spec).await.unwrap();
    fed.researcher
        .wait_and_open(creator, fed.collaboration, root.task, Duration::from_secs(120))
        .await
        .unwrap();
    let sql = fed.app.sql().await;
    let row = sql
        .query_one(
            "SELECT t.id, t.run_id, j.id FROM tasks t JOIN jobs j ON j.task_id = t.id
             WHERE t.parent_task_id = $1 AND j.org_id = $2",
            &[root.task.as_uuid(), honest.org().as_uuid()],
        )
        .await
        .unwrap();
    let (subtask, run, honest_job) = (
        TaskId::from_uuid(row.get(0)),
        RunId::from_uuid(row.get(1)),
        fedq::ids::JobId::from_uuid(row.get(2)),
    );
    let stored = fed.configs[0]
        .node
        .state_dir
        .join("subtasks")
        .join(subtask.to_string())
        .join(format!("{honest_job}.result"));
    let genuine = std::fs::read(&stored).expect("the creator's node kept the honest job's result");

    // Mallory's node answers again, for the honest organization's job.
    let route = Route {
        kind: Kind::JobResult,
        collaboration: fed.collaboration,
        task: subtask,
        run,
        status: Some(JobStatus::Completed),
    };
    let payload = Payload::JobResult(fedq::protocol::JobResult {
        job: honest_job,
        status: JobStatus::Completed,
        output: serde_bytes::ByteBuf::from(br#"["forged"]"#.to_vec()),
        log: String::new(),
        reason: None,
        log_head: None,
    });
    let sealed = envelope::seal(
        mallory_org,
        creator.org(),
        creator.current().public(),
        &route,
        &payload.to_bytes(),
        &SealOptions::default(),
        Timestamp::now(),
    )
    .unwrap();
    let connection = publish_as_node(&fed, 1, &sealed.bytes).await;
    eventually(30, "the creator's node to refuse the forged result", || async {
        fed.nodes[0].refusals().get("result_for_another_job").filter(|n| **n >= 1).map(|_| ())
    })
    .await;
    assert_eq!(std::fs::read(&stored).unwrap(), genuine, "the genuine result is kept");
    drop(connection);
    fed.cleanup().await;
}

/// Within one run, a partner's job creates a subtask at another organization, hoping its
/// container shares that organization's run volume (where Secure Sum keeps R) and messages: the
/// node refuses to let a job of another requester into the run, and the partner learns nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_cannot_join_another_organizations_run_volume_with_a_subtask() {
    let fed = Federation::new(3, &["fedq/probe"], |_, _| Default::default()).await;
    let (researcher_org, mallory_org, honest) = (&fed.orgs[0], &fed.orgs[1], &fed.orgs[2]);
    let secret = "R-is-812734";
    let honest_steps = json!([
        {"op": "write", "path": "/fedq/run/R", "data": secret},
        {"op": "sleep", "ms": 8000},
    ]);
    // Mallory's job waits until R is written, then sends a subtask to the honest organization,
    // in the same run, to read it.
    let mallory_steps = json!([
        {"op": "sleep", "ms": 3000},
        {"op": "subtask", "orgs": [honest.org().to_string()], "steps": [{"op": "read", "path": "/fedq/run/R"}]},
    ]);
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: PROBE.into(),
        organizations: vec![honest.org(), mallory_org.org()],
        inputs: Inputs::Each(vec![
            serde_json::to_vec(&honest_steps).unwrap(),
            serde_json::to_vec(&mallory_steps).unwrap(),
        ]),
        name: "ring".into(),
        return_log: false,
    };
    let task = fed.researcher.create_task(researcher_org, &spec).await.unwrap();
    let results = fed
        .researcher
        .wait_and_open(researcher_org, fed.collaboration, task.task, Duration::from_secs(120))
        .await
        .unwrap();
    let mallory = results.iter().find(|r| r.organization == mallory_org.org()).expect("Mallory's result");
    let found: serde_json::Value = serde_json::from_slice(&mallory.output).unwrap();
    let subtask = &found[1][0];
    assert_eq!(subtask["status"], "refused", "{found}");
    assert!(
        subtask["reason"].as_str().is_some_and(|r| r.contains("may not share its volume")),
        "the refusal says why: {found}"
    );
    assert!(!found.to_string().contains(secret), "R reached Mallory: {found}");
    fed.cleanup().await;
}
