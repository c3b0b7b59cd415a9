//! Fault: PostgreSQL stops for 10 seconds while envelopes flow. The test runs the server on a
//! PostgreSQL cluster of its own (initdb in a temporary directory, its own port), so stopping it
//! touches no other test.
//!
//! Injected: `pg_ctl stop -m fast` after 50 run messages were routed; 100 more are published
//! during the outage; `pg_ctl start` 10 s later. Asserted: during the outage the router forwards
//! nothing and the REST API answers 503 `unavailable`; afterwards all 150 arrive at the
//! recipient exactly once, none is dead-lettered, and the routing log holds each once; a
//! malformed envelope published during the outage is dead-lettered once with its reason (not
//! dropped by the broker's delivery limit while the refusal could not be recorded).

use crate::support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{TwoOrgRun, attach, eventually, management, prepare};

struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> Self {
        support::ensure_services();
        let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
        let bin = versions.flatten().map(|v| v.path().join("bin")).max().expect("a PostgreSQL version");
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(postgres_uid()), None).unwrap();
        let port = support::free_port();
        let pg = Self { dir, bin, port };
        pg.as_postgres("initdb", &["-D", &pg.data(), "-A", "trust", "-U", "fedq", "--no-sync"]);
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .expect("runuser runs");
        assert!(out.status.success(), "{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn start_again(&self) {
        let options =
            format!("-p {} -c listen_addresses=127.0.0.1 -k {}", self.port, self.dir.path().display());
        let log = self.dir.path().join("log").display().to_string();
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "start"]);
    }

    fn stop(&self) {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://fedq@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

fn postgres_uid() -> u32 {
    let out = Command::new("id").args(["-u", "postgres"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_holds_traffic_and_loses_nothing() {
    let pg = PrivatePostgres::start();
    let (admin, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.batch_execute("CREATE DATABASE fedq_fault").await.unwrap();
    let (mut config, db_name, vhost) = prepare().await;
    config.database.url = secrecy::SecretString::from(pg.url("fedq_fault"));
    let server = fedq::server::start(config.clone()).await.expect("the server starts");
    let mut app = attach(config, db_name, vhost, server.addr).await;
    app.server = Some(server);
    let run = TwoOrgRun::start(&app).await;

    let mut seen = HashSet::new();
    let receive = async |seen: &mut HashSet<String>, n: usize| {
        for _ in 0..n {
            let delivery = run.node_a.next(60).await;
            let id = delivery.properties.message_id().as_ref().expect("a message id").to_string();
            assert!(seen.insert(id), "an envelope arrived twice");
        }
    };
    for i in 0..50 {
        run.node_b.publish(&run.b_to_a(format!("before {i}").as_bytes())).await.unwrap();
    }
    receive(&mut seen, 50).await;

    pg.stop();
    let outage = Instant::now();
    let (status, body) = app.call("GET", "/organizations", Some(&app.root_token), None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "unavailable");
    assert_eq!(body["message"], "the database is unavailable; retry later");
    for i in 0..100 {
        run.node_b.publish(&run.b_to_a(format!("during {i}").as_bytes())).await.unwrap();
    }
    // And one the router must refuse: recording the refusal needs the database too.
    run.node_b.publish(b"not an envelope").await.unwrap();
    // The outage lasts 10 s; nothing is forwarded meanwhile.
    while outage.elapsed() < Duration::from_secs(10) {
        assert!(run.node_a.try_next().await.is_none(), "an envelope was forwarded without being logged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ingress = management().queue(&app.vhost, "fedq.ingress").await.unwrap().unwrap();
    assert_eq!(ingress.messages, 101, "every envelope of the outage waits in ingress (ready or held)");
    pg.start_again();

    receive(&mut seen, 100).await;
    assert_eq!(seen.len(), 150);
    eventually(30, "the ingress queue to drain", || async {
        let q = management().queue(&app.vhost, "fedq.ingress").await.ok()??;
        (q.messages == 0).then_some(())
    })
    .await;
    assert!(run.node_a.try_next().await.is_none(), "no envelope arrives twice");
    let sql = tokio_postgres::connect(&pg.url("fedq_fault"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(sql.1);
    let sql = sql.0;
    let logged: i64 = sql
        .query_one("SELECT count(*) FROM routing_log WHERE kind = 'run_message'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 150, "each envelope logged once");
    let dead: Vec<String> = eventually(30, "the refused envelope to be recorded", || async {
        let rows = sql.query("SELECT reason_code FROM dead_letters", &[]).await.ok()?;
        (!rows.is_empty()).then(|| rows.iter().map(|r| r.get(0)).collect())
    })
    .await;
    assert_eq!(dead, ["malformed"], "only the refused envelope is dead-lettered, with its reason");
    let dead_queue = management().queue(&app.vhost, "fedq.dead-letters").await.unwrap().unwrap();
    assert_eq!(dead_queue.messages, 1);
    let (status, _) = app.call("GET", "/organizations", Some(&app.root_token), None).await;
    assert_eq!(status, 200, "the API answers again");
    app.cleanup().await;
    drop(pg);
}
