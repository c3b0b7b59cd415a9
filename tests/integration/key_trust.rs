//! Keys the server cannot swap, and results bound to what was asked.
//!
//! A curious or compromised server operator controls the key directory and the broker. Here it
//! swaps an organization's key in the database (as it could through any code path), and
//! publishes an envelope signed with its own key straight into a node's queue. Asserted: the
//! researcher's client refuses to seal to the swapped key, naming both fingerprints, and posts
//! nothing; a node keeps sealing to the key it trusts (every envelope in the receiver's queue
//! names the genuine key); a node refuses an envelope signed by the swapped key; a rotation
//! signed by the organization's previous key is followed by client and nodes without anyone's
//! action; and a result relabelled as another organization's, or taken from another task, is
//! refused by the client.

use crate::support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fedq::client::{ClientError, Inputs, TaskSpec};
use fedq::envelope::{self, Route, SealOptions};
use fedq::ids::{JobId, OrgId, RunId, TaskId};
use fedq::keys::{OrgKey, Rotation, TrustError};
use fedq::protocol::{JobStart, JobStatus, Kind, Payload, Requester};
use fedq::time::Timestamp;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use serde_json::{Value, json};
use support::eventually;
use support::federation::Federation;
use support::node::PROBE;

fn probe(fed: &Federation, orgs: &[OrgId], steps: Value) -> TaskSpec {
    TaskSpec {
        collaboration: fed.collaboration,
        image: PROBE.into(),
        organizations: orgs.to_vec(),
        inputs: Inputs::Same(serde_json::to_vec(&steps).unwrap()),
        name: "probe".into(),
        return_log: false,
    }
}

async fn task_count(fed: &Federation) -> i64 {
    fed.app.sql().await.query_one("SELECT count(*) FROM tasks", &[]).await.unwrap().get(0)
}

/// Creates a task of probe jobs, sealing each job's steps to the organization's genuine key with
/// the researcher's identity, and posting it as the researcher.
async fn submit_by_hand(fed: &Federation, jobs: &[(OrgId, Value)]) -> TaskId {
    let (task, run) = (TaskId::new(), RunId::new());
    let route = Route { kind: Kind::JobStart, collaboration: fed.collaboration, task, run, status: None };
    let all: Vec<OrgId> = jobs.iter().map(|(o, _)| *o).collect();
    let mut entries = Vec::new();
    for (org, steps) in jobs {
        let to = fed.orgs.iter().find(|i| i.org() == *org).unwrap();
        let job = JobId::new();
        let payload = Payload::JobStart(JobStart {
            job,
            image: PROBE.into(),
            requester: Requester::User { org: fed.orgs[0].org(), user: "ada".into() },
            organizations: all.clone(),
            input: serde_bytes::ByteBuf::from(serde_json::to_vec(steps).unwrap()),
            return_log: false,
            log_head: None,
            on_behalf_of: Vec::new(),
        });
        let sealed = envelope::seal(
            &fed.orgs[0],
            *org,
            to.current().public(),
            &route,
            &payload.to_bytes(),
            &SealOptions::default(),
            Timestamp::now(),
        )
        .unwrap();
        entries.push(json!({"id": job, "organization": org, "envelope": STANDARD.encode(&sealed.bytes)}));
    }
    let body =
        json!({"id": task, "run": run, "collaboration": fed.collaboration, "image": PROBE, "jobs": entries});
    fed.researcher.post("/tasks", &body).await.unwrap();
    fed.researcher.expect(
        task,
        jobs.iter()
            .zip(&entries)
            .map(|((o, _), e)| (e["id"].as_str().unwrap().parse().unwrap(), *o))
            .collect(),
    );
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_key_is_refused_and_a_signed_rotation_is_followed() {
    let _ = tracing_subscriber::fmt().with_env_filter("fedq=info").with_test_writer().try_init();
    let mut fed = Federation::new(2, &["fedq/probe"], |_, _| Default::default()).await;
    let (a, b) = (fed.orgs[0].org(), fed.orgs[1].org());
    let genuine_b = fed.orgs[1].current().id();

    // The operator's own key: it keeps the seed, to sign as B below.
    let seed =
        zeroize::Zeroizing::new(*uuid::Uuid::new_v4().as_bytes().repeat(2).first_chunk::<32>().unwrap());
    let attacker = OrgKey::from_seed(seed.clone());
    fed.app.swap_key_in_database(b, &attacker).await;

    // The researcher's client refuses to seal to the swapped key and says which keys differ.
    let before = task_count(&fed).await;
    let refused = fed.researcher.create_task(&fed.orgs[0], &probe(&fed, &[b], json!([]))).await.unwrap_err();
    match &refused {
        ClientError::Trust(TrustError::Changed { org, trusted, offered }) => {
            assert_eq!((*org, *trusted, *offered), (b, genuine_b, attacker.id()));
        }
        other => panic!("expected a refused key change, got {other}"),
    }
    let text = refused.to_string();
    assert!(text.contains(&genuine_b.to_string()) && text.contains(&attacker.id().to_string()), "{text}");
    assert_eq!(task_count(&fed).await, before, "nothing was submitted");

    // A's node, sending to B in a run where B has a job, seals to the key it trusts, never to
    // the swapped one. (The task is sealed here by hand: the researcher's client would refuse.)
    // B's node is stopped, so that what is sealed to B waits in its queue for inspection.
    let node_b = fed.nodes.remove(1);
    node_b.shutdown().await;
    let task = submit_by_hand(
        &fed,
        &[
            (a, json!([{"op": "send", "to": b.to_string(), "topic": "t", "body": "hello"}])),
            (b, json!([{"op": "receive", "topic": "t"}])),
        ],
    )
    .await;
    let output = eventually(120, "A's job to report", || async {
        let results = fed.researcher.results(task, Duration::from_secs(5)).await.unwrap();
        let opened = fed.researcher.open_results(&fed.orgs[0], fed.collaboration, &results).await.unwrap();
        opened
            .into_iter()
            .find(|r| r.organization == a)
            .map(|r| String::from_utf8_lossy(&r.output).into_owned())
    })
    .await;
    assert!(output.contains("ok"), "A's algorithm sent its message: {output}");
    let broker = fed.app.amqp("guest", "guest").await.unwrap();
    let channel = broker.create_channel().await.unwrap();
    let queue = fedq::broker::org_queue(b);
    let seen = std::sync::Mutex::new(Vec::new());
    eventually(30, "A's run message in B's queue", || async {
        let got = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap();
        let mut seen = seen.lock().unwrap();
        if let Some(message) = got {
            seen.push(envelope::parse(&message.delivery.data, usize::MAX).unwrap().header);
        }
        seen.iter().any(|h| h.kind == Kind::RunMessage).then_some(())
    })
    .await;
    for header in seen.lock().unwrap().iter() {
        assert_eq!(header.recipient_key, genuine_b, "sealed to the trusted key only: {header:?}");
    }
    // And A's node says so, as an alarm its administrator sees with every heartbeat (by B's id:
    // the alarm's text takes nothing the server serves).
    let alarms = fed.nodes[0].log_report().alarms;
    let said = format!("gives key {} for organization {b}", attacker.id());
    assert!(alarms.iter().any(|a| a.contains(&said)), "{alarms:?}");

    // The operator forges a job start "from B" with its key, straight into A's queue: A's node
    // does not accept a signature it has no reason to trust, and runs nothing.
    let (task, run, job) = (TaskId::new(), RunId::new(), JobId::new());
    let route = Route { kind: Kind::JobStart, collaboration: fed.collaboration, task, run, status: None };
    let payload = Payload::JobStart(JobStart {
        job,
        image: PROBE.into(),
        requester: Requester::User { org: b, user: "mallory".into() },
        organizations: vec![a],
        input: serde_bytes::ByteBuf::from(b"[]".to_vec()),
        return_log: false,
        log_head: None,
        on_behalf_of: Vec::new(),
    });
    let forger = fedq::keys::Identity::new(b, OrgKey::from_seed(seed));
    let forged = envelope::seal(
        &forger,
        a,
        fed.orgs[0].current().public(),
        &route,
        &payload.to_bytes(),
        &SealOptions::default(),
        Timestamp::now(),
    )
    .unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    channel
        .basic_publish(
            fedq::broker::DELIVER_EXCHANGE.into(),
            fedq::broker::org_routing_key(a).as_str().into(),
            BasicPublishOptions::default(),
            &forged.bytes,
            BasicProperties::default().with_delivery_mode(2).with_user_id("guest".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    eventually(60, "A's node to refuse the forged envelope", || async {
        let refused = fed.nodes[0].rejections().into_iter().find(|(code, _)| *code == "unknown_sender_key");
        refused.filter(|(_, n)| *n >= 1).map(|_| ())
    })
    .await;
    assert!(fed.nodes[0].timings().iter().all(|t| t.job != job), "the forged job did not run");

    // The swap is undone; B rotates its key properly, signed with the key it replaces.
    fed.app.restore_key_in_database(b, &attacker).await;
    let new_b = OrgKey::generate();
    let admin_b = fed.app.login("admin-of-registry-1", "a-long-password-123").await;
    let rotation = Rotation::sign(b, fed.orgs[1].current(), new_b.public());
    fed.app.publish_key(b, &admin_b, new_b.public(), Some(rotation.signature)).await;
    let (status, history) =
        fed.app.call("GET", &format!("/organizations/{b}/keys"), Some(&admin_b), None).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history[0]["previous_key_id"], genuine_b.to_string());
    assert_eq!(
        STANDARD.decode(history[0]["rotation_signature"].as_str().unwrap()).unwrap(),
        rotation.signature
    );

    // B's node restarts with its new key only; nobody trusts anything by hand. B writes to A
    // first: A's node sees B's new key on a signature, follows the signed rotation, and then
    // seals its answer to B's new key (B could open nothing else). The researcher seals B's
    // input to the new key and opens B's result.
    let mut config = fed.configs[1].clone();
    config.node.key_file = fed.dirs[1].path().join("org-rotated.key");
    new_b.write_new(&config.node.key_file).unwrap();
    fed.nodes.insert(1, fedq::node::start(config).await.expect("B's node starts with its new key"));
    let mut spec = probe(&fed, &[a, b], json!([]));
    spec.inputs = Inputs::Each(vec![
        serde_json::to_vec(&json!([
            {"op": "receive", "topic": "from-b"},
            {"op": "send", "to": b.to_string(), "topic": "from-a", "body": "after"},
        ]))
        .unwrap(),
        serde_json::to_vec(&json!([
            {"op": "send", "to": a.to_string(), "topic": "from-b", "body": "rotated"},
            {"op": "receive", "topic": "from-a"},
        ]))
        .unwrap(),
    ]);
    let created = fed
        .researcher
        .create_task(&fed.orgs[0], &spec)
        .await
        .expect("the client follows the signed rotation");
    let results = fed
        .researcher
        .wait_and_open(&fed.orgs[0], fed.collaboration, created.task, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    for result in &results {
        let who = if result.organization == a { "A" } else { "B" };
        let rejected = (fed.nodes[0].rejections(), fed.nodes[1].rejections());
        assert_eq!(
            result.status,
            JobStatus::Completed,
            "{who}: {result:?}; rejections at A, B: {rejected:?}"
        );
    }
    let at_b = results.iter().find(|r| r.organization == b).unwrap();
    assert!(String::from_utf8_lossy(&at_b.output).contains("after"), "{at_b:?}");
    assert_eq!(fed.researcher.trust().current(b).unwrap().id(), new_b.id());
    // A's node followed the rotation too: its persistent store says how it came to trust the key.
    let store = std::fs::read_to_string(fed.configs[0].node.state_dir.join("trusted-keys.json")).unwrap();
    let store: Value = serde_json::from_str(&store).unwrap();
    let at_a = store["organizations"][b.to_string()].as_array().unwrap().clone();
    let last = at_a.last().unwrap();
    assert_eq!(
        (last["fingerprint"].as_str(), last["how"].as_str()),
        (Some(new_b.id().to_string().as_str()), Some("rotation"))
    );
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_relabelled_or_taken_from_another_task_are_refused() {
    let fed = Federation::new(2, &["fedq/probe"], |_, _| Default::default()).await;
    let (a, b) = (fed.orgs[0].org(), fed.orgs[1].org());
    let me = &fed.orgs[0];
    let run = |text: &str| probe(&fed, &[a, b], json!([{"op": "print", "text": text}]));
    let first = fed.researcher.create_task(me, &run("first")).await.unwrap();
    let second = fed.researcher.create_task(me, &run("second")).await.unwrap();
    for task in [first.task, second.task] {
        let opened =
            fed.researcher.wait_and_open(me, fed.collaboration, task, Duration::from_secs(120)).await;
        assert_eq!(opened.unwrap().len(), 2);
    }
    let genuine = fed.researcher.results(first.task, Duration::ZERO).await.unwrap();
    assert_eq!(genuine.sealed.len(), 2);
    fed.researcher.open_results(me, fed.collaboration, &genuine).await.expect("the genuine results open");

    // The server labels A's result as B's and B's as A's.
    let mut relabelled = genuine.clone();
    let (org0, org1) = (relabelled.sealed[0].1, relabelled.sealed[1].1);
    relabelled.sealed[0].1 = org1;
    relabelled.sealed[1].1 = org0;
    let err = fed.researcher.open_results(me, fed.collaboration, &relabelled).await.unwrap_err();
    assert!(matches!(err, ClientError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("labels it as"), "{err}");

    // The server answers the second task with the first task's result for the same organization.
    let mut other = fed.researcher.results(second.task, Duration::ZERO).await.unwrap();
    let from_first = genuine.sealed.iter().find(|r| r.1 == other.sealed[0].1).unwrap().3.clone();
    other.sealed[0].3 = from_first;
    let err = fed.researcher.open_results(me, fed.collaboration, &other).await.unwrap_err();
    assert!(err.to_string().contains(&format!("belongs to task {}", first.task)), "{err}");

    // The same through the database, as a server would serve it: the stored envelopes of the
    // two jobs of the first task swapped.
    let sql = fed.app.sql().await;
    let jobs: Vec<uuid::Uuid> = first.jobs.iter().map(|(j, _)| *j.as_uuid()).collect();
    sql.execute(
        "UPDATE results r SET envelope = o.envelope FROM results o
         WHERE r.job_id = ANY($1) AND o.job_id = ANY($1) AND o.job_id <> r.job_id",
        &[&jobs],
    )
    .await
    .unwrap();
    let served = fed.researcher.results(first.task, Duration::ZERO).await.unwrap();
    let err = fed.researcher.open_results(me, fed.collaboration, &served).await.unwrap_err();
    assert!(matches!(err, ClientError::Mismatch { .. }), "{err}");

    // The same result given twice for one job.
    let mut twice = genuine.clone();
    twice.sealed[1] = twice.sealed[0].clone();
    assert!(fed.researcher.open_results(me, fed.collaboration, &twice).await.is_err());
    fed.cleanup().await;
}

/// A client that trusts `first_use`, logged in as a fresh researcher of `org`.
async fn fresh_client(
    app: &support::TestApp,
    org: OrgId,
    first_use: fedq::keys::FirstUse,
) -> fedq::client::Client {
    let token = app.user(org, &format!("r-{}", uuid::Uuid::new_v4().simple()), "researcher").await;
    fedq::client::Client::with_token(
        &format!("http://{}", app.addr),
        &Default::default(),
        secrecy::SecretString::from(token),
    )
    .unwrap()
    .with_trust(std::sync::Arc::new(fedq::keys::KeyTrust::in_memory(first_use)))
}

/// What `client` decides about `org`'s key in `collaboration`.
async fn decision(
    client: &fedq::client::Client,
    collaboration: fedq::ids::CollaborationId,
    org: OrgId,
) -> Result<fedq::keys::PublicKey, TrustError> {
    let decisions = client.trusted_keys(collaboration).await.unwrap();
    decisions.into_iter().find(|d| d.org == org).expect("the organization is listed").key
}

fn not_logged(decided: Result<fedq::keys::PublicKey, TrustError>, why: &str) {
    match decided {
        Err(e @ TrustError::NotLogged { .. }) => {
            let text = e.to_string();
            assert!(text.contains(why) && text.contains("transparency log"), "{text}");
        }
        other => panic!("expected a key refused as not logged ({why}), got {other:?}"),
    }
}

/// Keys outside the log: the server lists a key it never logged (written straight into its
/// database), for a first use and for a rotation signed by the trusted key. A client that trusts
/// on first use refuses both, whatever leaf the server shows for them (none, another key's, a
/// well-formed one it never sequenced); the key published the logged way is trusted.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_the_log_does_not_prove_is_trusted_neither_on_first_use_nor_by_a_rotation() {
    use fedq::keys::FirstUse;
    let app = support::spawn_app().await;
    let a = app.org("a").await;
    let (status, body) =
        app.call("POST", "/organizations", Some(&app.root_token), Some(json!({"name": "c"}))).await;
    assert_eq!(status, 201, "{body}");
    let c: OrgId = body["id"].as_str().unwrap().parse().unwrap();
    let collaboration = app.collaboration("ac", &[a.org(), c]).await;
    let unlogged = OrgKey::generate();
    let sql = app.sql().await;
    sql.execute(
        "INSERT INTO organization_keys (org_id, key_id, public_key) VALUES ($1, $2, $3)",
        &[c.as_uuid(), &unlogged.id().as_bytes().as_slice(), &unlogged.public().to_string()],
    )
    .await
    .unwrap();

    let client = fresh_client(&app, a.org(), FirstUse::Accept).await;
    assert_eq!(
        decision(&client, collaboration, a.org()).await.unwrap().id(),
        a.current().id(),
        "a logged key"
    );
    not_logged(decision(&client, collaboration, c).await, "lists no log leaf");

    // The leaf that logged a's key, shown for c's.
    let a_leaf: Vec<u8> = sql
        .query_one("SELECT log_leaf FROM organization_keys WHERE org_id = $1", &[a.org().as_uuid()])
        .await
        .unwrap()
        .get(0);
    // Keys published before the column: the migration finds each one's leaf by its layout.
    let migration = include_str!("../../migrations/V9__key_log_leaves.sql");
    let backfill = &migration[migration.find("UPDATE organization_keys k").unwrap()..];
    sql.execute("UPDATE organization_keys SET log_leaf = NULL WHERE org_id = $1", &[a.org().as_uuid()])
        .await
        .unwrap();
    sql.batch_execute(backfill).await.unwrap();
    let found: Option<Vec<u8>> = sql
        .query_one("SELECT log_leaf FROM organization_keys WHERE org_id = $1", &[a.org().as_uuid()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(found.as_ref(), Some(&a_leaf), "the migration finds the leaf of a key published before it");
    let set_leaf = |leaf: Vec<u8>| {
        let sql = &sql;
        async move {
            sql.execute(
                "UPDATE organization_keys SET log_leaf = $1 WHERE org_id = $2",
                &[&leaf, c.as_uuid()],
            )
            .await
            .unwrap();
        }
    };
    set_leaf(a_leaf).await;
    not_logged(decision(&client, collaboration, c).await, "logs something else");
    // A leaf that logs exactly this key, but that the log never took in.
    let forged = fedq::transparency::Leaf::Event(fedq::transparency::EventLeaf {
        organization: c,
        at: Timestamp::now(),
        event: fedq::transparency::Event::KeyPublished { key: *unlogged.id().as_bytes() },
    })
    .encode();
    set_leaf(forged).await;
    not_logged(decision(&client, collaboration, c).await, "no signed head of the log includes its leaf");

    // The organization publishes a key the logged way: trusted on first use.
    sql.execute("DELETE FROM organization_keys WHERE org_id = $1", &[c.as_uuid()]).await.unwrap();
    let c_admin = app.user(c, "admin-of-c", "org_admin").await;
    let genuine = OrgKey::generate();
    app.publish_key(c, &c_admin, genuine.public(), None).await;
    let client = fresh_client(&app, a.org(), FirstUse::Accept).await;
    assert_eq!(decision(&client, collaboration, c).await.unwrap().id(), genuine.id());

    // A rotation, signed by the trusted key, to a key the log never saw: not followed.
    let next = OrgKey::generate();
    let rotation = Rotation::sign(c, &genuine, next.public());
    sql.execute("UPDATE organization_keys SET retired_at = now() WHERE org_id = $1", &[c.as_uuid()])
        .await
        .unwrap();
    sql.execute(
        "INSERT INTO organization_keys (org_id, key_id, public_key, previous_key_id, rotation_signature)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            c.as_uuid(),
            &next.id().as_bytes().as_slice(),
            &next.public().to_string(),
            &genuine.id().as_bytes().as_slice(),
            &rotation.signature.as_slice(),
        ],
    )
    .await
    .unwrap();
    not_logged(decision(&client, collaboration, c).await, "lists no log leaf");
    // Published through the API, the same rotation is logged and followed.
    sql.execute("DELETE FROM organization_keys WHERE key_id = $1", &[&next.id().as_bytes().as_slice()])
        .await
        .unwrap();
    sql.execute("UPDATE organization_keys SET retired_at = NULL WHERE org_id = $1", &[c.as_uuid()])
        .await
        .unwrap();
    app.publish_key(c, &c_admin, next.public(), Some(rotation.signature)).await;
    assert_eq!(
        decision(&client, collaboration, c).await.unwrap().id(),
        next.id(),
        "a logged rotation is followed"
    );
    app.cleanup().await;
}
