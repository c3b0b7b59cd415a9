//! Node overhead: for jobs of the probe image that exit at once, the time from the `job_start`
//! reaching the node to the container running, and from the container's exit to the broker's
//! confirm of the result, beside a bare `docker run --rm` of the same image, in one run. The
//! node's overhead is both spans minus Docker's own create and start (timed inside the node).
//!
//! Real server, RabbitMQ, PostgreSQL and Docker. `scripts/bench` runs it and writes the table.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::node::{Fed, PROBE};

const JOBS: usize = 30;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn p90(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[(values.len() * 9 / 10).min(values.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut fed = Fed::new(Fed::limits()).await;
        fed.start_node().await;
        // Warm-up: the first container start pays for image layers and caches.
        fed.probe(json!([])).await;

        for _ in 0..JOBS {
            let (result, _) = fed.probe(json!([])).await;
            assert_eq!(result.status, fedq::protocol::JobStatus::Completed);
        }
        let timings: Vec<_> = fed.node.as_ref().unwrap().timings().into_iter().skip(1).collect();
        assert_eq!(timings.len(), JOBS);

        // Baseline: the same image, started and removed by the Docker CLI, exiting at once
        // (without a node to talk to it exits with code 2).
        let mut bare = Vec::with_capacity(JOBS);
        for _ in 0..JOBS {
            let start = Instant::now();
            let status = Command::new("docker")
                .args(["run", "--rm", "--network", "none", PROBE])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert_eq!(status.code(), Some(2));
            bare.push(start.elapsed());
        }

        let to_running = median(timings.iter().map(|t| t.to_running).collect());
        let exit_to_confirm = median(timings.iter().map(|t| t.exit_to_confirm).collect());
        let docker_start = median(timings.iter().map(|t| t.docker_start).collect());
        let overhead: Vec<Duration> = timings.iter().map(|t| t.overhead()).collect();
        let bare_median = median(bare.clone());
        let out = json!({
            "jobs": JOBS,
            "to_running_ms": ms(to_running),
            "to_running_p90_ms": ms(p90(timings.iter().map(|t| t.to_running).collect())),
            "exit_to_confirm_ms": ms(exit_to_confirm),
            "exit_to_confirm_p90_ms": ms(p90(timings.iter().map(|t| t.exit_to_confirm).collect())),
            "docker_start_ms": ms(docker_start),
            "overhead_ms": ms(median(overhead.clone())),
            "overhead_p90_ms": ms(p90(overhead)),
            "bare_docker_run_ms": ms(bare_median),
            "bare_docker_run_p90_ms": ms(p90(bare)),
        });
        println!("{out:#}");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-node.json");
        std::fs::write(path, out.to_string()).unwrap();
        fed.cleanup().await;
    });
}
