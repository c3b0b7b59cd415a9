//! The `fedq server` binary as a process: configured through `FEDQ_…` variables, killed with
//! SIGKILL while routing and restarted without losing an envelope, stopped gracefully with
//! SIGTERM, and never writing a secret to its log.

mod support;

use std::collections::HashSet;
use std::process::{Child, Command};
use std::time::Duration;

use fedq::envelope::{self, MemoryReplayGuard, OpenPolicy};
use fedq::keys::Keyring;
use fedq::server::config::ServerConfig;
use fedq::time::Timestamp;
use support::*;

fn spawn_server(config: &ServerConfig, port: u16, log: &std::path::Path) -> Child {
    spawn_server_process(config, port, log, "debug")
}

#[tokio::test]
async fn a_killed_server_loses_nothing_and_a_terminated_one_stops_cleanly_without_logging_secrets() {
    let (config, db_name, vhost) = prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut child = spawn_server(&config, port, &log);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let app = attach(config.clone(), db_name, vhost, addr).await;

    let fixture = TwoOrgRun::start(&app).await;
    let TwoOrgRun { a, b, researcher, reg_b, node_a, node_b, .. } = &fixture;

    // 300 envelopes in flight; the server is killed with SIGKILL once some have arrived.
    let sent: Vec<Vec<u8>> =
        (0..300u16).map(|i| fixture.b_to_a(format!("CANARY-message-{i}").as_bytes())).collect();
    for bytes in &sent {
        node_b.publish(bytes).await.unwrap();
    }
    let mut received = vec![node_a.next(20).await.data];
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut child = spawn_server(&config, port, &log);
    app.wait_healthy().await;
    while received.len() < sent.len() {
        received.push(node_a.next(30).await.data);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A copy confirmed by the broker in the instant between confirm and commit is forwarded
    // again after the restart; the receiving node's replay guard drops it. Count them.
    let mut extra = 0;
    while let Some(delivery) = node_a.try_next().await {
        extra += 1;
        received.push(delivery.data);
    }
    let distinct: HashSet<&Vec<u8>> = received.iter().collect();
    let expected: HashSet<&Vec<u8>> = sent.iter().collect();
    assert_eq!(distinct, expected, "every envelope arrived");
    assert!(extra <= 64, "at most the envelopes in flight can be forwarded again, got {extra}");
    eprintln!("copies forwarded twice after SIGKILL: {extra}");
    // Downstream, the node's replay guard lets each envelope through exactly once.
    let mut a_trusts = Keyring::new();
    a_trusts.insert(b.org(), b.current().public().clone());
    let mut guard = MemoryReplayGuard::new();
    let (mut accepted, mut replays) = (0, 0);
    for bytes in &received {
        match envelope::open(bytes, a, &a_trusts, &mut guard, &OpenPolicy::default(), Timestamp::now()) {
            Ok(_) => accepted += 1,
            Err(fedq::envelope::OpenError::Replay { .. }) => replays += 1,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    assert_eq!((accepted, replays), (sent.len(), extra));

    // SIGTERM: a graceful stop.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the server exits cleanly on SIGTERM: {status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("SIGTERM: shutting down") && log.contains("stopped"), "{log}");

    let secrets = [
        ROOT_PASSWORD.to_owned(),
        "fedq-dev".to_owned(),
        "guest:guest".to_owned(),
        reg_b["api_key"].as_str().unwrap().to_owned(),
        reg_b["broker"]["password"].as_str().unwrap().to_owned(),
        researcher.clone(),
        "CANARY".to_owned(),
    ];
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "the server log holds a secret: {secret}");
    }
    app.cleanup().await;
}
