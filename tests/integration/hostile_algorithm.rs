//! Hostile algorithms against a real node and real Docker: a fork bomb, a memory hog, 1 GiB
//! written to standard output, a result far over the limit, and a job that never exits, all at
//! once on one node. Each is contained by its limit and reported with a clear status, and a
//! well-behaved job submitted while they run completes normally.

use crate::support;

use std::process::Command;

use fedq::node::config::Limits;
use fedq::protocol::JobStatus;
use serde_json::json;
use support::eventually;
use support::node::Fed;

const PIDS: i64 = 32;
const TIMEOUT_SECS: u64 = 40;

/// The number of processes in a container, as Docker counts them.
fn pids(container: &str) -> Option<i64> {
    let out = Command::new("docker")
        .args(["stats", "--no-stream", "--format", "{{.PIDs}}", container])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_algorithms_are_contained_and_the_node_keeps_serving() {
    let limits = Limits {
        memory_mib: 64,
        pids: PIDS,
        concurrent_jobs: 6,
        timeout_secs: TIMEOUT_SECS,
        ..Fed::limits()
    };
    let mut fed = Fed::new(limits).await;
    fed.start_node().await;

    let bomb = fed.submit(json!([{"op": "fork_bomb"}])).await;
    let hog = fed.submit(json!([{"op": "alloc", "mib": 512}])).await;
    let flood = fed.submit(json!([{"op": "flood", "mib": 1024}])).await;
    let big = fed.submit(json!([{"op": "big_result", "mib": 32}])).await;
    let forever = fed.submit(json!([{"op": "sleep", "ms": 3_600_000}])).await;

    // The fork bomb reaches its pids limit and stays there.
    let container = fed.wait_running(bomb.job).await;
    let reached = eventually(30, "the fork bomb to reach its pids limit", || async {
        pids(&container).filter(|n| *n >= PIDS - 2)
    })
    .await;
    assert!(reached <= PIDS, "{reached} processes in a container limited to {PIDS}");

    // Meanwhile a well-behaved job runs and completes.
    let (ok, found) = fed.probe(json!([{"op": "print", "text": "still serving"}])).await;
    assert_eq!(ok.status, JobStatus::Completed, "{:?}", ok.reason);
    assert_eq!(found, [json!("ok")]);
    assert!(fed.container_of(bomb.job).is_some(), "the good job finished while the fork bomb still ran");
    assert!(pids(&container).is_none_or(|n| n <= PIDS), "still within the limit");

    let hog = fed.result(hog.task).await;
    assert_eq!(hog.status, JobStatus::Failed);
    assert_eq!(hog.reason.as_deref(), Some("killed at the memory limit of 64 MiB"));

    let flood_result = fed.result(flood.task).await;
    assert_eq!(flood_result.status, JobStatus::Completed, "{:?}", flood_result.reason);
    let said: Vec<serde_json::Value> = serde_json::from_slice(&flood_result.output).unwrap();
    assert_eq!(said, [json!("wrote 1024 MiB")]);
    let kept = std::fs::metadata(
        fed.config.node.state_dir.join("jobs").join(flood.job.to_string()).join("container.log"),
    )
    .expect("the node keeps the log's end")
    .len();
    assert!(kept <= 1024 * 1024, "the node keeps at most 1 MiB of output, kept {kept}");
    assert!(kept > 0);

    let big = fed.result(big.task).await;
    assert_eq!(big.status, JobStatus::Completed, "{:?}", big.reason);
    let said: Vec<serde_json::Value> = serde_json::from_slice(&big.output).unwrap();
    let said = said[0].as_str().unwrap();
    assert_eq!(
        said,
        format!(
            "error: a result of {} bytes exceeds this node's limit of {} bytes",
            32 << 20,
            Fed::limits().max_result_bytes
        ),
        "the oversized result was refused with the reason"
    );

    let bomb = fed.result(bomb.task).await;
    assert_eq!(bomb.status, JobStatus::Failed);
    assert_eq!(bomb.reason, Some(format!("stopped at the wall-clock limit of {TIMEOUT_SECS} s")));
    let forever = fed.result(forever.task).await;
    assert_eq!(forever.status, JobStatus::Failed);
    assert_eq!(forever.reason, Some(format!("stopped at the wall-clock limit of {TIMEOUT_SECS} s")));

    // Nothing is left running.
    let left = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=org.fedq.node={}", fed.config.node.name)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "every container was removed");
    fed.cleanup().await;
}
