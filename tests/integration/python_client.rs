//! The researcher's client in Python (`python/fedq`, the Rust client bound with PyO3) against a
//! real federation: server, RabbitMQ, PostgreSQL, three nodes running containers in Docker.
//!
//! The test sets the federation up and runs the pytest suite `python/fedq/tests/federation`
//! with `scripts/python`, handing it the server's address, the researcher's login, her
//! organization's key file, a wrong key file, an outsider organization's login and the
//! fingerprints compared out of band. The suite runs Secure Sum by names with DataFrames, analyses by name (a
//! summary, a crosstab, one refused for a missing column), the
//! command line on a task the Python client created, a kill, a wait that times out, a wrong key,
//! keys not yet trusted, and an outsider. Then the test swaps a registry's key in the database,
//! as a curious server operator could, and runs the suite's swapped-key test: the Python client
//! must refuse to seal to it and create nothing.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;

use fedq::keys::OrgKey;
use serde_json::json;
use support::federation::Federation;

use crate::secure_sum::write_patients;

const COUNTS: [u64; 3] = [1_234, 567, 89];

fn pytest(dir: &Path, env: &[(String, String)], select: &str) -> std::process::Output {
    support::python()
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", select])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/python/fedq/tests/federation"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // Session, trusted keys and task records of this test only.
        .env("XDG_CONFIG_HOME", dir)
        .env_remove("FEDQ_SESSION")
        .env_remove("FEDQ_TRUST_STORE")
        .current_dir(dir)
        .output()
        .expect("scripts/python runs")
}

fn passed(out: &std::process::Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Python client's suite failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_against_a_real_federation() {
    let patients = |i: usize, dir: &Path| {
        let path = dir.join("patients.csv");
        write_patients(&path, COUNTS[i]);
        BTreeMap::from([("patients".to_owned(), path)])
    };
    let images = ["fedq/secure-sum", "fedq/probe", "fedq/python-analysis"];
    // The analyses' numpy, pandas and scipy need more than the test kit's 64 MiB.
    let fed = Federation::configured(3, &images, patients, |_, config| config.limits.memory_mib = 512).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("registry-0.key");
    fed.orgs[0].current().write_new(&key).unwrap();
    let wrong_key = dir.path().join("wrong.key");
    OrgKey::generate().write_new(&wrong_key).unwrap();
    let outsider = fed.app.org("outsider").await;
    fed.app.user(outsider.org(), "olga", "researcher").await;
    let outsider_key = dir.path().join("outsider.key");
    outsider.current().write_new(&outsider_key).unwrap();
    let pins: BTreeMap<String, String> = fed
        .orgs
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("registry-{i}"), o.current().id().to_string()))
        .collect();
    let env: Vec<(String, String)> = [
        ("FEDQ_TEST_SERVER", format!("http://{}", fed.app.addr)),
        ("FEDQ_TEST_USER", "ada".into()),
        ("FEDQ_TEST_PASSWORD", "a-long-password-123".into()),
        ("FEDQ_TEST_KEY", key.display().to_string()),
        ("FEDQ_TEST_WRONG_KEY", wrong_key.display().to_string()),
        ("FEDQ_TEST_OUTSIDER_USER", "olga".into()),
        ("FEDQ_TEST_OUTSIDER_KEY", outsider_key.display().to_string()),
        ("FEDQ_TEST_PINS", json!(pins).to_string()),
        ("FEDQ_TEST_COUNTS", json!(COUNTS).to_string()),
        ("FEDQ_TEST_CLI", env!("CARGO_BIN_EXE_fedq").into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();

    let text = passed(&pytest(dir.path(), &env, "not swapped"));
    assert!(text.contains("9 passed"), "every test of the suite ran:\n{text}");

    // The operator swaps registry-2's key for one of its own.
    let swapped = OrgKey::generate();
    let victim = fed.orgs[2].org();
    fed.app.swap_key_in_database(victim, &swapped).await;
    let mut env = env;
    env.push(("FEDQ_TEST_SWAPPED_KEY".into(), swapped.id().to_string()));
    let text = passed(&pytest(dir.path(), &env, "swapped"));
    assert!(text.contains("1 passed"), "the swapped-key test ran:\n{text}");
    fed.cleanup().await;
}
