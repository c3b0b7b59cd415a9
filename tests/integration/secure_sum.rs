//! Secure Sum end to end, with real services and containers: three and five registries each
//! count the patients in their own CSV; the researcher gets the total; a tap on every envelope
//! the broker carried and a dump of the server's database contain none of the counts, R, the
//! partial sums or the total, in any encoding the project uses.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::envelope::{self, OpenPolicy, Replay};
use fedq::keys::Keyring;
use fedq::protocol::{JobStatus, Kind, Payload};
use fedq::time::Timestamp;
use futures_util::StreamExt as _;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use support::federation::Federation;

const IMAGE: &str = "fedq/secure-sum:0.1.0";

fn random_count() -> u64 {
    // Above 65535, so that every binary encoding is at least five bytes long and a chance match
    // in random ciphertext is negligible.
    66_000 + (uuid::Uuid::new_v4().as_u128() % 30_000) as u64
}

/// A patients CSV of `rows` rows, every third one diagnosed E11.
pub(crate) fn write_patients(path: &std::path::Path, rows: u64) {
    use std::fmt::Write as _;
    let mut csv = String::from("id,age,diagnosis\n");
    for i in 0..rows {
        let _ = writeln!(csv, "p{i:07},{},{}", 20 + i % 70, if i % 3 == 0 { "E11" } else { "I10" });
    }
    std::fs::write(path, csv).unwrap();
}

/// Every encoding of `value` the project could put on the wire or in the database.
pub(crate) fn encodings(value: u64) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("little-endian", value.to_le_bytes().to_vec()),
        ("big-endian", value.to_be_bytes().to_vec()),
        ("MessagePack", rmp_serde::to_vec(&value).unwrap()),
    ]
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Decimal `text` in `hay`, not part of a longer run of hex digits.
pub(crate) fn contains_decimal(hay: &str, text: &str) -> bool {
    hay.match_indices(text).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + text.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_hexdigit()) && !after.is_some_and(|c| c.is_ascii_hexdigit())
    })
}

/// The run messages the tap saw, opened with the keys of the registries they were sealed for:
/// what travelled, as only its receiver could read it. With their headers, in the tap's order.
pub(crate) fn run_messages(
    fed: &Federation,
    carried: &[Vec<u8>],
) -> Vec<(envelope::Header, fedq::protocol::RunMessage)> {
    let mut keys = Keyring::new();
    for org in &fed.orgs {
        keys.insert(org.org(), org.current().public().clone());
    }
    let mut messages = Vec::new();
    for bytes in carried {
        let Ok(header) = envelope::peek_header(bytes, usize::MAX) else { continue };
        if header.kind != Kind::RunMessage {
            continue;
        }
        let me = fed.orgs.iter().find(|o| o.org() == header.recipient).expect("sealed for a registry");
        let opened = envelope::open_with(
            bytes,
            me,
            &keys,
            Replay::Unchecked,
            &OpenPolicy::default(),
            Timestamp::now(),
        )
        .expect("a run message opens with its receiver's key");
        let Ok(Payload::RunMessage(message)) = opened.decode() else { panic!("a run message's payload") };
        messages.push((header, message));
    }
    messages
}

/// The ring's values (topic, value) in the run messages the tap saw.
fn ring_values(fed: &Federation, carried: &[Vec<u8>]) -> Vec<(String, u64)> {
    run_messages(fed, carried)
        .into_iter()
        .map(|(_, message)| {
            let value = u64::from_le_bytes(message.body.as_slice().try_into().expect("8 bytes"));
            (message.topic, value)
        })
        .collect()
}

/// A tap on everything the broker carries: a queue bound to ingress and to every delivery key.
/// The connection must be kept while the tap is read.
pub(crate) async fn tap(fed: &Federation) -> (lapin::Connection, lapin::Channel) {
    let connection = fed.app.amqp("guest", "guest").await.unwrap();
    let tap = connection.create_channel().await.unwrap();
    tap.queue_declare("tap".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
    tap.queue_bind(
        "tap".into(),
        "fedq.ingress".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for org in &fed.orgs {
        let key = org.org().to_string();
        tap.queue_bind(
            "tap".into(),
            "fedq.deliver".into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    (connection, tap)
}

/// Everything the tap holds: each message the broker carried since it was bound.
pub(crate) async fn drain(tap: &lapin::Channel) -> Vec<Vec<u8>> {
    let mut carried = Vec::new();
    let mut consumer = tap
        .basic_consume(
            "tap".into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
        carried.push(delivery.data);
    }
    carried
}

/// The server's database, as `pg_dump --data-only` writes it.
pub(crate) fn dump(fed: &Federation) -> String {
    let dump = std::process::Command::new("su")
        .args(["postgres", "-c", &format!("pg_dump --data-only {}", fed.app.db_name)])
        .output()
        .unwrap();
    assert!(dump.status.success());
    String::from_utf8_lossy(&dump.stdout).to_string()
}

async fn run_secure_sum(n: usize) {
    let counts: Vec<u64> = (0..n).map(|_| random_count()).collect();
    let data_counts = counts.clone();
    let fed = Federation::new(n, &["fedq/secure-sum"], move |i, dir| {
        let path = dir.join("patients.csv");
        write_patients(&path, data_counts[i]);
        BTreeMap::from([("patients".to_owned(), path)])
    })
    .await;

    let (_tap_connection, tap) = tap(&fed).await;

    let organizations: Vec<_> = fed.orgs.iter().map(|o| o.org()).collect();
    let input = json!({"data": "patients", "share": true}).to_string().into_bytes();
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: IMAGE.into(),
        organizations: organizations.clone(),
        inputs: Inputs::Same(input),
        name: format!("secure sum of {n}"),
        return_log: false,
    };
    let created = fed.researcher.create_task(&fed.orgs[0], &spec).await.expect("the task is created");
    let results = fed
        .researcher
        .wait_and_open(&fed.orgs[0], fed.collaboration, created.task, Duration::from_secs(180))
        .await
        .expect("the results open");
    let total: u64 = counts.iter().sum();
    assert_eq!(results.len(), n);
    for result in &results {
        assert_eq!(result.status, JobStatus::Completed, "{result:?}");
        let output: Value = serde_json::from_slice(&result.output).unwrap();
        assert_eq!(output["N"], total, "every registry learns N: {output}");
    }

    // The run as the metrics saw it, scraped from the server and the first registry's node.
    let server_addr = fed.app.server.as_ref().unwrap().metrics_addr.expect("the test server serves metrics");
    let queue = format!("fedq_queue_messages{{queue=\"fedq.org.{}\"}}", fed.orgs[0].org());
    // A result is readable through the API once its transaction commits; the router counts it
    // just after, so the counters are waited for too.
    let stored = r#"fedq_routed_envelopes_total{kind="job_result",outcome="stored"}"#;
    let server_metrics =
        support::eventually(10, "the queue gauges and the results' counts to be read", || async {
            let text = support::scrape(server_addr).await;
            let counted = support::sample(&text, stored).is_some_and(|v| v >= n as f64);
            (support::sample(&text, &queue).is_some() && counted).then_some(text)
        })
        .await;
    let at_least = |text: &str, series: &str, n: f64| {
        let value = support::sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(value >= n, "{series} = {value}, expected at least {n}");
    };
    at_least(
        &server_metrics,
        r#"fedq_routed_envelopes_total{kind="job_start",outcome="forwarded"}"#,
        n as f64,
    );
    at_least(&server_metrics, r#"fedq_routed_envelopes_total{kind="job_result",outcome="stored"}"#, n as f64);
    at_least(&server_metrics, r#"fedq_routing_seconds_count{kind="run_message"}"#, (n - 1) as f64);
    at_least(
        &server_metrics,
        r#"fedq_http_requests_total{method="POST",route="/api/v1/tasks",status="201"}"#,
        1.0,
    );
    at_least(&server_metrics, r#"fedq_db_pool_connections{state="size"}"#, 1.0);
    let node_metrics = support::scrape(fed.nodes[0].metrics_addr().expect("test nodes serve metrics")).await;
    at_least(&node_metrics, r#"fedq_node_jobs_finished_total{status="completed"}"#, 1.0);
    at_least(&node_metrics, "fedq_node_container_start_seconds_count", 1.0);
    at_least(&node_metrics, r#"fedq_node_endpoint_requests_total{route="/v1/input",status="200"}"#, 1.0);
    assert!(node_metrics.contains("fedq_node_jobs_running "), "{node_metrics}");
    for count in counts.iter().chain([&total]) {
        let decimal = count.to_string();
        assert!(!contains_decimal(&server_metrics, &decimal) && !contains_decimal(&node_metrics, &decimal));
    }

    // Everything the broker carried.
    let carried = drain(&tap).await;
    // job starts, statuses, results, the ring's messages and the subtask all went by.
    assert!(carried.len() >= 3 * n, "the tap saw {} messages", carried.len());

    // What each party handled: the values of the ring, opened with their receivers' keys, and
    // R, which the first value hides A's count with.
    let mut secrets: Vec<(String, u64)> = counts.iter().map(|c| ("a count".to_owned(), *c)).collect();
    secrets.push(("N".into(), total));
    let travelled = ring_values(&fed, &carried);
    let first: Vec<u64> = travelled.iter().filter(|(t, _)| t == "secure-sum/1").map(|(_, v)| *v).collect();
    assert!(!first.is_empty(), "A's first value went by: {travelled:?}");
    secrets.push(("R".into(), first[0].wrapping_sub(counts[0])));
    let passed: std::collections::BTreeSet<&str> =
        travelled.iter().filter(|(t, _)| t != "secure-sum/N").map(|(t, _)| t.as_str()).collect();
    assert_eq!(passed.len(), n, "every registry passed a sum on: {travelled:?}");
    for (topic, value) in &travelled {
        if topic != "secure-sum/N" {
            secrets.push((topic.clone(), *value));
        }
    }
    let carried: Vec<u8> = carried.concat();

    // Everything the server stored.
    let dump_text = dump(&fed);
    assert!(dump_text.contains(&created.task.to_string()), "the dump holds the task's metadata");
    // Timestamps are the only decimal runs of the dump that are not identifiers; drop them.
    let undated = without_timestamps(&dump_text);
    let dump_bytes: Vec<u8> = hex_runs(&dump_text);
    assert!(dump_bytes.len() > 1000, "the sealed envelopes are in the dump");

    // The searches find what is there: the task id travels in every clear header.
    let task_bytes = created.task.as_uuid().as_bytes();
    assert!(contains(&carried, task_bytes) && contains(&dump_bytes, task_bytes));

    for (what, value) in &secrets {
        let decimal = value.to_string();
        assert!(!contains(&carried, decimal.as_bytes()), "{what} {value} as text on the broker");
        assert!(!contains_decimal(&undated, &decimal), "{what} {value} as text in the database");
        for (encoding, bytes) in encodings(*value) {
            assert!(!contains(&carried, &bytes), "{what} {value} ({encoding}) on the broker");
            assert!(!contains(&dump_bytes, &bytes), "{what} {value} ({encoding}) in the database");
            assert!(
                !dump_text.contains(&hex::encode(&bytes)),
                "{what} {value} ({encoding}, hex) in the database"
            );
        }
    }
    // The server's log shows every envelope of the run, and no node saw anything to alarm on.
    fed.assert_log_checked_without_alarms().await;
    fed.cleanup().await;
}

/// The dump with its timestamps (`2026-11-26 20:14:12.81234+00`) blanked out.
pub(crate) fn without_timestamps(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let looks_like_date = i + 19 <= bytes.len()
            && bytes[i..i + 4].iter().all(u8::is_ascii_digit)
            && bytes[i + 4] == b'-'
            && bytes[i + 7] == b'-'
            && bytes[i + 10] == b' '
            && bytes[i + 13] == b':';
        if looks_like_date {
            let mut j = i + 19;
            while j < bytes.len()
                && (bytes[j].is_ascii_digit() || matches!(bytes[j], b'.' | b'+' | b'-' | b':'))
            {
                j += 1;
            }
            out.push(' ');
            i = j;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The bytes of every `\x…` hex run (PostgreSQL's text form of `bytea`) in the dump.
pub(crate) fn hex_runs(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in text.split("\\\\x").skip(1) {
        let run: String = part.chars().take_while(char::is_ascii_hexdigit).collect();
        if let Ok(bytes) = hex::decode(&run[..run.len() & !1]) {
            out.extend_from_slice(&bytes);
            out.extend_from_slice(b"|");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_sum_of_three_registries_reveals_only_the_total() {
    run_secure_sum(3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_sum_of_five_registries_reveals_only_the_total() {
    run_secure_sum(5).await;
}
