//! The vertically partitioned analysis end to end: A holds ages, B diagnoses and BMI for the
//! same pseudonymous patients, C deals randomness; the researcher's sum of the shares equals
//! the statistic computed on the joined data in the clear, and no share alone reveals it. The
//! same for the Python implementation (`fedq_algorithm.vertical` in `fedq/python-vertical`),
//! which also gives in the mock federation what it gives through real nodes.

use crate::support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use fedq::client::{Inputs, TaskSpec};
use fedq::protocol::JobStatus;
use serde_json::{Value, json};
use support::federation::Federation;

type Patient = (String, i64, &'static str, u64);

/// 600 patients: id, age, diagnosis, BMI.
fn patients() -> Vec<Patient> {
    (0..600u64)
        .map(|i| {
            (
                format!("pt-{:05}", (i * 7919) % 100_000),
                20 + (i * 37 % 75) as i64,
                if i % 4 == 0 { "E11" } else { "I10" },
                18 + i * 13 % 25,
            )
        })
        .collect()
}

/// The count and BMI sum of patients over 65 with E11, on the joined data in the clear.
fn in_the_clear(patients: &[Patient]) -> (u64, u64) {
    let chosen = patients.iter().filter(|p| p.1 > 65 && p.2 == "E11");
    let count = chosen.clone().count() as u64;
    assert!(count > 10, "the data has matches: {count}");
    (count, chosen.map(|p| p.3).sum())
}

/// Organization `i`'s data source, written to `path`: A's ages, B's diagnoses and BMI (listed in
/// another order than A's), nothing for C. Its label.
fn write_columns(i: usize, patients: &[Patient], path: &Path) -> Option<&'static str> {
    let mut csv = String::new();
    match i {
        0 => {
            csv.push_str("id,age\n");
            for p in patients {
                let _ = writeln!(csv, "{},{}", p.0, p.1);
            }
        }
        1 => {
            csv.push_str("id,diagnosis,bmi\n");
            for p in patients.iter().rev() {
                let _ = writeln!(csv, "{},{},{}", p.0, p.2, p.3);
            }
        }
        _ => return None,
    }
    std::fs::write(path, csv).unwrap();
    Some(if i == 0 { "ages" } else { "diagnoses" })
}

fn input() -> Value {
    json!({
        "a": {"data": "ages", "column": "age", "greater_than": 65},
        "b": {"data": "diagnoses", "column": "diagnosis", "equals": "E11", "value": "bmi"},
    })
}

/// The analysis through real nodes with `image`: A's, B's and C's outputs.
async fn through_real_nodes(image: &str, patients: &[Patient]) -> [Value; 3] {
    let rows = patients.to_vec();
    let name = image.split(':').next().unwrap();
    let fed = Federation::new(3, &[name], move |i, dir| {
        let path = dir.join("columns.csv");
        write_columns(i, &rows, &path).map(|label| (label.to_owned(), path)).into_iter().collect()
    })
    .await;
    let spec = TaskSpec {
        collaboration: fed.collaboration,
        image: image.into(),
        organizations: fed.orgs.iter().map(|o| o.org()).collect(),
        inputs: Inputs::Same(input().to_string().into_bytes()),
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
    let outputs = [output(0), output(1), output(2)];
    fed.cleanup().await;
    outputs
}

/// The count and sum the researcher adds up from A's and B's shares, checked against the clear.
fn check_shares(outputs: &[Value; 3], patients: &[Patient]) {
    let (expected_count, expected_sum) = in_the_clear(patients);
    let [a, b, c] = outputs;
    let share = |v: &Value, k: &str| v[k].as_u64().unwrap();
    let count = share(a, "count_share").wrapping_add(share(b, "count_share"));
    let sum = share(a, "sum_share").wrapping_add(share(b, "sum_share"));
    assert_eq!(count, expected_count);
    assert_eq!(sum, expected_sum);
    assert_ne!(share(a, "count_share"), expected_count, "a share alone is not the answer");
    assert_eq!(c["dealt"], patients.len(), "the dealer learns the number of patients only");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_joint_count_and_mean_match_the_joined_data_in_the_clear() {
    let patients = patients();
    let outputs = through_real_nodes("fedq/vertical:0.1.0", &patients).await;
    check_shares(&outputs, &patients);
}

/// The Python implementation through real nodes, and in the mock federation of
/// `fedq_algorithm.mock` (no server, broker, keys or containers) on the same data: the same
/// count and mean, and the same dealer's output (the shares themselves are random).
#[tokio::test(flavor = "multi_thread")]
async fn the_python_vertical_analysis_matches_the_clear_and_the_mock() {
    let patients = patients();
    let outputs = through_real_nodes("fedq/python-vertical:0.1.0", &patients).await;
    check_shares(&outputs, &patients);

    let dir = tempfile::tempdir().unwrap();
    let mut folders = Vec::new();
    for i in 0..3 {
        let folder = dir.path().join(format!("org-{i}"));
        std::fs::create_dir(&folder).unwrap();
        // In the mock, a data source is the file named by its label in the organization's folder.
        if let Some(label) = write_columns(i, &patients, &folder.join("columns")) {
            std::fs::rename(folder.join("columns"), folder.join(label)).unwrap();
        }
        folders.push(folder.to_str().unwrap().to_owned());
    }
    let mocked = support::in_the_mock("vertical", &input(), &folders, 120);
    let mocked: [Value; 3] = mocked.try_into().unwrap();
    check_shares(&mocked, &patients);
    assert_eq!(mocked[2], outputs[2], "the dealer's output in the mock and at the real node");
}

const JOINED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/fedq-algorithm/tests/joined.py");

/// A value as the vertical analyses carry it: times 2^32, in 32 bytes little-endian.
fn fixed_word(value: f64) -> Vec<u8> {
    let scaled = (value * 4_294_967_296.0).round() as u128;
    let mut word = scaled.to_le_bytes().to_vec();
    word.resize(32, 0);
    word
}

/// The vertically partitioned analyses of `fedq/python-analysis` (`fedq_algorithm.
/// vertical_analysis`) through three real nodes: A holds age, sex and smoking, B BMI, diagnosis
/// and visits of the same 700 patients (`joined.py`), C deals and combines. Each analysis equals
/// pandas, scipy and statsmodels on the rows joined by id; A and B only say they contributed.
/// And no party's values reach the other: the run messages B's node opened from A (the masked
/// matrix) hold none of A's ages as the analysis encodes them, those A opened none of B's BMIs,
/// and C's hold neither (with the masks taken out, B's do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertical_analyses_through_real_nodes_equal_the_joined_rows_and_carry_no_values() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap().to_owned();
    let out = support::python().arg(JOINED).args(["generate", &folder, "700"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cases: BTreeMap<String, Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("cases.json")).unwrap()).unwrap();
    let data = dir.path().to_owned();
    let fed = Federation::configured(
        3,
        &["fedq/python-analysis"],
        move |i, _| match i {
            0 => BTreeMap::from([("ages".to_owned(), data.join("A").join("ages"))]),
            1 => BTreeMap::from([("diagnoses".to_owned(), data.join("B").join("diagnoses"))]),
            _ => BTreeMap::new(),
        },
        |_, config| config.limits.memory_mib = 512,
    )
    .await;
    let (_tap_connection, tap) = crate::secure_sum::tap(&fed).await;
    let organizations: Vec<_> = fed.orgs.iter().map(|o| o.org()).collect();
    let mut results = serde_json::Map::new();
    for (name, case) in &cases {
        let input = case.to_string();
        let image = "fedq/python-analysis:0.1.0";
        let (_, opened) = fed
            .run_task(image, input.as_bytes(), &format!("vertical {name}"), Duration::from_secs(300))
            .await;
        let output = |i: usize| -> Value {
            let r = opened.iter().find(|r| r.organization == organizations[i]).unwrap();
            assert_eq!(r.status, JobStatus::Completed, "{name}: {}", String::from_utf8_lossy(&r.output));
            serde_json::from_slice(&r.output).unwrap()
        };
        for i in 0..2 {
            assert_eq!(output(i)["contributed"], true, "{name}");
        }
        results.insert(name.clone(), output(2));
    }
    std::fs::write(dir.path().join("results.json"), Value::Object(results).to_string()).unwrap();
    let checked = support::python().arg(JOINED).args(["check", &folder]).output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{said}{}", String::from_utf8_lossy(&checked.stderr));
    assert!(said.contains("all 4 vertical analyses equal the joined computation"), "{said}");

    // What each party's node opened, by recipient.
    let carried = crate::secure_sum::drain(&tap).await;
    let opened = crate::secure_sum::run_messages(&fed, &carried);
    let at = |i: usize, topic_end: &str| -> Vec<u8> {
        opened
            .iter()
            .filter(|(header, message)| {
                header.recipient == organizations[i] && message.topic.ends_with(topic_end)
            })
            .flat_map(|(_, message)| message.body.to_vec())
            .collect()
    };
    let (at_a, at_b, at_c) = (at(0, "/masked"), at(1, "/masked"), at(2, ""));
    assert!(at_a.len() > 700 * 32 && at_b.len() > 700 * 32, "the masked matrices went by");
    let column = |side: &str, file: &str, name: &str| -> Vec<f64> {
        let text = std::fs::read_to_string(dir.path().join(side).join(file)).unwrap();
        let mut lines = text.lines();
        let at = lines.next().unwrap().split(',').position(|c| c == name).unwrap();
        let mut values: Vec<f64> = lines.filter_map(|l| l.split(',').nth(at)?.parse().ok()).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        values
    };
    let (ages, bmis) = (column("A", "ages", "age"), column("B", "diagnoses", "bmi"));
    assert!(ages.len() > 50 && bmis.len() > 100, "{} ages, {} BMIs", ages.len(), bmis.len());
    for age in &ages {
        let word = fixed_word(*age);
        assert!(!crate::secure_sum::contains(&at_b, &word), "A's age {age} in what B's node opened");
        assert!(!crate::secure_sum::contains(&at_c, &word), "A's age {age} in what C's node opened");
    }
    for bmi in &bmis {
        let word = fixed_word(*bmi);
        assert!(!crate::secure_sum::contains(&at_a, &word), "B's BMI {bmi} in what A's node opened");
        assert!(!crate::secure_sum::contains(&at_c, &word), "B's BMI {bmi} in what C's node opened");
    }
    fed.cleanup().await;
}
