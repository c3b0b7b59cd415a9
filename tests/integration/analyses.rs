//! The analyses (`fedq/python-analysis`, `fedq_algorithm.analysis`) through real nodes, broker,
//! server and containers, three and five registries of different sizes with missing values:
//! every analysis's output equals the same computation on the pooled rows with pandas, scipy,
//! statsmodels and lifelines (`python/fedq-algorithm/tests/pooled.py` generates the registries'
//! data and checks the outputs), and the containers of a GLM stay up for the whole fit. No
//! registry's own sums, nor any two registries' sums, reach the broker, the server's database or
//! the aggregator's organization.

use crate::secure_sum;
use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use fedq::protocol::JobStatus;
use serde_json::Value;
use support::federation::Federation;

const IMAGE: &str = "fedq/python-analysis:0.1.0";
const POOLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/fedq-algorithm/tests/pooled.py");

/// The registries' data and the cases, as `pooled.py generate` writes them in a directory of
/// their own.
fn generate(sizes: &[u32]) -> (tempfile::TempDir, BTreeMap<String, Value>) {
    let dir = tempfile::tempdir().unwrap();
    let sizes: Vec<String> = sizes.iter().map(u32::to_string).collect();
    let out = support::python().arg(POOLED).arg("generate").arg(dir.path()).args(&sizes).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cases = serde_json::from_slice(&std::fs::read(dir.path().join("cases.json")).unwrap()).unwrap();
    (dir, cases)
}

/// A federation of `n` registries, each with its `patients` from `data`, registry i's node
/// with the minimum per cell `min_cell_count(i)`.
async fn federation(data: &std::path::Path, n: usize, min_cell_count: impl Fn(usize) -> usize) -> Federation {
    let data = data.to_owned();
    let data_of = move |i: usize, _: &std::path::Path| {
        BTreeMap::from([("patients".to_owned(), data.join(format!("registry-{i}")).join("patients"))])
    };
    // numpy, pandas and scipy need more than the test kit's 64 MiB; 512 is a node's default.
    Federation::configured(n, &["fedq/python-analysis"], data_of, |i, config| {
        config.limits.memory_mib = 512;
        config.policy.min_cell_count = min_cell_count(i);
    })
    .await
}

/// Runs `case` at every registry; its task and each registry's result.
async fn try_case(
    fed: &Federation,
    name: &str,
    case: &Value,
) -> (fedq::client::CreatedTask, Vec<fedq::client::OpenedResult>) {
    let mut input = case.clone();
    input["data"] = "patients".into();
    fed.run_task(IMAGE, input.to_string().as_bytes(), &format!("analysis {name}"), Duration::from_secs(300))
        .await
}

/// Runs `case` at every registry; every job completes, the first posts the statistics (which
/// are returned) and the others say they contributed.
async fn run_case(fed: &Federation, name: &str, case: &Value) -> (fedq::client::CreatedTask, Value) {
    let organizations: Vec<_> = fed.orgs.iter().map(|o| o.org()).collect();
    let (created, opened) = try_case(fed, name, case).await;
    for result in &opened {
        assert_eq!(result.status, JobStatus::Completed, "{name}: {result:?}");
    }
    let first = opened.iter().find(|r| r.organization == organizations[0]).unwrap();
    let output: Value = serde_json::from_slice(&first.output).unwrap();
    assert_eq!(output["organizations"], organizations.len(), "{name}: {output}");
    for other in opened.iter().filter(|r| r.organization != organizations[0]) {
        let said: Value = serde_json::from_slice(&other.output).unwrap();
        assert_eq!(said["contributed"], true, "{name}: {said}");
    }
    (created, output)
}

async fn every_analysis_equals_the_pooled_rows(sizes: &[u32]) {
    let (dir, cases) = generate(sizes);
    let folder = dir.path().to_str().unwrap().to_owned();
    let fed = federation(dir.path(), sizes.len(), |_| 3).await;
    let mut results = serde_json::Map::new();
    for (name, case) in &cases {
        results.insert(name.clone(), run_case(&fed, name, case).await.1);
    }
    // One container per organization for a whole GLM fit of several iterations.
    assert!(results["logistic"]["iterations"].as_u64().unwrap() >= 4, "{}", results["logistic"]);
    std::fs::write(dir.path().join("results.json"), Value::Object(results).to_string()).unwrap();
    let checked = support::python().arg(POOLED).args(["check", &folder]).output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{said}{}", String::from_utf8_lossy(&checked.stderr));
    assert!(said.contains("all 8 analyses equal the pooled computation"), "{said}");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_analysis_of_three_registries_equals_the_pooled_rows() {
    every_analysis_equals_the_pooled_rows(&[400, 1200, 250]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_analysis_of_five_registries_equals_the_pooled_rows() {
    every_analysis_equals_the_pooled_rows(&[300, 900, 150, 620, 75]).await;
}

/// A runtime whose threads log everything at debug level (the server's and the nodes' logs,
/// which run in it) to `path`, and nothing of the other tests that run beside it.
fn logging_runtime(path: &std::path::Path) -> tokio::runtime::Runtime {
    let file = std::fs::File::create(path).unwrap();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .finish();
    let dispatch = tracing::Dispatch::new(subscriber);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            // For the thread's whole life: a runtime thread is never given back.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        })
        .build()
        .unwrap()
}

/// What each party learns of a linear regression (`docs/algorithms.md`): each registry's own
/// sums (n, XᵀX, Xᵀy, yᵀy, Σy, as `pooled.py local` computes them from its rows) and the sums of
/// any two registries reach no one. Not the broker, not the server's database or its log, not
/// the aggregator's organization: neither in the run messages its node opened (the masked
/// parts), nor in its node's log or its container's. Searched as the wide fixed point's words
/// (8 bytes either way and MessagePack, and as text in the logs), as the reals' 8 bytes and as
/// their text.
#[test]
fn no_registry_s_sums_of_a_linear_regression_reach_anyone() {
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("server-and-nodes.log");
    let runtime = logging_runtime(&log_path);
    // On a runtime thread, as everything it starts: the thread calling block_on logs nowhere.
    let test = runtime.spawn(no_registry_s_sums_reach_anyone(log_path));
    if let Err(failed) = runtime.block_on(test) {
        std::panic::resume_unwind(failed.into_panic());
    }
}

async fn no_registry_s_sums_reach_anyone(log_path: std::path::PathBuf) {
    let (dir, cases) = generate(&[400, 1200, 250]);
    let local = support::python().arg(POOLED).arg("local").arg(dir.path()).arg("linear").output().unwrap();
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    // Per registry: its sums as reals and as the words its node contributes.
    let sums: Vec<(Vec<f64>, Vec<u64>)> = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(sums.len(), 3);
    let fed = federation(dir.path(), 3, |_| 3).await;
    let (_tap_connection, tap) = secure_sum::tap(&fed).await;
    let organizations: Vec<_> = fed.orgs.iter().map(|o| o.org()).collect();
    let (created, output) = run_case(&fed, "linear", &cases["linear"]).await;
    assert_eq!(output["n"].as_u64(), Some(sums.iter().map(|s| s.0[0] as u64).sum()), "{output}");

    // What is looked for: B's and C's sums (A's own are A's), and every pair's.
    let mut secrets: Vec<(String, Vec<f64>, Vec<u64>)> = Vec::new();
    for (i, (reals, words)) in sums.iter().enumerate().skip(1) {
        secrets.push((format!("registry {i}'s sums"), reals.clone(), words.clone()));
    }
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        let reals = sums[i].0.iter().zip(&sums[j].0).map(|(a, b)| a + b).collect();
        let words = sums[i].1.iter().zip(&sums[j].1).map(|(a, b)| a.wrapping_add(*b)).collect();
        secrets.push((format!("registries {i} and {j}'s sums"), reals, words));
    }
    let carried = secure_sum::drain(&tap).await;
    // The run messages as A's node opened them: the masked parts it summed.
    let to_a: Vec<_> = secure_sum::run_messages(&fed, &carried)
        .into_iter()
        .filter(|(header, message)| {
            header.recipient == organizations[0] && message.topic == "fedq.secure-sum.part"
        })
        .collect();
    // The words searched are the ones contributed: each of B's and C's parts to the sums' round
    // has as many values as `pooled.py local` gave their registry (the ready round's have one).
    #[derive(serde::Deserialize)]
    struct Part {
        round: String,
        values: Vec<u64>,
    }
    let mut checked = 0;
    for (header, message) in &to_a {
        let part: Part = rmp_serde::from_slice(&message.body).unwrap();
        if part.round == "linear" {
            let i = organizations.iter().position(|o| *o == header.sender).unwrap();
            assert_eq!(part.values.len(), sums[i].1.len(), "registry {i}'s part");
            checked += 1;
        }
    }
    assert!(checked >= 2, "B's and C's parts of the sums' round reached A ({checked} seen)");
    let at_a: Vec<u8> = to_a.into_iter().flat_map(|(_, message)| message.body.into_vec()).collect();
    assert!(!at_a.is_empty(), "A's node received the masked parts");
    let carried = carried.concat();
    let dump_text = secure_sum::dump(&fed);
    let dump_bytes = secure_sum::hex_runs(&dump_text);
    let a_job = created.jobs.iter().find(|(_, org)| *org == organizations[0]).unwrap().0;
    let a_log = std::fs::read_to_string(
        fed.configs[0].node.state_dir.join("jobs").join(a_job.to_string()).join("container.log"),
    )
    .unwrap();
    // The server's log and the nodes' (A's among them), as they would reach an operator.
    let logged = std::fs::read_to_string(&log_path).unwrap();
    for target in ["fedq_server::", "fedq_node::"] {
        assert!(
            logged.contains(target),
            "the log holds {target} lines:\n{}",
            &logged[..logged.len().min(2000)]
        );
    }
    let mut searched = 0;
    for (what, reals, words) in &secrets {
        // A word with few significant bytes (an integer count's low word) could be anything.
        for word in words.iter().filter(|w| w.to_le_bytes().iter().filter(|b| **b != 0).count() >= 5) {
            for text in [word.to_string(), format!("{word:x}"), format!("{word:X}")] {
                assert!(
                    !logged.contains(&text),
                    "{what}: word {word:#x} as text in the server's or a node's log"
                );
            }
            for (encoding, bytes) in secure_sum::encodings(*word) {
                for (place, hay) in
                    [("the broker", &carried), ("the database", &dump_bytes), ("A's opened messages", &at_a)]
                {
                    assert!(
                        !secure_sum::contains(hay, &bytes),
                        "{what}: word {word:#x} ({encoding}) in {place}"
                    );
                }
            }
            searched += 1;
        }
        for real in reals.iter().filter(|r| r.fract() != 0.0) {
            for (encoding, bytes) in
                [("little-endian", real.to_le_bytes()), ("big-endian", real.to_be_bytes())]
            {
                for (place, hay) in
                    [("the broker", &carried), ("the database", &dump_bytes), ("A's opened messages", &at_a)]
                {
                    assert!(!secure_sum::contains(hay, &bytes), "{what}: {real} ({encoding}) in {place}");
                }
            }
            let text = format!("{real}");
            let digits = &text[..text.len().min(12)];
            assert!(!a_log.contains(digits), "{what}: {real} in the aggregator's container log");
            assert!(!logged.contains(digits), "{what}: {real} in the server's or a node's log");
            assert!(!dump_text.contains(digits), "{what}: {real} as text in the database");
            searched += 1;
        }
    }
    assert!(searched > 30, "only {searched} values searched");
    fed.cleanup().await;
}

/// A data owner's `policy.min_cell_count` reaches the analysis at its node: with 1,000, the
/// second registry (1,200 patients) refuses a crosstab whose cells are smaller, saying why,
/// and the aggregator says that one registry could not take part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_refuses_cells_below_its_own_minimum() {
    let (dir, cases) = generate(&[400, 1200, 250]);
    let fed = federation(dir.path(), 3, |i| if i == 1 { 1000 } else { 3 }).await;
    let (_, opened) = try_case(&fed, "crosstab", &cases["crosstab"]).await;
    let error_of = |i: usize| -> Value {
        let result = opened.iter().find(|r| r.organization == fed.orgs[i].org()).unwrap();
        assert_eq!(result.status, JobStatus::Failed, "{result:?}");
        serde_json::from_slice::<Value>(&result.output).unwrap()["error"].clone()
    };
    let refused = error_of(1);
    assert_eq!(refused["code"], "small_cell", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("fewer than 1000 rows"), "{refused}");
    assert_eq!(error_of(0)["code"], "not_everyone");
    fed.cleanup().await;
}
