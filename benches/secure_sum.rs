//! Secure Sum wall time for 3, 5 and 10 registries, nodes as in-process workers on this one
//! host (each with its own Docker network), real server, RabbitMQ, PostgreSQL and Docker: from
//! the researcher's task creation to every result opened. Also how long Docker took to create
//! and start each container (timed by the nodes), to see where the time goes.
//! `scripts/bench` runs it and writes the table.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fedq::client::{Inputs, TaskSpec};
use support::federation::Federation;

const SIZES: [usize; 3] = [3, 5, 10];
const ROUNDS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut rows = Vec::new();
    runtime.block_on(async {
        for n in SIZES {
            let fed = Federation::new(n, &["fedq/secure-sum"], |i, dir| {
                let path = dir.join("patients.csv");
                std::fs::write(&path, format!("id\n{}", "p\n".repeat(1000 + i))).unwrap();
                BTreeMap::from([("patients".to_owned(), path)])
            })
            .await;
            let spec = TaskSpec {
                collaboration: fed.collaboration,
                image: "fedq/secure-sum:0.1.0".into(),
                organizations: fed.orgs.iter().map(|o| o.org()).collect(),
                inputs: Inputs::Same(br#"{"data": "patients"}"#.to_vec()),
                name: "bench".into(),
                return_log: false,
            };
            let mut walls = Vec::new();
            for round in 0..=ROUNDS {
                let start = Instant::now();
                let created = fed.researcher.create_task(&fed.orgs[0], &spec).await.unwrap();
                let results =
                    fed.researcher.wait_and_open(&fed.orgs[0], fed.collaboration, created.task, Duration::from_secs(120)).await.unwrap();
                assert!(results.iter().all(|r| r.status == fedq::protocol::JobStatus::Completed), "{results:?}");
                // Round 0 warms caches (image layers, key caches, prepared statements).
                if round > 0 {
                    walls.push(start.elapsed());
                }
            }
            let starts: Vec<Duration> =
                fed.nodes.iter().flat_map(|node| node.timings()).map(|t| t.docker_start).collect();
            let wall = median(walls);
            let start = median(starts);
            println!("{n} registries: {:.0} ms (container start {:.0} ms)", wall.as_secs_f64() * 1e3, start.as_secs_f64() * 1e3);
            rows.push(serde_json::json!({"registries": n, "wall_ms": wall.as_secs_f64() * 1e3, "container_start_ms": start.as_secs_f64() * 1e3}));
            fed.cleanup().await;
        }
    });
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-secure-sum.json");
    std::fs::write(path, serde_json::Value::Array(rows).to_string()).unwrap();
}
