//! RabbitMQ restarts under a node: while it is idle, while a job runs, and while envelopes flow
//! both ways (job starts to the node, statuses and results back, 20 jobs four at a time). The
//! server and the node reconnect by themselves, and every result arrives exactly once.
//!
//! One test in its own binary: restarting the shared broker must not overlap other tests
//! (test binaries run one after another).

mod support;

use std::process::Command;

use fedq::protocol::JobStatus;
use serde_json::json;
use support::node::Fed;

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Stops and starts the broker application: every connection drops, queues come back from disk.
async fn restart_broker() {
    rabbitmqctl(&["stop_app"]);
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_recovers_from_broker_restarts_while_idle_and_while_busy() {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.start_node().await;
    let (result, _) = fed.probe(json!([{"op": "uid"}])).await;
    assert_eq!(result.status, JobStatus::Completed);

    // Idle.
    restart_broker().await;
    fed.app.wait_healthy().await;
    let (result, found) = fed.probe(json!([{"op": "uid"}])).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    assert_eq!(found[0], 65534);

    // Busy: the container runs across the restart and posts its result afterwards.
    let submitted =
        fed.submit(json!([{"op": "sleep", "ms": 6000}, {"op": "print", "text": "survived"}])).await;
    fed.wait_running(submitted.job).await;
    restart_broker().await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    assert!(result.log.contains("survived"));
    let routed = fed.app.routed(submitted.task, "job_result").await;
    assert_eq!(routed, 1, "the result was routed exactly once");

    // Flowing both ways: restart once some results are back and others are not.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let steps = json!([{"op": "sleep", "ms": 700}, {"op": "print", "text": format!("job {i}")}]);
        tasks.push(fed.submit(steps).await.task);
    }
    support::eventually(120, "a few results", || async {
        (fed.app.routed_results(&tasks).await.0 >= 3).then_some(())
    })
    .await;
    assert!(fed.app.routed_results(&tasks).await.0 < 20, "envelopes are still in flight at the restart");
    restart_broker().await;
    for task in &tasks {
        let result = fed.result(*task).await;
        assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    }
    assert_eq!(fed.app.routed_results(&tasks).await, (20, 1), "every result routed, none twice");
    fed.cleanup().await;
}
