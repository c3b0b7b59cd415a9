//! Any language works: an algorithm written in shell (busybox, no SDK), talking HTTP to the
//! node-local endpoint, runs like the Rust ones.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::protocol::JobStatus;
use serde_json::Value;
use support::federation::Federation;

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_algorithm_reads_its_input_and_data_and_posts_a_result() {
    let fed = Federation::new(2, &["fedq/row-count"], |i, dir| {
        let path = dir.join("patients.csv");
        std::fs::write(&path, format!("id\n{}", "p\n".repeat(5 + 2 * i))).unwrap();
        BTreeMap::from([("patients".to_owned(), path)])
    })
    .await;
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: "fedq/row-count:0.1.0".into(),
        organizations: fed.orgs.iter().map(|o| o.org()).collect(),
        inputs: Inputs::Same(b"patients".to_vec()),
        name: "rows".into(),
        return_log: true,
    };
    let created = fed.researcher.create_task(&fed.orgs[0], &spec).await.unwrap();
    let results = fed
        .researcher
        .wait_and_open(&fed.orgs[0], fed.collaboration, created.task, Duration::from_secs(60))
        .await
        .unwrap();
    for (i, org) in fed.orgs.iter().enumerate() {
        let r = results.iter().find(|r| r.organization == org.org()).unwrap();
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        let out: Value = serde_json::from_slice(&r.output).unwrap();
        assert_eq!(out["rows"], 5 + 2 * i as u64);
        assert!(r.log.contains("row-count: patients has"), "{}", r.log);
    }
    fed.cleanup().await;
}
