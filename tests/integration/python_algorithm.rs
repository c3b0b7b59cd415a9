//! A Python algorithm through real nodes: the `fedq/python-secure-sum` image (Debian's python3
//! from a root file system `scripts/images` makes with mmdebstrap, and the fedq-algorithm
//! package) computes Secure Sum across three registries with real Docker containers, RabbitMQ,
//! PostgreSQL and the server; and a ring of Python containers hands its sum to A's second
//! container running the Rust `fedq/secure-sum`, which reads the R the Python container wrote to
//! the run volume: the two implementations interoperate. The mock federation that algorithm
//! authors test with gives the same results as the real one.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::protocol::JobStatus;
use serde_json::{Value, json};
use support::federation::Federation;

use crate::secure_sum::write_patients;

const PYTHON: &str = "fedq/python-secure-sum:0.1.0";
const RUST: &str = "fedq/secure-sum:0.1.0";

async fn python_secure_sum(input: Value) -> (Vec<u64>, Vec<Value>) {
    let counts: Vec<u64> = vec![1_234, 567, 89];
    let data_counts = counts.clone();
    let fed = Federation::new(3, &["fedq/python-secure-sum", "fedq/secure-sum"], move |i, dir| {
        let path = dir.join("patients.csv");
        write_patients(&path, data_counts[i]);
        BTreeMap::from([("patients".to_owned(), path)])
    })
    .await;
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: PYTHON.into(),
        organizations: fed.orgs.iter().map(|o| o.org()).collect(),
        inputs: Inputs::Same(input.to_string().into_bytes()),
        name: "python secure sum".into(),
        return_log: false,
    };
    let created = fed.researcher.create_task(&fed.orgs[0], &spec).await.expect("the task is created");
    let results = fed
        .researcher
        .wait_and_open(&fed.orgs[0], fed.collaboration, created.task, Duration::from_secs(180))
        .await
        .expect("the results open");
    let outputs = results
        .iter()
        .map(|r| {
            assert_eq!(r.status, JobStatus::Completed, "{r:?}");
            serde_json::from_slice(&r.output).unwrap()
        })
        .collect();
    fed.cleanup().await;
    (counts, outputs)
}

/// The same algorithm on the same data in the mock federation: its results, by position in the
/// ring.
fn in_the_mock(counts: &[u64], input: &Value) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut folders = Vec::new();
    for (i, rows) in counts.iter().enumerate() {
        let folder = dir.path().join(format!("registry-{i}"));
        std::fs::create_dir(&folder).unwrap();
        write_patients(&folder.join("patients"), *rows);
        folders.push(folder.to_str().unwrap().to_owned());
    }
    support::in_the_mock("secure_sum", input, &folders, 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_secure_sum_across_three_registries_through_real_nodes_as_in_the_mock() {
    let input = json!({"data": "patients", "share": true});
    let (counts, outputs) = python_secure_sum(input.clone()).await;
    let total: u64 = counts.iter().sum();
    assert_eq!(outputs.len(), 3);
    for output in &outputs {
        assert_eq!(output["N"], total, "every registry learns N: {output}");
    }
    // What an author saw in the mock is what the federation computed.
    let mocked = in_the_mock(&counts, &input);
    let mut real = outputs.clone();
    let mut mocked_sorted = mocked.clone();
    real.sort_by_key(|o| o.to_string());
    mocked_sorted.sort_by_key(|o| o.to_string());
    assert_eq!(real, mocked_sorted, "the mock and the federation disagree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_ring_finishes_in_the_rust_container() {
    let input = json!({"data": "patients", "where": {"column": "diagnosis", "equals": "E11"}, "finisher_image": RUST});
    let (counts, outputs) = python_secure_sum(input).await;
    let e11: u64 = counts.iter().map(|rows| rows.div_ceil(3)).sum();
    let at_a = outputs.iter().find(|o| o.get("organizations").is_some()).expect("A's result");
    assert_eq!(at_a["N"], e11, "{at_a}");
    assert_eq!(at_a["organizations"], 3);
}

/// `fedq-algorithm test` (the mock federation running images in Docker, as an author tests
/// before any node is involved) gives the total for the Python image and for the Rust one:
/// an image that passes there is the image the federation runs.
#[test]
fn the_algorithm_test_command_runs_images_in_the_mock() {
    support::node::ensure_images();
    let counts: [u64; 3] = [31, 415, 92];
    let dir = tempfile::tempdir().unwrap();
    let mut orgs = Vec::new();
    for (i, rows) in counts.iter().enumerate() {
        let path = dir.path().join(format!("registry-{i}.csv"));
        write_patients(&path, *rows);
        orgs.push(format!("registry-{i}={}", path.display()));
    }
    for image in [PYTHON, RUST] {
        let mut command = support::python();
        command.args(["-m", "fedq_algorithm", "test", "--image", image, "--json"]);
        command.args(["--input", &json!({"data": "patients", "share": true}).to_string()]);
        for org in &orgs {
            command.args(["--org", org]);
        }
        let out = command.output().expect("scripts/python runs");
        assert!(out.status.success(), "{image} in the mock:\n{}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        for row in &rows {
            assert_eq!(row["status"], "completed", "{image}: {row}");
            let output: Value = serde_json::from_str(row["output"].as_str().unwrap()).unwrap();
            assert_eq!(output["N"], counts.iter().sum::<u64>(), "{image}: {row}");
        }
    }
}
