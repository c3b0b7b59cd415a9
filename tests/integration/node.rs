//! The node worker against real Docker, RabbitMQ and PostgreSQL: isolation of algorithm
//! containers (each property its own test, against listeners the test starts on this machine),
//! limits, policy, per-run volumes and kills.

use crate::support;

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

/// `[network] subnet` as docs/node.md shows it: the node starts on that network, with its first
/// address as the endpoint's, and runs a job.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_a_subnet_of_its_own_starts_and_runs_a_job() {
    let mut fed = Fed::new(Fed::limits()).await;
    // A /28 of 10.233.0.0/16 that no interface of this machine uses yet.
    let used = String::from_utf8(
        std::process::Command::new("ip").args(["-4", "-o", "addr"]).output().unwrap().stdout,
    )
    .unwrap();
    let start = u32::from(uuid::Uuid::new_v4().as_bytes()[0]) * 16;
    let block = (0..4096u32)
        .map(|i| (start + i * 16) % 65536)
        .find(|b| !used.contains(&format!("10.233.{}.{}/", b / 256, b % 256 + 1)))
        .unwrap();
    let subnet = format!("10.233.{}.{}/28", block / 256, block % 256);
    fed.config.network.subnet = Some(subnet.clone());
    fed.start_node().await;
    assert_eq!(fed.endpoint().ip().to_string(), format!("10.233.{}.{}", block / 256, block % 256 + 1));
    let (result, _) = fed.probe(json!([{"op": "job"}])).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?} on {subnet}");
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

/// An image that ships its own `/tmp` (here root's, mode 0755, as `COPY … /tmp/` makes it):
/// Docker copies the directory's mode onto the tmpfs, which the container's user could not
/// write unless the tmpfs is its own.
#[tokio::test(flavor = "multi_thread")]
async fn tmp_is_writable_in_an_image_that_ships_its_own_tmp() {
    let fed = fed().await;
    let tag = format!("{}-owntmp-{}", support::node::PROBE, &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("marker"), "shipped").unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {}\nCOPY marker /tmp/marker\n", support::node::PROBE),
    )
    .unwrap();
    docker(&["build", "--quiet", "-t", &tag, context.path().to_str().unwrap()]);
    let (_, found) = fed
        .probe_image(
            &tag,
            json!([
                {"op": "write", "path": "/tmp/scratch", "data": "x"},
            ]),
        )
        .await;
    docker(&["rmi", "-f", &tag]);
    assert_eq!(found[0], "ok", "/tmp is writable: {found:?}");
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

/// A container that fills its run volume fills the run's own disk of `limits.run_volume_mib`,
/// not the node's state directory: its writes stop at the bound with "no space", the node goes
/// on (the job's result is recorded and sent, the next task runs), and the disk's file and loop
/// device are gone when the run ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_fills_its_run_volume_fills_only_the_runs_own_disk() {
    let mut fed = Fed::new(fedq::node::config::Limits { run_volume_mib: 16, ..Fed::limits() }).await;
    fed.start_node().await;
    let submitted = fed.submit(json!([{"op": "fill", "path": "/fedq/run/big", "mib": 64}])).await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    let found: Vec<serde_json::Value> = serde_json::from_slice(&result.output).unwrap();
    let written = found[0]["written_mib"].as_u64().unwrap();
    assert!(written < 16, "stopped at the run's 16 MiB: {found:?}");
    assert!(found[0]["error"].as_str().is_some_and(|e| e.contains("No space left")), "{found:?}");
    let (_, next) = fed.probe(json!([{"op": "write", "path": "/fedq/run/x", "data": "ok"}])).await;
    assert_eq!(next[0], "ok", "another run has its own disk: {next:?}");

    let image = fed.config.node.state_dir.join("runs").join(submitted.run.to_string()).join("volume.img");
    support::eventually(30, "the run's disk to be removed", || async { (!image.exists()).then_some(()) })
        .await;
    let attached = std::process::Command::new("losetup").arg("--all").output().unwrap();
    let attached = String::from_utf8_lossy(&attached.stdout);
    assert!(!attached.contains(&image.display().to_string()), "no loop device left: {attached}");
    fed.cleanup().await;
}

/// Run disks are bounded in number: while one run holds the only disk `limits.max_run_disks`
/// allows, another run's job crashes before its container starts, with an error naming the
/// limit, and a run started once the first ended gets its disk.
#[tokio::test(flavor = "multi_thread")]
async fn run_disks_are_bounded_in_number() {
    let limits = fedq::node::config::Limits { run_volume_mib: 16, max_run_disks: 1, ..Fed::limits() };
    let mut fed = Fed::new(limits).await;
    fed.start_node().await;
    let holding = fed.submit(json!([{"op": "sleep", "ms": 120000}])).await;
    fed.wait_running(holding.job).await;
    let refused = fed.submit(json!([{"op": "write", "path": "/fedq/run/x", "data": "ok"}])).await;
    let result = fed.result(refused.task).await;
    assert_eq!(result.status, JobStatus::Crashed, "{result:?}");
    let said = result.reason.clone().unwrap_or_default();
    assert!(said.contains("limits.max_run_disks (1)"), "{result:?}");
    let (status, body) =
        fed.app.call("POST", &format!("/tasks/{}/kill", holding.task), Some(&fed.researcher), None).await;
    assert_eq!(status, 200, "{body}");
    let image = fed.config.node.state_dir.join("runs").join(holding.run.to_string()).join("volume.img");
    support::eventually(60, "the first run's disk to be removed", || async {
        (!image.exists()).then_some(())
    })
    .await;
    let (_, next) = fed.probe(json!([{"op": "write", "path": "/fedq/run/x", "data": "ok"}])).await;
    assert_eq!(next[0], "ok", "a run after the first has a disk: {next:?}");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_task_stops_its_container() {
    let fed = fed().await;
    let submitted = fed.submit(json!([{"op": "sleep", "ms": 120000}])).await;
    fed.wait_running(submitted.job).await;
    // The node's status envelopes reach the server.
    support::eventually(30, "the server to show the job running", || async {
        let (_, task) =
            fed.app.call("GET", &format!("/tasks/{}", submitted.task), Some(&fed.researcher), None).await;
        (task["jobs"][0]["status"] == "running").then_some(())
    })
    .await;
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

#[tokio::test(flavor = "multi_thread")]
async fn data_sources_are_mounted_read_only() {
    let mut fed = Fed::new(Fed::limits()).await;
    let data = fed.dir.path().join("patients.csv");
    std::fs::write(&data, "id,age\n1,70\n").unwrap();
    fed.config.data.insert("patients".into(), data);
    fed.config.policy.images[0].data = vec!["patients".into()];
    fed.start_node().await;
    let (_, found) = fed
        .probe(json!([
            {"op": "read", "path": "/data/patients"},
            {"op": "write", "path": "/data/patients", "data": "overwritten"},
        ]))
        .await;
    assert_eq!(found[0], "id,age\n1,70\n");
    assert!(found[1].as_str().unwrap().contains("Read-only file system"), "{found:?}");
    fed.cleanup().await;
}

/// A container sees only the data sources its image's policy rule grants: a node with two
/// sources, an image granted one.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_gets_only_the_data_sources_its_policy_grants() {
    let mut fed = Fed::new(Fed::limits()).await;
    for (label, content) in [("patients", "granted"), ("genomes", "not granted")] {
        let path = fed.dir.path().join(label);
        std::fs::write(&path, content).unwrap();
        fed.config.data.insert(label.into(), path);
    }
    fed.config.policy.images[0].data = vec!["patients".into()];
    fed.start_node().await;
    let (_, found) = fed
        .probe(json!([
            {"op": "read", "path": "/data/patients"},
            {"op": "read", "path": "/data/genomes"},
        ]))
        .await;
    assert_eq!(found[0], "granted");
    assert!(found[1].as_str().unwrap().contains("No such file"), "{found:?}");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_stopped_at_its_wall_clock_limit() {
    let mut fed = Fed::new(fedq::node::config::Limits { timeout_secs: 2, ..Fed::limits() }).await;
    fed.start_node().await;
    let (result, _) = fed.probe(json!([{"op": "sleep", "ms": 60000}])).await;
    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.reason.as_deref(), Some("stopped at the wall-clock limit of 2 s"));
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_stay_at_the_node_unless_its_policy_shares_them() {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.config.policy.share_logs = false;
    fed.start_node().await;
    let submitted = fed.submit(json!([{"op": "print", "text": "patient 17 looked odd"}])).await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed);
    assert_eq!(result.log, "", "the task asked for the log, the policy does not share it");
    let kept = fed.config.node.state_dir.join("jobs").join(submitted.job.to_string()).join("container.log");
    let kept = std::fs::read(kept).unwrap();
    assert!(String::from_utf8_lossy(&kept).contains("patient 17 looked odd"));
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_stop_lets_a_running_job_finish_and_deliver() {
    let mut fed = fed().await;
    let submitted =
        fed.submit(json!([{"op": "sleep", "ms": 2000}, {"op": "print", "text": "finished"}])).await;
    fed.wait_running(submitted.job).await;
    fed.node.take().unwrap().shutdown().await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    assert!(result.log.contains("finished"));
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_still_running_after_the_grace_period_is_redelivered_to_the_next_start() {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.config.node.shutdown_grace_secs = 1;
    fed.start_node().await;
    let submitted =
        fed.submit(json!([{"op": "sleep", "ms": 4000}, {"op": "print", "text": "second try"}])).await;
    fed.wait_running(submitted.job).await;
    fed.node.take().unwrap().shutdown().await;
    assert!(fed.container_of(submitted.job).is_none(), "the container was stopped");
    fed.start_node().await;
    let result = fed.result(submitted.task).await;
    assert_eq!(result.status, JobStatus::Completed, "{result:?}");
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_organization_key_the_server_swaps_is_refused() {
    let mut fed = Fed::new(Fed::limits()).await;
    // The node pins another key for A than the one the server hands out.
    let pinned = fedq::keys::OrgKey::generate().id().to_string();
    fed.config.peers.pins.insert(fed.a.org(), vec![pinned]);
    fed.start_node().await;
    let submitted = fed.submit(json!([])).await;
    support::eventually(30, "the node to refuse the envelope", || async {
        let refused = fed.node.as_ref().unwrap().rejections();
        refused.iter().any(|(code, n)| *code == "unknown_sender_key" && *n > 0).then_some(())
    })
    .await;
    assert!(fed.container_of(submitted.job).is_none());
    let dead = support::eventually(10, "the refused envelope in the dead-letter queue", || async {
        let queue = support::management().queue(&fed.app.vhost, "fedq.dead-letters").await.ok().flatten()?;
        (queue.messages > 0).then_some(queue.messages)
    })
    .await;
    assert_eq!(dead, 1);
    fed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_gc_removes_expired_run_volumes_and_stopped_containers() {
    let fed = Fed::new(Fed::limits()).await;
    let name = fed.config.node.name.clone();
    // A run volume as the node labels it, expiring at `expires_at` (ms since the epoch).
    let run_volume = |expires_at: &str| {
        let run = fedq::ids::RunId::new();
        let volume = format!("fedq-{name}-run-{run}");
        let labels = [
            format!("org.fedq.node={name}"),
            format!("org.fedq.run={run}"),
            format!("org.fedq.expires-at={expires_at}"),
        ];
        docker(&[
            "volume", "create", "--label", &labels[0], "--label", &labels[1], "--label", &labels[2], &volume,
        ]);
        volume
    };
    let volume = run_volume("0");
    let fresh = run_volume("99999999999999");
    let stopped = format!("fedq-{name}-leftover");
    docker(&[
        "create",
        "--name",
        &stopped,
        "--label",
        &format!("org.fedq.node={name}"),
        support::node::PROBE,
    ]);

    let gc = |all: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_fedq"));
        command.args(["node", "gc", "--config"]).arg(&fed.config_path);
        if all {
            command.arg("--all");
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(gc(false), "removed 1 containers and 1 run volumes");
    let exists = |v: &str| {
        std::process::Command::new("docker").args(["volume", "inspect", v]).output().unwrap().status.success()
    };
    assert!(!exists(&volume), "the expired volume is gone");
    assert!(exists(&fresh), "a volume within its time stays");
    assert_eq!(gc(true), "removed 0 containers and 1 run volumes");
    assert!(!exists(&fresh));
    fed.cleanup().await;
}

/// A network the administrator created beforehand (Docker names its bridge `br-…`): the node
/// hangs its rules on that bridge, so containers still reach only the endpoint, and a clean stop
/// leaves the network (and so its subnet and the endpoint's address) to the administrator.
#[tokio::test(flavor = "multi_thread")]
async fn a_network_created_beforehand_gets_the_firewall_on_its_real_bridge() {
    let mut fed = Fed::new(Fed::limits()).await;
    let network = format!("fedq-{}", fed.config.node.name);
    docker(&[
        "network",
        "create",
        "--internal",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        &network,
    ]);
    fed.start_node().await;
    let bridge = bridge_of(&network);
    assert!(bridge.starts_with("br-"), "{bridge}");
    assert!(
        iptables(&["-S", "INPUT"]).contains(&format!("-i {bridge} -j FEDQ-")),
        "the rules are on {bridge}"
    );
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = fed.endpoint().ip();
    let (_, found) = fed
        .probe(json!([
            {"op": "connect", "addr": fed.endpoint().to_string()},
            {"op": "connect", "addr": format!("{gateway}:{port}")},
            {"op": "connect", "addr": format!("{gateway}:5672")},
        ]))
        .await;
    assert_eq!(found[0], "open", "the endpoint is reachable: {found:?}");
    assert_ne!(found[1], "open", "a host port: {found:?}");
    assert_ne!(found[2], "open", "the broker: {found:?}");
    let id = docker(&["network", "inspect", "-f", "{{.Id}}", &network]);
    fed.node.take().expect("the node runs").shutdown().await;
    let after = std::process::Command::new("docker")
        .args(["network", "inspect", "-f", "{{.Id}}", &network])
        .output()
        .unwrap();
    assert!(after.status.success(), "the stop removed the administrator's network");
    assert_eq!(String::from_utf8_lossy(&after.stdout).trim(), id.trim(), "the same network");
    fed.cleanup().await;
}

/// UDP to the host and name queries through Docker's resolver in the container (which the node
/// points at the gateway) reach no listener: each is a listener this test starts on the host.
#[tokio::test(flavor = "multi_thread")]
async fn udp_and_name_queries_do_not_leave_the_algorithm_network() {
    let fed = fed().await;
    let gateway = fed.endpoint().ip();
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    // Where Docker's resolver forwards names it does not know, for this node's containers.
    let dns = std::net::UdpSocket::bind((gateway, 53)).unwrap();
    let dns_tcp = TcpListener::bind((gateway, 53)).unwrap();
    let (_, found) = fed
        .probe(json!([
            {"op": "udp", "addr": format!("{gateway}:{port}"), "text": "leak-over-udp"},
            {"op": "resolve", "name": "leak-over-dns.fedq.test"},
        ]))
        .await;
    assert_eq!(found[0], "sent", "{found:?}");
    assert!(found[1].as_str().is_some_and(|f| f.starts_with("error")), "nothing resolves: {found:?}");
    for (what, socket) in [("UDP", &udp), ("DNS", &dns)] {
        socket.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut buffer = [0u8; 512];
        let got = socket.recv_from(&mut buffer);
        assert!(
            got.is_err(),
            "the {what} listener received {:?}",
            got.map(|(n, from)| (from, buffer[..n].to_vec()))
        );
    }
    dns_tcp.set_nonblocking(true).unwrap();
    assert!(dns_tcp.accept().is_err(), "nothing connected to the DNS port over TCP");
    fed.cleanup().await;
}

/// Rules flushed under a running node (a firewall reload, say) are noticed and put back.
#[tokio::test(flavor = "multi_thread")]
async fn firewall_rules_removed_under_a_running_node_are_put_back() {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.config.network.firewall_check_secs = 1;
    fed.start_node().await;
    let bridge = bridge_of(&format!("fedq-{}", fed.config.node.name));
    let jump = iptables(&["-S", "INPUT"])
        .lines()
        .find(|l| l.contains(&format!("-i {bridge} -j FEDQ-")))
        .expect("the node's rule in INPUT")
        .to_owned();
    let chain = jump.rsplit(' ').next().unwrap().to_owned();
    let rule: Vec<&str> = jump.split(' ').skip(1).collect();
    iptables(&[&["-D"], &rule[..]].concat());
    iptables(&["-F", &chain]);
    support::eventually(30, "the node to put its rules back", || async {
        let input = iptables(&["-S", "INPUT"]);
        let chain = iptables(&["-S", &chain]);
        (input.contains(&jump) && chain.contains("-j DROP")).then_some(())
    })
    .await;
    assert_host_port_closed_to_containers(&fed).await;
    fed.cleanup().await;
}

/// A rule put above the node's jump that accepts the bridge's traffic (which `iptables -C` does
/// not notice) is noticed, and the node's jump is put back above it.
#[tokio::test(flavor = "multi_thread")]
async fn an_accept_put_above_the_nodes_jump_is_noticed_and_outranked() {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.config.network.firewall_check_secs = 1;
    fed.start_node().await;
    let bridge = bridge_of(&format!("fedq-{}", fed.config.node.name));
    let accept = ["INPUT", "-i", bridge.as_str(), "-j", "ACCEPT"];
    /// Removes the test's ACCEPT rule however the test ends.
    struct Accept(Vec<String>);
    impl Drop for Accept {
        fn drop(&mut self) {
            let rule: Vec<&str> = self.0.iter().map(String::as_str).collect();
            while std::process::Command::new("iptables")
                .args([&["-w", "-D"], &rule[..]].concat())
                .output()
                .is_ok_and(|o| o.status.success())
            {}
        }
    }
    let _accept = Accept(accept.iter().map(|a| a.to_string()).collect());
    iptables(&[&["-I"], &accept[..1], &["1"], &accept[1..]].concat());
    let position = |input: &str, needle: &str| input.lines().position(|l| l.contains(needle));
    let ours = format!("-i {bridge} -j FEDQ-");
    let theirs = format!("-i {bridge} -j ACCEPT");
    support::eventually(30, "the node to put its jump above the ACCEPT", || async {
        let input = iptables(&["-S", "INPUT"]);
        match (position(&input, &ours), position(&input, &theirs)) {
            (Some(o), Some(t)) if o < t => Some(()),
            _ => None,
        }
    })
    .await;
    assert_host_port_closed_to_containers(&fed).await;
    fed.cleanup().await;
}

/// A host port bound to every interface, which this process reaches, is not open to a
/// container at the gateway address: the firewall is in place.
async fn assert_host_port_closed_to_containers(fed: &Fed) {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = fed.endpoint().ip();
    let (_, found) = fed.probe(json!([{"op": "connect", "addr": format!("{gateway}:{port}")}])).await;
    assert_ne!(found[0], "open", "{found:?}");
}

/// The bridge interface of a Docker network.
fn bridge_of(network: &str) -> String {
    let options = docker(&["network", "inspect", "-f", "{{json .Options}} {{.Id}}", network]);
    let (options, id) = options.trim().rsplit_once(' ').unwrap();
    let options: serde_json::Value = serde_json::from_str(options).unwrap();
    match options["com.docker.network.bridge.name"].as_str() {
        Some(name) => name.to_owned(),
        None => format!("br-{}", &id[..12]),
    }
}

fn iptables(args: &[&str]) -> String {
    let out = std::process::Command::new("iptables").arg("-w").args(args).output().unwrap();
    assert!(out.status.success(), "iptables {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A partner floods a run with messages that no container takes: the node keeps at most
/// `limits.run_inbox_messages` waiting and refuses the rest, counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_inbox_keeps_at_most_its_quota() {
    let mut fed = Fed::new(Fed::limits()).await;
    fed.config.limits.run_inbox_messages = 5;
    fed.start_node().await;
    let (submitted, job_a) = fed.submit_with_a(json!([{"op": "sleep", "ms": 1000}])).await;
    let flood: Vec<(&str, &[u8])> = (0..12).map(|_| ("flood", &b"0123456789"[..])).collect();
    fed.send_from_a(&submitted, job_a, &flood).await;
    let node = fed.node.as_ref().unwrap();
    support::eventually(30, "seven messages refused", || async {
        (node.refusals().get("run_inbox_full").copied() == Some(7)).then_some(())
    })
    .await;
    let inbox = fed.config.node.state_dir.join("runs").join(submitted.run.to_string()).join("inbox");
    let waiting = std::fs::read_dir(&inbox)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "msg"))
        .count();
    assert_eq!(waiting, 5);
    fed.cleanup().await;
}

/// A node that restarts keeps its algorithm network's addresses (the endpoint's address that
/// running containers and firewall rules know), even though Docker hands out the next free
/// range for every network created.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_node_keeps_its_address_range() {
    let mut fed = fed().await;
    let before = fed.node.as_ref().unwrap().endpoint();
    fed.node.take().unwrap().shutdown().await;
    fed.start_node().await;
    let after = fed.node.as_ref().unwrap().endpoint();
    assert_eq!(before.ip(), after.ip());
    let (_, found) = fed.probe(json!([{"op": "endpoint"}])).await;
    assert_eq!(found[0], format!("http://{after}"), "{found:?}");

    // Another network took the range while the node was stopped: the node takes a new one.
    fed.node.take().unwrap().shutdown().await;
    let kept = std::fs::read_to_string(fed.config.node.state_dir.join("network-subnet")).unwrap();
    let squatter = format!("fedq-test-squat-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    docker(&["network", "create", "--internal", "--subnet", kept.trim(), &squatter]);
    fed.start_node().await;
    let moved = fed.node.as_ref().unwrap().endpoint();
    docker(&["network", "rm", &squatter]);
    assert_ne!(moved.ip(), after.ip());
    let (_, found) = fed.probe(json!([{"op": "endpoint"}])).await;
    assert_eq!(found[0], format!("http://{moved}"), "{found:?}");
    fed.cleanup().await;
}

/// A container's subtask requests are bounded: an organization listed 1,000 times is one job
/// (one sealed copy of the input, not a thousand), a request's inputs summed over its
/// organizations are at most `limits.subtask_input_mib`, and all the subtasks of one job carry
/// at most `limits.job_subtask_mib` together; past either, the node answers 413 naming the
/// setting, before it seals anything.
#[tokio::test(flavor = "multi_thread")]
async fn subtask_requests_are_deduplicated_and_bounded_per_request_and_per_job() {
    let limits = fedq::node::config::Limits { subtask_input_mib: 1, job_subtask_mib: 2, ..Fed::limits() };
    let mut fed = Fed::new(limits).await;
    fed.start_node().await;
    let a = fed.a.org().to_string();
    let (_, found) = fed
        .probe(json!([
            {"op": "subtasks", "orgs": ["self"], "copies": 1000, "kib": 600, "times": 4},
            {"op": "subtasks", "orgs": ["self", a], "copies": 1, "kib": 600, "times": 1},
        ]))
        .await;
    let repeated = found[0].as_array().unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(repeated[..3], [json!(1), json!(1), json!(1)], "one job per organization: {found:?}");
    let per_job = repeated[3].as_str().unwrap_or_default();
    assert!(per_job.contains("413") && per_job.contains("limits.job_subtask_mib"), "{found:?}");
    let per_request = found[1][0].as_str().unwrap_or_default();
    assert!(per_request.contains("413") && per_request.contains("limits.subtask_input_mib"), "{found:?}");
    fed.cleanup().await;
}

/// A node stopped the moment it has started (its broker session may still be connecting or
/// setting up its consumer) leaves no consumer on its organization's queue: what arrives for it
/// waits in the queue for the next start, not in a connection nobody reads.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_at_once_leaves_no_consumer_on_its_queue() {
    let mut fed = Fed::new(Fed::limits()).await;
    let queue = fedq::broker::org_queue(fed.b.org());
    let management = support::management();
    // Stops at a range of moments after the start, to land in each step of the session's
    // setup: a sleep here makes the race, no test waits on one.
    for delay_ms in (0..=150).step_by(10) {
        fed.start_node().await;
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        fed.node.take().unwrap().shutdown().await;
        let consumers = support::eventually(20, "the broker to see the node's connection closed", || async {
            let stats = management.queue(&fed.app.vhost, &queue).await.ok()??;
            (stats.consumers == 0).then_some(stats.consumers)
        })
        .await;
        assert_eq!(consumers, 0);
    }
    fed.cleanup().await;
}
