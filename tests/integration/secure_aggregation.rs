//! Secure aggregation, the node's service, through real nodes, broker, server and containers
//! (`docs/protocol.md`, "Secure aggregation"): three registries contribute their counts and
//! sums; the aggregator's job gets the total and nothing else; no registry's values, no partial
//! sum and no total cross the broker or reach the database, the masked parts do not show the
//! contributions, and the aggregator's container log holds none of its partners' values. A
//! second, different contribution or key from a partner is refused, a malformed one too, an
//! algorithm cannot send the node's own topics, a round of too few is refused, and a missing
//! participant fails the round with its name.

use crate::secure_sum::{
    contains, contains_decimal, drain, dump, encodings, hex_runs, run_messages, tap, without_timestamps,
};
use crate::support;

use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::envelope::{self, Route, SealOptions};
use fedq::protocol::{JobStatus, Kind, Payload};
use fedq::time::Timestamp;
use serde_json::{Value, json};
use support::eventually;
use support::federation::Federation;
use support::node::PROBE;

const PART: &str = "fedq.secure-sum.part";
const KEY: &str = "fedq.secure-sum.key";

fn random_value() -> u64 {
    // Above 65535, so that every binary encoding is at least five bytes long.
    66_000 + (uuid::Uuid::new_v4().as_u128() % 1_000_000) as u64
}

/// A probe task at every registry, each with its own steps.
fn spec(fed: &Federation, steps: Vec<Value>, name: &str) -> TaskSpec {
    TaskSpec {
        collaboration: fed.collaboration,
        image: PROBE.into(),
        organizations: fed.orgs.iter().map(|o| o.org()).collect(),
        inputs: Inputs::Each(steps.iter().map(|s| serde_json::to_vec(s).unwrap()).collect()),
        name: name.into(),
        return_log: false,
    }
}

/// Creates the task and waits for each registry's probe output, in the registries' order.
async fn outputs(fed: &Federation, spec: &TaskSpec) -> (fedq::client::CreatedTask, Vec<Value>) {
    let created = fed.researcher.create_task(&fed.orgs[0], spec).await.unwrap();
    let results = fed
        .researcher
        .wait_and_open(&fed.orgs[0], fed.collaboration, created.task, Duration::from_secs(240))
        .await
        .unwrap();
    let outputs = fed
        .orgs
        .iter()
        .map(|org| {
            let result = results.iter().find(|r| r.organization == org.org()).expect("a result per registry");
            assert_eq!(result.status, JobStatus::Completed, "{result:?}");
            serde_json::from_slice(&result.output).unwrap()
        })
        .collect();
    (created, outputs)
}

/// The secure-sum messages the tap saw, opened with their receivers' keys as only they could:
/// (topic, sender, body), each envelope once (the tap sees it published and delivered).
fn secure_sum_messages(fed: &Federation, carried: &[Vec<u8>]) -> Vec<(String, fedq::ids::OrgId, Vec<u8>)> {
    let mut ids = std::collections::HashSet::new();
    run_messages(fed, carried)
        .into_iter()
        .filter(|(header, message)| message.topic.starts_with("fedq.") && ids.insert(header.id))
        .map(|(header, message)| (message.topic, header.sender, message.body.into_vec()))
        .collect()
}

#[derive(serde::Deserialize)]
struct MaskedPart {
    participants: Vec<fedq::ids::OrgId>,
    values: Vec<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_registries_aggregate_and_only_the_sum_is_learnt() {
    let fed = Federation::new(3, &["fedq/probe"], |_, _| Default::default()).await;
    let (_tap_connection, tap) = tap(&fed).await;
    // Each registry's count and sum of ages.
    let values: Vec<[u64; 2]> = (0..3).map(|_| [random_value(), random_value()]).collect();
    let total = [values.iter().map(|v| v[0]).sum::<u64>(), values.iter().map(|v| v[1]).sum::<u64>()];
    let steps = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut steps = vec![json!({"op": "contribute", "round": "counts", "values": v})];
            if i == 0 {
                steps.push(json!({"op": "secure_sum", "round": "counts"}));
            }
            json!(steps)
        })
        .collect();
    let (created, outputs) = outputs(&fed, &spec(&fed, steps, "secure aggregation")).await;
    assert_eq!(outputs[0], json!(["ok", total]), "the aggregator's job has the sum");
    assert_eq!(outputs[1], json!(["ok"]));
    assert_eq!(outputs[2], json!(["ok"]));

    // What crossed the broker: each pair's run keys both ways, and B's and C's masked parts to A
    // (A's own never left its node).
    let carried = drain(&tap).await;
    let messages = secure_sum_messages(&fed, &carried);
    assert_eq!(messages.iter().filter(|(t, ..)| t == KEY).count(), 6, "{} messages", messages.len());
    let parts: Vec<(fedq::ids::OrgId, MaskedPart)> = messages
        .iter()
        .filter(|(t, ..)| t == PART)
        .map(|(_, sender, body)| (*sender, rmp_serde::from_slice(body).unwrap()))
        .collect();
    assert_eq!(parts.len(), 2, "B's and C's parts went to A");
    // What the aggregator's organization could read: masked vectors that are none of the
    // contributions, and whose sum is none of the pairs' sums.
    let mut sorted: Vec<_> = fed.orgs.iter().map(|o| o.org()).collect();
    sorted.sort();
    for (sender, part) in &parts {
        assert_eq!(part.participants, sorted);
        let i = fed.orgs.iter().position(|o| o.org() == *sender).unwrap();
        assert_ne!(part.values, values[i].to_vec(), "a part is masked");
        for value in &part.values {
            assert!(!values.iter().flatten().any(|v| v == value), "a contribution travelled as it is");
        }
    }
    let pair: Vec<u64> = (0..2).map(|k| parts[0].1.values[k].wrapping_add(parts[1].1.values[k])).collect();
    assert_ne!(pair, vec![values[1][0] + values[2][0], values[1][1] + values[2][1]]);

    // No registry's values, no partial sum, no total: not on the broker, not in the database.
    let mut secrets: Vec<(String, u64)> = Vec::new();
    for (i, v) in values.iter().enumerate() {
        secrets.push((format!("registry {i}'s count"), v[0]));
        secrets.push((format!("registry {i}'s sum"), v[1]));
    }
    for k in 0..2 {
        secrets.push(("a total".into(), total[k]));
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            secrets.push((format!("the partial sum of {i} and {j}"), values[i][k] + values[j][k]));
        }
    }
    let carried = carried.concat();
    let dump_text = dump(&fed);
    assert!(dump_text.contains(&created.task.to_string()), "the dump holds the task's metadata");
    let undated = without_timestamps(&dump_text);
    let dump_bytes = hex_runs(&dump_text);
    let task_bytes = created.task.as_uuid().as_bytes();
    assert!(
        contains(&carried, task_bytes) && contains(&dump_bytes, task_bytes),
        "the searches find what is there"
    );
    // The aggregator's container log: its own steps, none of its partners' values.
    let a_job = created.jobs.iter().find(|(_, org)| *org == fed.orgs[0].org()).unwrap().0;
    let a_log = std::fs::read_to_string(
        fed.configs[0].node.state_dir.join("jobs").join(a_job.to_string()).join("container.log"),
    )
    .unwrap();
    assert!(a_log.contains(&values[0][0].to_string()), "A's log holds its own step: {a_log}");
    for (what, value) in &secrets {
        let decimal = value.to_string();
        assert!(!contains(&carried, decimal.as_bytes()), "{what} {value} as text on the broker");
        assert!(!contains_decimal(&undated, &decimal), "{what} {value} as text in the database");
        if !what.starts_with("registry 0") && what != "a total" {
            assert!(!contains_decimal(&a_log, &decimal), "{what} in the aggregator's container log");
        }
        for (encoding, bytes) in encodings(*value) {
            assert!(!contains(&carried, &bytes), "{what} {value} ({encoding}) on the broker");
            assert!(!contains(&dump_bytes, &bytes), "{what} {value} ({encoding}) in the database");
        }
    }
    fed.assert_log_checked_without_alarms().await;
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_second_and_malformed_contributions_are_refused_and_a_missing_one_is_named() {
    // With the default minimum of organizations (the test kit's nodes take 1).
    let fed = Federation::configured(
        3,
        &["fedq/probe"],
        |_, _| Default::default(),
        |_, config| {
            config.policy.min_organizations = 3;
        },
    )
    .await;
    let (a, b, c) = (&fed.orgs[0], &fed.orgs[1], &fed.orgs[2]);
    let pair = json!([a.org(), b.org()]);
    let steps = vec![
        json!([
            {"op": "contribute", "round": "counts", "values": [7]},
            {"op": "secure_sum", "round": "counts"},
            {"op": "receive", "topic": "go", "from": c.org()},
            {"op": "secure_sum", "round": "counts"},
        ]),
        json!([
            {"op": "contribute", "round": "counts", "values": [11]},
            {"op": "send", "to": a.org(), "topic": PART, "body": "forged"},
            {"op": "contribute", "round": "pair", "participants": pair, "values": [1]},
            // The same values again are sent again (a retry); others are refused, for under the
            // same masks the two parts would tell A their difference.
            {"op": "contribute", "round": "counts", "values": [11]},
            {"op": "contribute", "round": "counts", "values": [1000]},
        ]),
        json!([{"op": "contribute", "round": "counts", "values": [13]}]),
    ];
    let forgeries = spec(&fed, steps, "forgeries");
    let created = fed.researcher.create_task(a, &forgeries).await.unwrap();
    // C's genuine part is at A's node.
    let parts = fed.configs[0].node.state_dir.join("runs").join(created.run.to_string()).join("secure-sum");
    let genuine = parts.join(format!("part-counts-{}", c.org()));
    eventually(120, "C's part to reach A's node", || async { genuine.exists().then_some(()) }).await;

    // C's node, malicious, sends A another part for the same round, a part of a round whose
    // participants leave C out, and another run key: all signed by C, for C's real job.
    let c_job = created.jobs.iter().find(|(_, org)| *org == c.org()).unwrap().0;
    let route = Route {
        kind: Kind::RunMessage,
        collaboration: fed.collaboration,
        task: created.task,
        run: created.run,
        status: None,
    };
    let seal = |topic: &str, body: Vec<u8>| {
        let message = Payload::RunMessage(fedq::protocol::RunMessage {
            from_job: c_job,
            topic: topic.into(),
            body: serde_bytes::ByteBuf::from(body),
            log_head: None,
        });
        envelope::seal(
            c,
            a.org(),
            a.current().public(),
            &route,
            &message.to_bytes(),
            &SealOptions::default(),
            Timestamp::now(),
        )
        .unwrap()
        .bytes
    };
    #[derive(serde::Serialize)]
    struct Forged {
        round: &'static str,
        participants: Vec<fedq::ids::OrgId>,
        values: Vec<u64>,
    }
    let mut everyone: Vec<_> = fed.orgs.iter().map(|o| o.org()).collect();
    everyone.sort();
    let mut without_c = vec![a.org(), b.org()];
    without_c.sort();
    let again = Forged { round: "counts", participants: everyone, values: vec![1_000_000] };
    let outside = Forged { round: "other", participants: without_c, values: vec![5] };
    let key = json!({"public": serde_bytes::ByteBuf::from(vec![9u8; 32])});
    let _conn = [
        crate::malicious_partner::publish_as_node(
            &fed,
            2,
            &seal(PART, rmp_serde::to_vec_named(&again).unwrap()),
        )
        .await,
        crate::malicious_partner::publish_as_node(
            &fed,
            2,
            &seal(PART, rmp_serde::to_vec_named(&outside).unwrap()),
        )
        .await,
        crate::malicious_partner::publish_as_node(
            &fed,
            2,
            &seal(KEY, rmp_serde::to_vec_named(&key).unwrap()),
        )
        .await,
    ];
    eventually(60, "A's node to refuse the second part and key, and the malformed part", || async {
        let refusals = fed.nodes[0].refusals();
        let again = refusals.get("secure_sum_again").copied().unwrap_or(0);
        let malformed = refusals.get("secure_sum_malformed").copied().unwrap_or(0);
        (again >= 2 && malformed >= 1).then_some(())
    })
    .await;
    // Then C tells A's job to read the sum again.
    let go = seal("go", b"now".to_vec());
    let _go = crate::malicious_partner::publish_as_node(&fed, 2, &go).await;
    let results = fed
        .researcher
        .wait_and_open(a, fed.collaboration, created.task, Duration::from_secs(240))
        .await
        .unwrap();
    let output = |org: fedq::ids::OrgId| -> Value {
        let result = results.iter().find(|r| r.organization == org).unwrap();
        assert_eq!(result.status, JobStatus::Completed, "{result:?}");
        serde_json::from_slice(&result.output).unwrap()
    };
    let at_a = output(a.org());
    assert_eq!(at_a[1], json!([31]), "{at_a}");
    assert_eq!(at_a[3], json!([31]), "the forged second part changed the sum: {at_a}");
    let at_b = output(b.org());
    let said = |i: usize| at_b[i].as_str().unwrap_or_default().to_owned();
    assert!(said(1).contains("malformed") && said(1).contains("the node's own"), "{at_b}");
    assert!(said(2).contains("refused") && said(2).contains("policy.min_organizations"), "{at_b}");
    assert_eq!(at_b[3], json!("ok"), "the same contribution again is a retry: {at_b}");
    assert!(
        said(4).contains("already_posted")
            && said(4).contains("contributed other values to round counts already"),
        "{at_b}"
    );

    // A round that C never joins fails at once its wait is over, naming C.
    let steps = vec![
        json!([{"op": "contribute", "round": "late", "values": [1], "timeout_secs": 3}]),
        json!([{"op": "contribute", "round": "late", "values": [2], "timeout_secs": 3}]),
        json!([]),
    ];
    let (_, outputs) = outputs(&fed, &spec(&fed, steps, "a missing participant")).await;
    for said in &outputs[..2] {
        let said = said[0].as_str().unwrap_or_default();
        assert!(said.contains("round_incomplete") && said.contains(&c.org().to_string()), "{said}");
    }
    fed.cleanup().await;
}
