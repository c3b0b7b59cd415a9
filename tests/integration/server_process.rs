//! The `fedq server` binary as a process: configured through `FEDQ_…` variables, killed with
//! SIGKILL while routing and restarted without losing an envelope, stopped gracefully with
//! SIGTERM, and never writing a secret to its log.

use crate::support;

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

    // The transparency log, decided by the same commits: once the sequencer has caught up, every
    // envelope routed has exactly one leaf, the indexes are dense, and the leaves give the root
    // of the newest signed head.
    let sql = app.sql().await;
    eventually(30, "the sequencer to catch up", || async {
        let n: i64 = sql.query_one("SELECT count(*) FROM transparency_pending", &[]).await.ok()?.get(0);
        (n == 0).then_some(())
    })
    .await;
    let rows = sql.query("SELECT idx, leaf FROM transparency_leaves ORDER BY idx", &[]).await.unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i64>(0), i as i64, "dense indexes");
    }
    let leaves: Vec<Vec<u8>> = rows.iter().map(|r| r.get(1)).collect();
    let mut envelope_ids = Vec::new();
    for leaf in &leaves {
        if let fedq::transparency::Leaf::Envelope(e) = fedq::transparency::Leaf::decode(leaf).unwrap() {
            envelope_ids.push(e.id);
        }
    }
    let routed: i64 = sql.query_one("SELECT count(*) FROM routing_log", &[]).await.unwrap().get(0);
    assert_eq!(envelope_ids.len() as i64, routed, "one leaf per routed envelope");
    let logged: HashSet<_> = envelope_ids.iter().collect();
    assert_eq!(logged.len(), envelope_ids.len(), "no envelope logged twice");
    for bytes in &sent {
        let id = envelope::parse(bytes, usize::MAX).unwrap().header.id;
        assert!(logged.contains(&id), "every envelope B sent is in the log");
    }
    let head = sql
        .query_one("SELECT size, root FROM transparency_heads ORDER BY size DESC LIMIT 1", &[])
        .await
        .unwrap();
    assert_eq!(head.get::<_, i64>(0), leaves.len() as i64);
    let tree = fedq::transparency::MerkleTree::from_leaf_hashes(
        leaves.iter().map(|l| fedq::transparency::leaf_hash(l)),
    );
    assert_eq!(head.get::<_, &[u8]>(1), tree.root().as_slice(), "the signed root is the leaves'");

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

/// The resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kib / 1024
}

/// Outcome of a flood: status codes counted, and RSS before, at peak during, and after.
struct Flood {
    statuses: std::collections::BTreeMap<u16, usize>,
    retry_after: usize,
    rss: (u64, u64, u64),
}

/// `n` logins at once with wrong passwords, each for its own user name, over HTTPS.
async fn flood(base: &str, pid: u32, n: usize) -> Flood {
    let ca = std::path::Path::new("/var/lib/fedq-dev/tls/ca.pem");
    let tls = fedq::tls::ClientTls { ca_file: Some(ca.into()), ..Default::default() };
    let http = tls.http_client("flood", Duration::from_secs(120)).unwrap();
    let before = rss_mib(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let requests = (0..n).map(|i| {
        let http = http.clone();
        let url = format!("{base}/api/v1/login");
        async move {
            let body = serde_json::json!({ "username": format!("guess-{i}"), "password": "wrong-password" });
            let response = http.post(url).json(&body).send().await.expect("every login gets an answer");
            (response.status().as_u16(), response.headers().contains_key("retry-after"))
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let during = sampler.join().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut statuses = std::collections::BTreeMap::new();
    for (status, _) in &answers {
        *statuses.entry(*status).or_default() += 1;
    }
    let retry_after = answers.iter().filter(|(s, r)| *s == 429 && *r).count();
    Flood { statuses, retry_after, rss: (before, during, rss_mib(pid)) }
}

/// A login flood, as anyone on the network can send: password checks (Argon2id, 19 MiB each)
/// run a few at a time so memory stays flat, and past the failure limits logins are refused
/// before any hashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_keeps_memory_flat_and_guessing_is_refused() {
    let (config, db_name, vhost) = prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let tls = [
        ("FEDQ_HTTP__TLS_CERT", "/var/lib/fedq-dev/tls/localhost.pem".to_owned()),
        ("FEDQ_HTTP__TLS_KEY", "/var/lib/fedq-dev/tls/localhost.key".to_owned()),
    ];
    let wait_up = |port: u16| async move {
        let http = fedq::tls::ClientTls {
            ca_file: Some("/var/lib/fedq-dev/tls/ca.pem".into()),
            ..Default::default()
        }
        .http_client("test", Duration::from_secs(5))
        .unwrap();
        eventually(60, "the server to be healthy", || {
            let http = http.clone();
            async move {
                let r = http.get(format!("https://localhost:{port}/api/v1/health")).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
    };

    // Many addresses (the failure limits out of reach): only the bound on concurrent hashing
    // holds memory.
    let port = free_port();
    let mut limits_off = tls.to_vec();
    limits_off.push(("FEDQ_AUTH__FAILURES_PER_ADDRESS", "1000000".into()));
    limits_off.push(("FEDQ_AUTH__FAILURES_PER_USER", "1000000".into()));
    let mut child = spawn_server_process_with(&config, port, &log, "warn", &limits_off);
    wait_up(port).await;
    let hashing = flood(&format!("https://localhost:{port}"), child.id(), 1000).await;
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!(
        "1000 wrong logins, failure limits off: {:?}, RSS MiB before/peak/after {:?}",
        hashing.statuses, hashing.rss
    );
    let (before, peak, after) = hashing.rss;
    assert!(
        hashing.statuses.keys().all(|s| [401, 503].contains(s)),
        "wrong (401) or asked to come back (503): {:?}",
        hashing.statuses
    );
    assert!(hashing.statuses.get(&401).copied().unwrap_or(0) >= 20, "{:?}", hashing.statuses);
    // Two hashing threads keep 19 MiB each; a thousand open connections about 0.2 MiB each.
    // With 128 hashing threads instead this flood took the server to 12 GB, kept afterwards.
    assert!(peak < before + 350, "memory stays flat while hashing: {before} → {peak} MiB");
    assert!(after < before + 350, "and afterwards: {before} → {after} MiB");

    // One address, the default limits: 50 failures, then refused before hashing.
    let port = free_port();
    let mut defaults = tls.to_vec();
    // Time for the fifty checks however busy the machine is, so that none is answered 503.
    defaults.push(("FEDQ_AUTH__HASH_QUEUE_SECS", "300".into()));
    let mut child = spawn_server_process_with(&config, port, &log, "warn", &defaults);
    wait_up(port).await;
    let limited = flood(&format!("https://localhost:{port}"), child.id(), 1000).await;
    eprintln!(
        "1000 wrong logins, default limits: {:?}, RSS MiB before/peak/after {:?}",
        limited.statuses, limited.rss
    );
    let wrong = limited.statuses.get(&401).copied().unwrap_or(0);
    assert!(
        (50..=52).contains(&wrong),
        "about the address's 50 failures were checked: {:?}",
        limited.statuses
    );
    assert_eq!(limited.statuses.get(&429).copied().unwrap_or(0), 1000 - wrong, "{:?}", limited.statuses);
    assert_eq!(limited.retry_after, 1000 - wrong, "every refusal says when to retry");
    // The right password is refused too from this address, until the window ends.
    let http =
        fedq::tls::ClientTls { ca_file: Some("/var/lib/fedq-dev/tls/ca.pem".into()), ..Default::default() }
            .http_client("test", Duration::from_secs(30))
            .unwrap();
    let response = http
        .post(format!("https://localhost:{port}/api/v1/login"))
        .json(&serde_json::json!({ "username": "root", "password": ROOT_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "too_many_attempts");
    assert!(body["message"].as_str().unwrap().contains("from this address"), "{body}");
    child.kill().unwrap();
    child.wait().unwrap();
    support::attach_stopped(config, db_name, vhost).cleanup().await;
}

/// At the default level the server logs one line per request, except a node's routine
/// heartbeats (every few seconds per node, half of all lines otherwise), which it logs only
/// when they fail.
#[tokio::test]
async fn routine_heartbeats_stay_out_of_the_log_and_other_requests_take_one_line() {
    let (config, db_name, vhost) = prepare().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut child = spawn_server_process(&config, port, &log, "info");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let app = attach(config.clone(), db_name, vhost, addr).await;
    let org = app.org("registry-a").await;
    let node = app.node(org.org(), "node-a").await;
    let key = node["api_key"].as_str().unwrap();
    for _ in 0..5 {
        let (status, _) =
            app.call("POST", "/node/heartbeat", Some(key), Some(serde_json::json!({"version": "1"}))).await;
        assert_eq!(status, 200);
    }
    let (status, _) = app
        .call("POST", "/node/heartbeat", Some("not-a-key"), Some(serde_json::json!({"version": "1"})))
        .await;
    assert_eq!(status, 401);
    let (status, _) = app.call("GET", "/organizations", Some(&app.root_token), None).await;
    assert_eq!(status, 200);

    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("/node/heartbeat status=200"), 0, "{log}");
    assert_eq!(lines("/node/heartbeat status=401"), 1, "a failed heartbeat is logged: {log}");
    assert_eq!(lines("path=/api/v1/organizations status=200"), 1, "{log}");
    app.cleanup().await;
}
