//! Load: a federation of 20 organizations on this machine, with `fedq server` and every
//! `fedq node` as separate processes against the real PostgreSQL, RabbitMQ and Docker, and a
//! researcher submitting tasks through the client the command line uses.
//!
//! Each task has one job, at the organizations in turn, running the probe image with no step
//! (it starts, posts an empty result and exits): what is measured is fedq's path around a
//! container, with the container's own start included. `LOAD_IN_FLIGHT` tasks are kept in flight
//! (closed loop): each submitter seals and creates a task, long-polls its results and opens
//! them, then starts the next. Latency is submit → result opened; throughput is tasks per
//! second over the whole run; peak memory is each process's high-water resident set (VmHWM),
//! containers excluded. `LOAD_TASKS` sets the number of tasks (10,000 for the full run; a
//! smaller default keeps `scripts/bench` under its time budget). `scripts/bench` writes the table.

#![allow(missing_docs)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fedq::client::{Client, Inputs, TaskSpec};
use fedq::keys::Identity;
use fedq::protocol::JobStatus;
use secrecy::SecretString;
use support::node::{Fed, NodeGuard, ensure_images, register_node};
use support::*;

const ORGS: usize = 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The process's peak resident set, KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tasks = env_usize("LOAD_TASKS", 500);
    let in_flight = env_usize("LOAD_IN_FLIGHT", 40);
    ensure_images();
    let (config, db_name, vhost) = prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_server_process(&config, port, &dir.path().join("server.log"), "warn");
    let app = attach(config, db_name, vhost, format!("127.0.0.1:{port}").parse().unwrap()).await;

    let mut orgs: Vec<Identity> = Vec::with_capacity(ORGS);
    for i in 0..ORGS {
        orgs.push(app.org(&format!("registry-{i:02}")).await);
    }
    let ids: Vec<_> = orgs.iter().map(Identity::org).collect();
    let collaboration = app.collaboration("registries", &ids).await;
    let token = app.user(ids[0], "ada", "researcher").await;
    let researcher =
        Client::with_token(&format!("http://{}", app.addr), &Default::default(), SecretString::from(token))
            .unwrap();

    let mut nodes: Vec<(Child, NodeGuard)> = Vec::with_capacity(ORGS);
    let mut dirs = Vec::with_capacity(ORGS);
    for org in &orgs {
        let node_dir = tempfile::tempdir().unwrap();
        let limits = fedq::node::config::Limits { concurrent_jobs: 4, ..Fed::limits() };
        let (config, config_path, _) =
            register_node(&app, org, node_dir.path(), limits, &["fedq/probe"]).await;
        let child = Command::new(env!("CARGO_BIN_EXE_fedq"))
            .args(["node", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(node_dir.path().join("node.log")).unwrap())
            .spawn()
            .expect("fedq node starts");
        nodes.push((child, NodeGuard { name: config.node.name.clone(), process: None }));
        dirs.push(node_dir);
    }
    eventually(120, "every node online", || async {
        let (_, body) = app.call("GET", "/nodes", Some(&app.root_token), None).await;
        let online = body.as_array()?.iter().filter(|n| n["online"] == true).count();
        (online == ORGS).then_some(())
    })
    .await;

    // Warm-up: one task per organization, not measured.
    for org in &ids {
        let spec = TaskSpec {
            collaboration,
            image: "fedq/probe:0.1.0".into(),
            organizations: vec![*org],
            inputs: Inputs::Same(b"[]".to_vec()),
            name: "warm-up".into(),
            return_log: false,
        };
        let created = researcher.create_task(&orgs[0], &spec).await.unwrap();
        researcher
            .wait_and_open(&orgs[0], collaboration, created.task, Duration::from_secs(120))
            .await
            .unwrap();
    }

    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let orgs = Arc::new(orgs);
    let ids = Arc::new(ids);
    let started = Instant::now();
    let mut workers = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let (next, errors, orgs, ids, researcher) =
            (next.clone(), errors.clone(), orgs.clone(), ids.clone(), researcher.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tasks {
                    return latencies;
                }
                let spec = TaskSpec {
                    collaboration,
                    image: "fedq/probe:0.1.0".into(),
                    organizations: vec![ids[i % ORGS]],
                    inputs: Inputs::Same(b"[]".to_vec()),
                    name: format!("load-{i}"),
                    return_log: false,
                };
                let t0 = Instant::now();
                let outcome = async {
                    let created = researcher.create_task(&orgs[0], &spec).await.ok()?;
                    researcher
                        .wait_and_open(&orgs[0], collaboration, created.task, Duration::from_secs(300))
                        .await
                        .ok()
                }
                .await;
                match outcome {
                    Some(results) if results.iter().all(|r| r.status == JobStatus::Completed) => {
                        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(tasks);
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let wall = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    let server_rss = peak_rss_kib(server.id());
    let node_rss: Vec<u64> = nodes.iter().map(|(c, _)| peak_rss_kib(c.id())).collect();
    let max_node = *node_rss.iter().max().unwrap();
    let errors = errors.load(Ordering::Relaxed);
    let mut sorted_nodes = node_rss.clone();
    sorted_nodes.sort();
    let node_median = sorted_nodes[sorted_nodes.len() / 2] as f64 / 1024.0;
    let out = serde_json::json!({
        "orgs": ORGS, "tasks": tasks, "in_flight": in_flight, "errors": errors,
        "wall_s": wall.as_secs_f64(), "per_sec": latencies.len() as f64 / wall.as_secs_f64(),
        "p50_ms": percentile(&latencies, 0.5), "p95_ms": percentile(&latencies, 0.95),
        "p99_ms": percentile(&latencies, 0.99), "max_ms": latencies.last().copied().unwrap_or(0.0),
        "server_rss_mib": server_rss as f64 / 1024.0, "node_rss_max_mib": max_node as f64 / 1024.0,
        "node_rss_median_mib": node_median,
    });
    println!("{out:#}");
    // The full run (10,000 tasks) keeps its own file, so that `scripts/bench`'s shorter run
    // does not replace it.
    let name = if tasks >= 10_000 { "bench-load-full.json" } else { "bench-load.json" };
    std::fs::write(format!("{}/target/{name}", env!("CARGO_MANIFEST_DIR")), out.to_string()).unwrap();

    for (mut child, guard) in nodes {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
        drop(guard);
    }
    let _ = server.kill();
    let _ = server.wait();
    drop(dirs);
    app.cleanup().await;
}
