//! The node worker against real Docker, RabbitMQ and PostgreSQL: isolation of algorithm
//! containers (each property its own test, against listeners the test starts on this machine),
//! limits, policy, per-run volumes and kills.

mod support;

use std::net::TcpListener;

use fedq::protocol::JobStatus;
use serde_json::json;
use support::node::Fed;

async fn fed() -> Fed {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.start_node().await;
    fed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_runs_and_its_result_reaches_the_researcher() {
    let fed = fed().await;
    let (result, found) =
        fed.probe(json!([{"op": "print", "text": "hello from the probe"}, {"op": "job"}])).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    assert_eq!(found[0], "ok");
    assert_eq!(found[1]["organization"], fed.b.org().to_string());
    assert!(result.log.contains("hello from the probe"), "the requested log comes back: {:?}", result.log);
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_reaches_the_endpoint() {
    let fed = fed().await;
    let (_, found) = fed.probe(json!([{"op": "connect", "addr": fed.endpoint().to_string()}])).await;
    assert_eq!(found[0], "open");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_cannot_reach_a_host_port_bound_to_all_interfaces() {
    let fed = fed().await;
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The listener works: this process reaches it.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let gateway = fed.endpoint().ip();
    let (_, found) = fed.probe(json!([{"op": "connect", "addr": format!("{gateway}:{port}")}])).await;
    assert_ne!(found[0], "open", "{found:?}");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_cannot_reach_the_broker_or_the_database() {
    let fed = fed().await;
    let gateway = fed.endpoint().ip();
    // RabbitMQ listens on all interfaces here, so without the firewall 5672 would be open.
    assert!(std::net::TcpStream::connect(("127.0.0.1", 5672)).is_ok());
    let (_, found) = fed
        .probe(json!([
            {"op": "connect", "addr": format!("{gateway}:5672")},
            {"op": "connect", "addr": format!("{gateway}:5432")},
            {"op": "connect", "addr": format!("{gateway}:15672")},
        ]))
        .await;
    for (port, outcome) in [5672, 5432, 15672].iter().zip(&found) {
        assert_ne!(outcome, "open", "port {port} reachable: {found:?}");
    }
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_cannot_reach_each_other() {
    let fed = fed().await;
    let listening = fed.submit(json!([{"op": "listen", "port": 9000, "ms": 8000}])).await;
    let container = fed.wait_running(listening.job).await;
    let ip = docker_ip(&container);
    let (_, found) = fed.probe(json!([{"op": "connect", "addr": format!("{ip}:9000")}])).await;
    assert_ne!(found[0], "open", "{found:?}");
    let listened = fed.result(listening.task).await;
    let listened: Vec<serde_json::Value> = serde_json::from_slice(&listened.output).unwrap();
    assert_eq!(listened[0], "idle", "nothing reached the listener");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_cannot_reach_a_port_on_another_docker_network() {
    let fed = fed().await;
    let name = format!("fedq-test-other-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    docker(&["network", "create", &name]);
    docker(&["run", "-d", "--name", &name, "--network", &name, support::node::PROBE, "listen", "9000"]);
    let ip = docker_ip(&name);
    // The listener works: the host reaches it on its own network.
    support::eventually(10, "the listener on the other network", || async {
        std::net::TcpStream::connect((ip.as_str(), 9000)).ok().map(drop)
    })
    .await;
    let (_, found) = fed.probe(json!([{"op": "connect", "addr": format!("{ip}:9000")}])).await;
    docker(&["rm", "-f", &name]);
    docker(&["network", "rm", &name]);
    assert_ne!(found[0], "open", "{found:?}");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_cannot_write_its_root_file_system_and_runs_as_non_root() {
    let fed = fed().await;
    let (_, found) = fed
        .probe(json!([
            {"op": "write", "path": "/planted", "data": "x"},
            {"op": "write", "path": "/tmp/scratch", "data": "x"},
            {"op": "uid"},
        ]))
        .await;
    assert!(found[0].as_str().unwrap().contains("Read-only file system"), "{found:?}");
    assert_eq!(found[1], "ok", "/tmp is a writable tmpfs");
    assert_eq!(found[2], 65534);
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_is_killed_at_its_memory_limit() {
    let fed = fed().await;
    let (result, _) = fed.probe(json!([{"op": "alloc", "mib": 512}])).await;
    assert_eq!(result.status, JobStatus::Failed, "{result:?}");
    let reason = result.reason.unwrap_or_default();
    assert!(reason.contains("memory limit of 64 MiB"), "{reason}");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_algorithm_reports_its_exit_code() {
    let fed = fed().await;
    let (result, found) = fed.probe(json!([{"op": "uid"}, {"op": "exit", "code": 3}])).await;
    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.reason.as_deref(), Some("the algorithm exited with code 3"));
    assert_eq!(found[0], 65534, "the output posted before the exit still arrives");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_outside_the_policy_is_refused_without_starting() {
    let fed = fed().await;
    docker(&["tag", support::node::PROBE, "fedq-test/unlisted:1"]);
    let submitted = fed.submit_image("fedq-test/unlisted:1", fedq::ids::RunId::new(), json!([])).await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Refused);
    assert!(result.reason.unwrap().contains("not allowed by this node's policy"));
    assert!(fed.container_of(submitted.job).is_none());
    let missing = fed.submit_image("fedq/probe:no-such-tag", fedq::ids::RunId::new(), json!([])).await;
    let result = fed.result(missing.task).await;
    assert_eq!(result.status, JobStatus::Refused);
    assert!(result.reason.unwrap().contains("never pull"));
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_volume_is_shared_within_the_run_only_and_removed_when_the_run_ends() {
    let fed = fed().await;
    let steps = json!([
        {"op": "write", "path": "/fedq/run/shared", "data": "kept for the run"},
        {"op": "subtask", "orgs": ["self"], "steps": [{"op": "read", "path": "/fedq/run/shared"}]},
    ]);
    let submitted = fed.submit(steps).await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    let found: Vec<serde_json::Value> = serde_json::from_slice(&result.output).unwrap();
    assert_eq!(found[1][0]["status"], "completed", "{found:?}");
    assert_eq!(found[1][0]["output"][0], "kept for the run", "a second container of the run reads it");

    let (_, other) = fed.probe(json!([{"op": "read", "path": "/fedq/run/shared"}])).await;
    assert!(other[0].as_str().unwrap().contains("No such file"), "another run does not see it: {other:?}");

    let volume = format!("fedq-{}-run-{}", fed.config.node.name, submitted.run);
    support::eventually(30, "the run volume to be removed", || async {
        let out = std::process::Command::new("docker").args(["volume", "inspect", &volume]).output().unwrap();
        (!out.status.success()).then_some(())
    })
    .await;
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_task_stops_its_container() {
    let fed = fed().await;
    let submitted = fed.submit(json!([{"op": "sleep", "ms": 120000}])).await;
    fed.wait_running(submitted.job).await;
    let (status, body) =
        fed.app.call("POST", &format!("/tasks/{}/kill", submitted.task), Some(&fed.researcher), None).await;
    assert_eq!(status, 200, "{body}");
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Killed, "{result:?}");
    assert!(fed.container_of(submitted.job).is_none());
    fed.cleanup().await;
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn docker_ip(container: &str) -> String {
    docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container])
}
