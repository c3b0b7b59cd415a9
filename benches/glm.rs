//! A logistic regression over 3 registries × 100,000 rows × 6 features, through real nodes,
//! server, RabbitMQ, PostgreSQL and Docker, from the researcher's task creation to the opened
//! result, three ways measured in one run:
//! - `glm`: one task, its three containers up for the whole fit, each IRLS iteration a round of
//!   secure aggregation and a run message from the aggregator;
//! - `glm_step`: the same IRLS driven from outside, one task (three containers) per iteration;
//! - statsmodels fitting the pooled rows in one process (the floor: no federation at all).
//!
//! The coefficients of the first two are checked against statsmodels'. `scripts/bench` runs it
//! and writes the table.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use fedq::protocol::JobStatus;
use serde_json::{Value, json};
use support::federation::Federation;

const REGISTRIES: usize = 3;
const ROWS: usize = 100_000;
const FEATURES: usize = 6;
const IMAGE: &str = "fedq/python-analysis:0.1.0";
/// As `glm`'s own criterion (`docs/algorithms.md`): no coefficient moved by more than this,
/// relative to the largest.
const TOL: f64 = 1e-10;
const MEASURED: usize = 3;

/// Registry `r`'s rows, deterministic: six features on different scales, and an outcome drawn
/// from the logistic model.
fn write_registry(r: usize, path: &Path) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (r as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut uniform = move || {
        // xorshift64*: plenty for synthetic data.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let truth = [-0.4, 0.8, -0.5, 0.3, 0.02, -0.6, 0.25];
    let mut csv = String::from("y,x1,x2,x3,x4,x5,x6\n");
    for _ in 0..ROWS {
        let x = [
            uniform() * 2.0 - 1.0,
            (uniform() + uniform() + uniform()) - 1.5,
            if uniform() < 0.4 { 1.0 } else { 0.0 },
            uniform() * 40.0 + 20.0,
            (uniform() * 3.0).floor(),
            uniform() * uniform() * 5.0,
        ];
        let eta = truth[0] + x.iter().zip(&truth[1..]).map(|(a, b)| a * b).sum::<f64>() - 0.02 * 40.0;
        let y = u8::from(uniform() < 1.0 / (1.0 + (-eta).exp()));
        let _ = write!(csv, "{y}");
        for v in x {
            let _ = write!(csv, ",{v}");
        }
        csv.push('\n');
    }
    std::fs::write(path, csv).unwrap();
}

fn covariates() -> Vec<String> {
    (1..=FEATURES).map(|j| format!("x{j}")).collect()
}

/// Runs one analysis task; the aggregator's (the first organization's) output.
async fn run(fed: &Federation, input: &Value) -> Value {
    let (_, opened) =
        fed.run_task(IMAGE, input.to_string().as_bytes(), "bench glm", Duration::from_secs(600)).await;
    for result in &opened {
        assert_eq!(result.status, JobStatus::Completed, "{}", String::from_utf8_lossy(&result.output));
    }
    let first = opened.iter().find(|r| r.organization == fed.orgs[0].org()).unwrap();
    serde_json::from_slice(&first.output).unwrap()
}

fn containers(fed: &Federation) -> usize {
    fed.nodes.iter().map(|node| node.timings().len()).sum()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn max_relative(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1e-300)).fold(0.0, f64::max)
}

const STATSMODELS: &str = r#"
import json, sys, time
t0 = time.perf_counter()
import pandas as pd, statsmodels.api as sm
t1 = time.perf_counter()
rows = pd.concat([pd.read_csv(p) for p in sys.argv[1:]], ignore_index=True)
t2 = time.perf_counter()
x = sm.add_constant(rows[[f"x{j}" for j in range(1, 7)]])
fit = sm.GLM(rows["y"], x, family=sm.families.Binomial()).fit(tol=1e-12)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "fit_s": t3 - t2, "iterations": int(fit.fit_history["iteration"]),
                  "coef": list(map(float, fit.params)), "se": list(map(float, fit.bse))}))
"#;

fn main() {
    let data = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for r in 0..REGISTRIES {
        let dir = data.path().join(format!("registry-{r}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("patients.csv");
        write_registry(r, &path);
        paths.push(path);
    }
    let floor = support::python().arg("-c").arg(STATSMODELS).args(&paths).output().unwrap();
    assert!(floor.status.success(), "{}", String::from_utf8_lossy(&floor.stderr));
    let floor: Value = serde_json::from_slice(&floor.stdout).unwrap();
    let want: Vec<f64> = serde_json::from_value(floor["coef"].clone()).unwrap();
    println!("statsmodels on the pooled rows: fit {:.3} s, read {:.3} s", floor["fit_s"], floor["read_s"]);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let row = runtime.block_on(async {
        let by_registry = paths.clone();
        let fed = Federation::configured(
            REGISTRIES,
            &["fedq/python-analysis"],
            move |i, _| BTreeMap::from([("patients".to_owned(), by_registry[i].clone())]),
            |_, config| config.limits.memory_mib = 512,
        )
        .await;
        let base =
            json!({"data": "patients", "family": "logistic", "outcome": "y", "covariates": covariates()});
        let mut glm = base.clone();
        glm["analysis"] = "glm".into();
        glm["tol"] = TOL.into();

        // Round 0 warms caches (image layers, page cache of the data, key caches).
        run(&fed, &glm).await;
        let mut walls = Vec::new();
        let before = containers(&fed);
        let mut out = Value::Null;
        for _ in 0..MEASURED {
            let start = Instant::now();
            out = run(&fed, &glm).await;
            walls.push(start.elapsed());
        }
        let glm_containers = (containers(&fed) - before) / MEASURED;
        let glm_wall = median(walls);
        let coef: Vec<f64> =
            out["coefficients"].as_array().unwrap().iter().map(|c| c["coef"].as_f64().unwrap()).collect();
        let glm_error = max_relative(&coef, &want);
        assert!(glm_error < 1e-8, "glm {coef:?} against statsmodels {want:?}");
        let iterations = out["iterations"].as_u64().unwrap();
        println!(
            "glm, one task: {:.2} s, {iterations} iterations, {glm_containers} containers",
            glm_wall.as_secs_f64()
        );

        let mut step = base.clone();
        step["analysis"] = "glm_step".into();
        let before = containers(&fed);
        let start = Instant::now();
        let mut beta = vec![0.0; FEATURES + 1];
        let mut steps = 0;
        loop {
            step["beta"] = json!(beta);
            let out = run(&fed, &step).await;
            let new: Vec<f64> = serde_json::from_value(out["beta"].clone()).unwrap();
            steps += 1;
            let moved = new.iter().zip(&beta).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            let largest = new.iter().map(|v| v.abs()).fold(0.0, f64::max);
            beta = new;
            if moved <= TOL * (1.0 + largest) {
                break;
            }
            assert!(steps < 100, "no convergence");
        }
        let step_wall = start.elapsed();
        let step_containers = containers(&fed) - before;
        let step_error = max_relative(&beta, &want);
        assert!(step_error < 1e-8, "glm_step {beta:?} against statsmodels {want:?}");
        println!(
            "glm_step, a task per iteration: {:.2} s, {steps} tasks, {step_containers} containers",
            step_wall.as_secs_f64()
        );
        fed.cleanup().await;
        json!({
            "registries": REGISTRIES, "rows": ROWS, "features": FEATURES,
            "glm_s": glm_wall.as_secs_f64(), "glm_iterations": iterations, "glm_containers": glm_containers,
            "glm_error": glm_error,
            "step_s": step_wall.as_secs_f64(), "step_tasks": steps, "step_containers": step_containers,
            "step_error": step_error,
            "statsmodels_fit_s": floor["fit_s"], "statsmodels_read_s": floor["read_s"],
            "statsmodels_iterations": floor["iterations"],
        })
    });
    println!(
        "a task per iteration ÷ one task: {:.1}×; one task ÷ statsmodels' fit: {:.1}×",
        row["step_s"].as_f64().unwrap() / row["glm_s"].as_f64().unwrap(),
        row["glm_s"].as_f64().unwrap() / row["statsmodels_fit_s"].as_f64().unwrap()
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-glm.json");
    std::fs::write(path, row.to_string()).unwrap();
}
