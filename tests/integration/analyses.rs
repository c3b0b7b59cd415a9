//! The analyses (`fedq/python-analysis`, `fedq_algorithm.analysis`) through real nodes, broker,
//! server and containers, three and five registries of different sizes with missing values:
//! every analysis's output equals the same computation on the pooled rows with pandas, scipy,
//! statsmodels and lifelines (`python/fedq-algorithm/tests/pooled.py` generates the registries'
//! data and checks the outputs), and the containers of a GLM stay up for the whole fit.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::protocol::JobStatus;
use serde_json::Value;
use support::federation::Federation;

const IMAGE: &str = "fedq/python-analysis:0.1.0";
const POOLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/fedq-algorithm/tests/pooled.py");

async fn every_analysis_equals_the_pooled_rows(sizes: &[u32]) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap().to_owned();
    let sizes: Vec<String> = sizes.iter().map(u32::to_string).collect();
    let out = support::python().arg(POOLED).args(["generate", &folder]).args(&sizes).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cases: BTreeMap<String, Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("cases.json")).unwrap()).unwrap();

    let data = dir.path().to_owned();
    let data_of = move |i: usize, _: &std::path::Path| {
        BTreeMap::from([("patients".to_owned(), data.join(format!("registry-{i}")).join("patients"))])
    };
    // numpy, pandas and scipy need more than the test kit's 64 MiB; 512 is a node's default.
    let fed = Federation::configured(sizes.len(), &["fedq/python-analysis"], data_of, |_, config| {
        config.limits.memory_mib = 512;
    })
    .await;
    let organizations: Vec<_> = fed.orgs.iter().map(|o| o.org()).collect();
    let mut results = serde_json::Map::new();
    for (name, case) in &cases {
        let mut input = case.clone();
        input["data"] = "patients".into();
        let spec = TaskSpec {
            collaboration: fed.collaboration,
            image: IMAGE.into(),
            organizations: organizations.clone(),
            inputs: Inputs::Same(input.to_string().into_bytes()),
            name: format!("analysis {name}"),
            return_log: false,
        };
        let created = fed.researcher.create_task(&fed.orgs[0], &spec).await.unwrap();
        let opened = fed
            .researcher
            .wait_and_open(&fed.orgs[0], fed.collaboration, created.task, Duration::from_secs(300))
            .await
            .unwrap();
        for result in &opened {
            assert_eq!(result.status, JobStatus::Completed, "{name}: {result:?}");
        }
        let first = opened.iter().find(|r| r.organization == organizations[0]).unwrap();
        let output: Value = serde_json::from_slice(&first.output).unwrap();
        assert_eq!(output["organizations"], sizes.len(), "{name}: {output}");
        for other in opened.iter().filter(|r| r.organization != organizations[0]) {
            let said: Value = serde_json::from_slice(&other.output).unwrap();
            assert_eq!(said["contributed"], true, "{name}: {said}");
        }
        results.insert(name.clone(), output);
    }
    // One container per organization for a whole GLM fit of several iterations.
    assert!(results["logistic"]["iterations"].as_u64().unwrap() >= 4, "{}", results["logistic"]);
    std::fs::write(dir.path().join("results.json"), Value::Object(results).to_string()).unwrap();
    let checked = support::python().arg(POOLED).args(["check", &folder]).output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{said}{}", String::from_utf8_lossy(&checked.stderr));
    assert!(said.contains("all 7 analyses equal the pooled computation"), "{said}");
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
