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
pub(crate) async fn publish_as_node(fed: &Federation, i: usize, bytes: &[u8]) -> Connection {
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

/// The spec of a probe task running `steps` at `organizations`.
fn probe_spec(
    fed: &Federation,
    organizations: Vec<fedq::ids::OrgId>,
    steps: &serde_json::Value,
    name: &str,
) -> TaskSpec {
    TaskSpec {
        collaboration: fed.collaboration,
        image: PROBE.into(),
        organizations,
        inputs: Inputs::Same(serde_json::to_vec(steps).unwrap()),
        name: name.into(),
        return_log: false,
    }
}

/// Creates `spec` as a researcher of `by` and waits for its results, opened.
async fn run_task(
    fed: &Federation,
    by: &fedq::keys::Identity,
    spec: &TaskSpec,
) -> (fedq::client::CreatedTask, Vec<fedq::client::OpenedResult>) {
    let created = fed.researcher.create_task(by, spec).await.unwrap();
    let results = fed
        .researcher
        .wait_and_open(by, fed.collaboration, created.task, Duration::from_secs(180))
        .await
        .unwrap();
    (created, results)
}

/// The spec of Secure Sum over `organizations`, sharing the total.
fn secure_sum_spec(fed: &Federation, organizations: Vec<fedq::ids::OrgId>) -> TaskSpec {
    TaskSpec {
        collaboration: fed.collaboration,
        image: "fedq/secure-sum:0.1.0".into(),
        organizations,
        inputs: Inputs::Same(json!({"data": "patients", "share": true}).to_string().into_bytes()),
        name: "ring".into(),
        return_log: false,
    }
}

/// Each registry's `patients` CSV with `counts[i]` rows.
fn patients(
    counts: &[u64],
) -> impl Fn(usize, &std::path::Path) -> std::collections::BTreeMap<String, std::path::PathBuf> + '_ {
    move |i, dir| {
        let path = dir.join("patients.csv");
        crate::secure_sum::write_patients(&path, counts[i]);
        std::collections::BTreeMap::from([("patients".to_owned(), path)])
    }
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

/// Secure Sum over A, B and C, where C's node seals B a first value of 0 on `secure-sum/1` the
/// moment the task exists, before A's genuine value can arrive. Were B to take it, B's answer to
/// C would be B's own count. B takes the running sum only from A, the organization before it in
/// the ring, so the forgery waits unread and the total is right. A forgery whose `from_job` is
/// not one of C's jobs in the task is refused by B's node outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_member_takes_the_running_sum_only_from_the_organization_before_it() {
    let counts = [7u64, 11, 13];
    let fed = Federation::new(3, &["fedq/secure-sum"], patients(&counts)).await;
    let (a, b, c) = (&fed.orgs[0], &fed.orgs[1], &fed.orgs[2]);
    let spec = secure_sum_spec(&fed, vec![a.org(), b.org(), c.org()]);
    let created = fed.researcher.create_task(a, &spec).await.unwrap();
    let c_job = created.jobs.iter().find(|(_, org)| *org == c.org()).expect("C's job").0;
    let route = Route {
        kind: Kind::RunMessage,
        collaboration: fed.collaboration,
        task: created.task,
        run: created.run,
        status: None,
    };
    let seal = |from_job, topic: &str| {
        let forged = Payload::RunMessage(fedq::protocol::RunMessage {
            from_job,
            topic: topic.into(),
            body: serde_bytes::ByteBuf::from(0u64.to_le_bytes().to_vec()),
            log_head: None,
        });
        let options = SealOptions::default();
        envelope::seal(
            c,
            b.org(),
            b.current().public(),
            &route,
            &forged.to_bytes(),
            &options,
            Timestamp::now(),
        )
        .unwrap()
    };
    let sealed = seal(c_job, "secure-sum/1");
    let connection = publish_as_node(&fed, 2, &sealed.bytes).await;
    // And one whose `from_job` names no job of C's: B's node refuses to show it to its algorithm.
    let _second = publish_as_node(&fed, 2, &seal(fedq::ids::JobId::new(), "secure-sum/1").bytes).await;
    eventually(60, "B's node to refuse a from_job that is not C's", || async {
        fed.nodes[1].refusals().get("from_job_of_another").filter(|n| **n >= 1).map(|_| ())
    })
    .await;
    let results = fed
        .researcher
        .wait_and_open(a, fed.collaboration, created.task, Duration::from_secs(180))
        .await
        .unwrap();
    let total: u64 = counts.iter().sum();
    for result in &results {
        assert_eq!(result.status, JobStatus::Completed, "{result:?}");
        let output: serde_json::Value = serde_json::from_slice(&result.output).unwrap();
        assert_eq!(output["N"], total, "the forged running sum was taken: {output}");
    }
    // The forgery was routed to B (the router lets a member of the run message another), and
    // it is what B left unread.
    let sql = fed.app.sql().await;
    let routed: i64 = sql
        .query_one(
            "SELECT count(*) FROM routing_log WHERE message_id = $1",
            &[&sealed.header.id.as_bytes().as_slice()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(routed, 1, "the forged message reached B's queue");
    drop(connection);
    fed.cleanup().await;
}

/// A ring of two: the researcher's organization and one registry. The registry's node, with the
/// default `policy.min_organizations` of 3, refuses to take part, so the researcher's
/// organization never learns the registry's count as "the total minus our own".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_refuses_a_task_of_another_organization_over_too_few_organizations() {
    let fed = Federation::configured(2, &["fedq/secure-sum"], patients(&[5, 6]), |_, config| {
        config.policy.min_organizations = fedq::node::config::DEFAULT_MIN_ORGANIZATIONS
    })
    .await;
    let (a, b) = (&fed.orgs[0], &fed.orgs[1]);
    let spec = secure_sum_spec(&fed, vec![a.org(), b.org()]);
    let created = fed.researcher.create_task(a, &spec).await.unwrap();
    eventually(60, "B to refuse its job", || async {
        let shown = fed.researcher.task(created.task).await.ok()?;
        let at_b = shown.jobs.iter().find(|j| j.organization == b.org())?;
        (at_b.status == JobStatus::Refused).then_some(())
    })
    .await;
    let results = fed
        .researcher
        .wait_and_open(a, fed.collaboration, created.task, Duration::from_secs(1))
        .await
        .unwrap();
    let refusal = results.iter().find(|r| r.organization == b.org()).expect("B's refusal is a result");
    assert!(
        refusal.reason.as_deref().is_some_and(|r| r.contains("policy.min_organizations")),
        "the refusal names the setting: {refusal:?}"
    );
    assert!(refusal.output.is_empty(), "B contributed nothing: {refusal:?}");
    // A's own job waits for a sum that never comes.
    fed.researcher.kill(created.task).await.unwrap();
    fed.cleanup().await;
}

/// A researcher sends B a job_start for a task of her own whose sealed job id is the id of
/// another researcher's job at B (members see job ids in `GET /tasks`). B binds a job id to the
/// task it first came with: the victim's job is left alone, and hers is refused, with the reason,
/// as a result of her own task (before, B took it for a redelivery of the victim's job and
/// re-sent the victim's result, and her task waited for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_id_is_bound_to_the_task_it_came_with() {
    let fed = Federation::new(3, &["fedq/probe"], |_, _| Default::default()).await;
    let (researcher_org, mallory_org, target) = (&fed.orgs[0], &fed.orgs[1], &fed.orgs[2]);
    let steps = json!([{"op": "print", "text": "genuine"}]);
    let (victim, results) =
        run_task(&fed, researcher_org, &probe_spec(&fed, vec![target.org()], &steps, "victim")).await;
    assert_eq!(results[0].status, JobStatus::Completed, "{:?}", results[0]);
    let victim_job = victim.jobs[0].0;

    // Mallory's own task at the target, whose sealed job_start names the victim's job.
    let mallory = fed.app.user(mallory_org.org(), "mallory", "researcher").await;
    let (task, run) = (TaskId::new(), RunId::new());
    let route = Route { kind: Kind::JobStart, collaboration: fed.collaboration, task, run, status: None };
    let payload = Payload::JobStart(fedq::protocol::JobStart {
        job: victim_job,
        image: PROBE.into(),
        requester: fedq::protocol::Requester::User { org: mallory_org.org(), user: "mallory".into() },
        organizations: vec![target.org()],
        input: serde_bytes::ByteBuf::from(serde_json::to_vec(&steps).unwrap()),
        return_log: false,
        log_head: None,
        on_behalf_of: Vec::new(),
    });
    let sealed = envelope::seal(
        mallory_org,
        target.org(),
        target.current().public(),
        &route,
        &payload.to_bytes(),
        &SealOptions::default(),
        Timestamp::now(),
    )
    .unwrap();
    use base64::Engine as _;
    let body = json!({
        "id": task, "run": run, "collaboration": fed.collaboration, "image": PROBE, "name": "reuse",
        "jobs": [{"id": fedq::ids::JobId::new(), "organization": target.org(),
                  "envelope": base64::engine::general_purpose::STANDARD.encode(&sealed.bytes)}],
    });
    let (status, answer) = fed.app.call("POST", "/tasks", Some(&mallory), Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    eventually(60, "the target to refuse the reused job id", || async {
        fed.nodes[2].refusals().get("job_of_another_task").filter(|n| **n >= 1).map(|_| ())
    })
    .await;
    let shown = eventually(60, "Mallory's task to end", || async {
        let (_, shown) = fed.app.call("GET", &format!("/tasks/{task}"), Some(&mallory), None).await;
        (shown["jobs"][0]["status"] == "refused").then_some(shown)
    })
    .await;
    assert_eq!(shown["jobs"][0]["status"], "refused", "{shown}");
    drop(mallory);
    fed.cleanup().await;
}

/// A confused deputy: the host registry grants its data source `secret` only to its own
/// organization's tasks. A partner's task at the host makes its container create a subtask at
/// the host itself, hoping it runs under the host's own grants. The host's node evaluates the
/// subtask against the run's root requester (the partner) as well as itself: the subtask runs
/// without the data source, and the partner reads nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partners_job_cannot_borrow_its_hosts_grants_with_a_subtask_at_the_host() {
    let secret = "host-only-4711";
    let fed = Federation::configured(
        2,
        &["fedq/probe"],
        |i, dir| {
            if i != 1 {
                return Default::default();
            }
            let path = dir.join("secret.csv");
            std::fs::write(&path, format!("id\n{secret}\n")).unwrap();
            std::collections::BTreeMap::from([("secret".to_owned(), path)])
        },
        |i, config| {
            if i != 1 {
                return;
            }
            let own = config.node.organization.to_string();
            let probe = |requesters: Vec<String>, data: Vec<String>| fedq::node::config::ImageRule {
                name: "fedq/probe".into(),
                digest: "*".into(),
                data,
                requesters,
            };
            config.policy.images =
                vec![probe(vec!["*".into()], vec![]), probe(vec![own], vec!["secret".into()])];
        },
    )
    .await;
    let (partner, host) = (&fed.orgs[0], &fed.orgs[1]);
    let steps = json!([
        {"op": "read", "path": "/data/secret"},
        {"op": "subtask", "orgs": ["self"], "steps": [{"op": "read", "path": "/data/secret"}]},
    ]);
    let (_, results) = run_task(&fed, partner, &probe_spec(&fed, vec![host.org()], &steps, "deputy")).await;
    assert_eq!(results[0].status, JobStatus::Completed, "{:?}", results[0]);
    let found: serde_json::Value = serde_json::from_slice(&results[0].output).unwrap();
    assert!(found[0].as_str().is_some_and(|r| r.starts_with("error")), "the partner's own job: {found}");
    assert!(!found.to_string().contains(secret), "the subtask at the host read its data: {found}");
    let sub = &found[1][0];
    assert_eq!(sub["status"], "completed", "{found}");
    fed.cleanup().await;
}

/// A container sends a run message to an organization of the collaboration with no job in its
/// run: its node refuses to send it (`not_in_run`), instead of publishing what the router would
/// refuse and its own monitor would then blame on the server for not logging. To an organization
/// in the run through a subtask, it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_cannot_message_an_organization_outside_its_run() {
    let fed = Federation::new(3, &["fedq/probe"], |_, _| Default::default()).await;
    let (a, b, c) = (fed.orgs[0].org(), fed.orgs[1].org(), fed.orgs[2].org());
    let steps_a = json!([
        {"op": "send", "to": c.to_string(), "topic": "t", "body": "outside"},
        {"op": "send", "to": b.to_string(), "topic": "t", "body": "inside"},
        {"op": "subtask", "orgs": [c.to_string()], "steps": []},
        {"op": "send", "to": c.to_string(), "topic": "t", "body": "through a subtask"},
    ]);
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: PROBE.into(),
        organizations: vec![a, b],
        inputs: Inputs::Each(vec![serde_json::to_vec(&steps_a).unwrap(), b"[]".to_vec()]),
        name: "outside".into(),
        return_log: false,
    };
    let (_, results) = run_task(&fed, &fed.orgs[0], &spec).await;
    let out = results.iter().find(|r| r.organization == a).expect("A's result");
    let found: serde_json::Value = serde_json::from_slice(&out.output).unwrap();
    let refused = found[0].as_str().unwrap_or_default();
    assert!(refused.contains("not_in_run") && refused.contains(&c.to_string()), "{found}");
    assert_eq!((&found[1], &found[3]), (&json!("ok"), &json!("ok")), "{found}");
    fed.cleanup().await;
}
