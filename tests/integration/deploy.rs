//! Deployment files: the RabbitMQ definitions agree with the topology the server declares, and
//! the compose file validates.

use crate::support;

use std::process::Command;

use support::*;

/// Loads `broker/definitions.json` into a fresh virtual host, then starts a server on it: the
/// server's own declarations must match the loaded ones exactly (RabbitMQ refuses a queue
/// redeclared with other arguments), or it never becomes healthy.
#[tokio::test]
async fn broker_definitions_match_the_servers_topology() {
    let (config, db_name, vhost) = prepare().await;
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/broker/definitions.json")).unwrap();
    let mut definitions: serde_json::Value = serde_json::from_str(&text).unwrap();
    definitions["vhosts"] = serde_json::json!([{ "name": vhost }]);
    for section in ["exchanges", "queues", "bindings"] {
        for item in definitions[section].as_array_mut().unwrap() {
            item["vhost"] = serde_json::Value::String(vhost.clone());
        }
    }
    let resp = reqwest::Client::new()
        .post("http://127.0.0.1:15672/api/definitions")
        .basic_auth("guest", Some("guest"))
        .json(&definitions)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "definitions load: {}", resp.status());
    let queue = eventually(10, "the ingress queue from the definitions", || async {
        management().queue(&vhost, "fedq.ingress").await.ok().flatten()
    })
    .await;
    assert_eq!(queue.messages, 0);

    let server = fedq::server::start(config.clone()).await.unwrap();
    let app = attach(config, db_name, vhost, server.addr).await;
    let (status, health) = app.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{health}");
    server.shutdown().await;
    app.cleanup().await;
}

#[test]
fn the_compose_file_validates() {
    ensure_services();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/compose");
    let env_text = std::fs::read_to_string(format!("{dir}/.env.example")).unwrap();
    let mut cmd = Command::new("docker-compose");
    cmd.args(["-f", "docker-compose.yml", "config", "-q"]).current_dir(dir);
    for line in env_text.lines().filter(|l| !l.starts_with('#') && l.contains('=')) {
        let (k, v) = line.split_once('=').unwrap();
        cmd.env(k, v);
    }
    let out = cmd.output().expect("docker-compose runs (scripts/services installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The clustered variant: three broker nodes and two server replicas.
    let mut cmd = Command::new("docker-compose");
    cmd.args(["-f", "docker-compose.yml", "-f", "docker-compose.cluster.yml", "config"]).current_dir(dir);
    for line in env_text.lines().filter(|l| !l.starts_with('#') && l.contains('=')) {
        let (k, v) = line.split_once('=').unwrap();
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merged = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "rabbitmq-2:",
        "rabbitmq-3:",
        "server-2:",
        "FEDQ_BROKER__CLUSTER_HOSTS: rabbitmq-2:5672,rabbitmq-3:5672",
    ] {
        assert!(merged.contains(expected), "{expected} missing from the merged file:\n{merged}");
    }

    // Without a secret it refuses to run rather than start with an empty password.
    let mut cmd = Command::new("docker-compose");
    cmd.args(["-f", "docker-compose.yml", "config", "-q"]).current_dir(dir);
    for line in env_text.lines().filter(|l| !l.starts_with('#') && l.contains('=')) {
        let (k, v) = line.split_once('=').unwrap();
        if k != "DB_PASSWORD" {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DB_PASSWORD"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The example node settings load as they are, with every section the node knows.
#[test]
fn the_example_node_settings_load() {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/node/node.toml"));
    let config = fedq::node::config::NodeConfig::load(Some(path)).expect("compose/node/node.toml loads");
    assert_eq!(config.node.name, "registry-a-1");
    assert_eq!(config.policy.images.len(), 1);
    assert!(config.data.contains_key("patients"));
    // What ships is what a registry should run: pinned images, named partners, data granted
    // per image, no diagnostic probe.
    assert!(fedq::node::policy::loose_rules(&config.policy).is_empty(), "{:?}", config.policy);
    assert_eq!(config.policy.images[0].data, ["patients"]);
    assert!(config.policy.images.iter().all(|r| !r.name.contains("probe") && !r.name.contains('*')));
}

/// The systemd unit asks for what the node provides: readiness and watchdog notifications, a
/// restart on failure, and a stop timeout longer than the default grace period.
#[test]
fn the_node_unit_is_a_notify_service_with_a_watchdog() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/compose/node/fedq-node.service"))
            .unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(value("Type"), "notify");
    assert_eq!(value("Restart"), "on-failure");
    assert!(value("WatchdogSec").ends_with('s'));
    let stop: u64 = value("TimeoutStopSec").trim_end_matches('s').parse().unwrap();
    assert!(stop > 30, "TimeoutStopSec must exceed the default shutdown grace of 30 s");
    for hardening in ["NoNewPrivileges", "ProtectSystem", "CapabilityBoundingSet", "PrivateTmp"] {
        assert!(!value(hardening).is_empty(), "{hardening} is set");
    }
    assert!(value("ExecStart").contains("fedq node --config"));
    // `systemctl reload` is how a policy change is applied at once.
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    // Run disks are loop devices the node sets up: a private /dev would hide them.
    assert_ne!(value("PrivateDevices"), "yes");
    let allowed: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("DeviceAllow=")).collect();
    assert!(allowed.contains(&"/dev/loop-control rw") && allowed.contains(&"block-loop rw"), "{allowed:?}");
}

/// Broker addresses can be given as a comma-separated variable (how compose sets them): each
/// entry is checked, and a bad one stops the server before it connects to anything.
#[test]
fn cluster_hosts_come_from_a_comma_separated_variable() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/compose/server.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_fedq"))
        .args(["server", "--config", config])
        .env("FEDQ_DATABASE__URL", "postgres://fedq:x@127.0.0.1:9/fedq")
        .env("FEDQ_BROKER__URL", "amqp://fedq-server:x@127.0.0.1:9/fedq")
        .env("FEDQ_BROKER__MANAGEMENT_PASSWORD", "x")
        .env("FEDQ_BOOTSTRAP__ROOT_PASSWORD", "x-long-enough-password")
        .env("FEDQ_BROKER__CLUSTER_HOSTS", "rabbitmq-2:5672,rabbitmq-3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broker address \"rabbitmq-3\" is not host:port"), "{stderr}");
    assert!(!stderr.contains("fedq-server:x"), "the URL's password is not repeated: {stderr}");
}
