//! The vertically partitioned analysis end to end: A holds ages, B diagnoses and BMI for the
//! same pseudonymous patients, C deals randomness; the researcher's sum of the shares equals
//! the statistic computed on the joined data in the clear, and no share alone reveals it.

use crate::support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::protocol::JobStatus;
use serde_json::{Value, json};
use support::federation::Federation;

#[tokio::test(flavor = "multi_thread")]
async fn the_joint_count_and_mean_match_the_joined_data_in_the_clear() {
    // 600 patients; B lists them in another order than A.
    let patients: Vec<(String, i64, &str, u64)> = (0..600u64)
        .map(|i| {
            (
                format!("pt-{:05}", (i * 7919) % 100_000),
                20 + (i * 37 % 75) as i64,
                if i % 4 == 0 { "E11" } else { "I10" },
                18 + i * 13 % 25,
            )
        })
        .collect();
    let expected_count = patients.iter().filter(|p| p.1 > 65 && p.2 == "E11").count() as u64;
    let expected_sum: u64 = patients.iter().filter(|p| p.1 > 65 && p.2 == "E11").map(|p| p.3).sum();
    assert!(expected_count > 10, "the data has matches: {expected_count}");

    let rows = patients.clone();
    let fed = Federation::new(3, &["fedq/vertical"], move |i, dir| {
        let mut csv = String::new();
        match i {
            0 => {
                csv.push_str("id,age\n");
                for p in &rows {
                    let _ = writeln!(csv, "{},{}", p.0, p.1);
                }
            }
            1 => {
                csv.push_str("id,diagnosis,bmi\n");
                for p in rows.iter().rev() {
                    let _ = writeln!(csv, "{},{},{}", p.0, p.2, p.3);
                }
            }
            _ => return BTreeMap::new(),
        }
        let path = dir.join("columns.csv");
        std::fs::write(&path, csv).unwrap();
        BTreeMap::from([(if i == 0 { "ages" } else { "diagnoses" }.to_owned(), path)])
    })
    .await;

    let input = json!({
        "a": {"data": "ages", "column": "age", "greater_than": 65},
        "b": {"data": "diagnoses", "column": "diagnosis", "equals": "E11", "value": "bmi"},
    });
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: "fedq/vertical:0.1.0".into(),
        organizations: fed.orgs.iter().map(|o| o.org()).collect(),
        inputs: Inputs::Same(input.to_string().into_bytes()),
        name: "vertical".into(),
        return_log: true,
    };
    let created = fed.researcher.create_task(&fed.orgs[0], &spec).await.unwrap();
    let results = fed
        .researcher
        .wait_and_open(&fed.orgs[0], fed.collaboration, created.task, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    let output = |org: usize| -> Value {
        let r = results.iter().find(|r| r.organization == fed.orgs[org].org()).unwrap();
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        serde_json::from_slice(&r.output).unwrap()
    };
    let (a, b, c) = (output(0), output(1), output(2));
    let share = |v: &Value, k: &str| v[k].as_u64().unwrap();
    let count = share(&a, "count_share").wrapping_add(share(&b, "count_share"));
    let sum = share(&a, "sum_share").wrapping_add(share(&b, "sum_share"));
    assert_eq!(count, expected_count);
    assert_eq!(sum, expected_sum);
    assert_ne!(share(&a, "count_share"), expected_count, "a share alone is not the answer");
    assert_eq!(c["dealt"], 600, "the dealer learns the number of patients only");
    fed.cleanup().await;
}
