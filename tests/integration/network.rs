//! A federation across a network: the server, RabbitMQ and PostgreSQL run inside a network
//! namespace this test creates, reached from this machine only across a veth pair, by address,
//! over TLS with certificates from a CA the test makes (and mutual TLS to RabbitMQ). Three
//! registries' nodes and the researcher's client run outside it.
//!
//! Asserted: Secure Sum completes; plain HTTP, AMQP and PostgreSQL to those addresses are refused
//! (by the clients' own rule, and by the services, which listen for TLS only there); a client
//! trusting another CA is refused with an error that names the certificate problem.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fedq::client::{Client, ClientError, Inputs, TaskSpec};
use fedq::ids::OrgId;
use fedq::keys::{FirstUse, Identity, KeyTrust, OrgKey};
use fedq::node::config::{ImageRule, Limits, NodeConfig, PeersSection, Policy};
use fedq::protocol::JobStatus;
use fedq::tls::{ClientTls, devca};
use serde_json::{Value, json};
use support::eventually;

const PASSWORD: &str = "network-test-password-1";

fn run(what: &str, command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn uid(user: &str) -> u32 {
    run("id", Command::new("id").args(["-u", user])).trim().parse().unwrap()
}

/// A network namespace joined to this machine by a veth pair, and the services started in it.
/// Dropping it stops them and removes the namespace, whatever happened in the test.
struct Namespace {
    name: String,
    /// This machine's end of the pair.
    host_ip: String,
    /// The namespace's end, where the services listen.
    ip: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
    rabbit_node: Option<String>,
}

impl Namespace {
    fn create() -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let name = format!("fedq-net-{tag}");
        let (host_if, ns_if) = (format!("fq{tag}h"), format!("fq{tag}n"));
        // A /30 of 10.231.0.0/16 that no interface of this machine uses yet.
        let used = run("ip addr", Command::new("ip").args(["-4", "-o", "addr"]));
        let third = (0..=255u32)
            .map(|i| (i + u32::from(uuid::Uuid::new_v4().as_bytes()[0])) % 256)
            .find(|n| !used.contains(&format!("10.231.{n}.")))
            .expect("a free 10.231.x.0/30");
        let (host_ip, ip) = (format!("10.231.{third}.1"), format!("10.231.{third}.2"));
        let dir = tempfile::tempdir().unwrap();
        let ns = Self {
            name: name.clone(),
            host_ip: host_ip.clone(),
            ip: ip.clone(),
            dir,
            children: Vec::new(),
            rabbit_node: None,
        };
        run("ip netns add", Command::new("ip").args(["netns", "add", &name]));
        run(
            "veth",
            Command::new("ip").args(["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]),
        );
        run("move veth", Command::new("ip").args(["link", "set", &ns_if, "netns", &name]));
        run(
            "host address",
            Command::new("ip").args(["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]),
        );
        run("host up", Command::new("ip").args(["link", "set", &host_if, "up"]));
        ns.exec_ok("lo up", &["ip", "link", "set", "lo", "up"]);
        ns.exec_ok("ns address", &["ip", "addr", "add", &format!("{ip}/30"), "dev", &ns_if]);
        ns.exec_ok("ns up", &["ip", "link", "set", &ns_if, "up"]);
        ns
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(args);
        command
    }

    fn exec_ok(&self, what: &str, args: &[&str]) -> String {
        run(what, &mut self.command(args))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// PostgreSQL listening on the namespace's address only, TLS only (`hostssl`), with a role
    /// and database for the server.
    fn start_postgres(&mut self, cert: &devca::Issued) {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .flatten()
            .map(|v| v.path().join("bin"))
            .max()
            .unwrap();
        let pg = self.path("pg");
        std::fs::create_dir_all(&pg).unwrap();
        let postgres = uid("postgres");
        std::os::unix::fs::chown(&pg, Some(postgres), Some(postgres)).unwrap();
        for file in [&cert.cert, &cert.key] {
            let copy = pg.join(file.file_name().unwrap());
            std::fs::copy(file, &copy).unwrap();
            std::os::unix::fs::chown(&copy, Some(postgres), Some(postgres)).unwrap();
        }
        let data = pg.join("data");
        let as_postgres = |tool: &str, args: &[&str]| {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(bin.join(tool)).args(args);
            command
        };
        let password_file = pg.join("pw");
        std::fs::write(&password_file, PASSWORD).unwrap();
        std::os::unix::fs::chown(&password_file, Some(postgres), None).unwrap();
        run(
            "initdb",
            &mut as_postgres(
                "initdb",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "fedq",
                    "--pwfile",
                    password_file.to_str().unwrap(),
                    "-A",
                    "scram-sha-256",
                    "--no-sync",
                ],
            ),
        );
        // TLS only, from the veth's /30; the local socket for the test's own setup.
        let network = format!("{}/30", self.ip);
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all scram-sha-256\nhostssl all all {network} scram-sha-256\nhostssl all all {}/32 scram-sha-256\n", self.host_ip),
        )
        .unwrap();
        let options = format!(
            "-c listen_addresses={ip} -k {pg} -c ssl=on -c ssl_cert_file={pg}/{cert} -c ssl_key_file={pg}/{key}",
            ip = self.ip,
            pg = pg.display(),
            cert = cert.cert.file_name().unwrap().to_str().unwrap(),
            key = cert.key.file_name().unwrap().to_str().unwrap(),
        );
        let log = pg.join("log");
        let mut start = self.command(&["runuser", "-u", "postgres", "--"]);
        start.arg(bin.join("pg_ctl")).args([
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
        run("pg_ctl start", &mut start);
        let mut create = self.command(&["runuser", "-u", "postgres", "--"]);
        create
            .arg(bin.join("psql"))
            .args(["-h", pg.to_str().unwrap(), "-U", "fedq", "-d", "postgres", "-c", "CREATE DATABASE fedq"])
            .env("PGPASSWORD", PASSWORD);
        run("create database", &mut create);
    }

    fn stop_postgres(&self) {
        let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") else { return };
        let Some(bin) = versions.flatten().map(|v| v.path().join("bin")).max() else { return };
        let data = self.path("pg").join("data");
        if data.exists() {
            let _ = self
                .command(&["runuser", "-u", "postgres", "--"])
                .arg(bin.join("pg_ctl"))
                .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
                .output();
        }
    }

    /// RabbitMQ with AMQPS on the namespace's address (client certificates required) and AMQP and
    /// the management API on the namespace's loopback only; a user and virtual host for the
    /// server.
    fn start_rabbitmq(&mut self, ca: &Path, cert: &devca::Issued) {
        let base = self.path("rabbit");
        std::fs::create_dir_all(&base).unwrap();
        let conf = format!(
            "listeners.tcp.1 = 127.0.0.1:5672\n\
             listeners.ssl.1 = {ip}:5671\n\
             management.tcp.ip = 127.0.0.1\n\
             management.tcp.port = 15672\n\
             ssl_options.cacertfile = {base}/ca.pem\n\
             ssl_options.certfile = {base}/broker.pem\n\
             ssl_options.keyfile = {base}/broker.key\n\
             ssl_options.verify = verify_peer\n\
             ssl_options.fail_if_no_peer_cert = true\n",
            ip = self.ip,
            base = base.display(),
        );
        std::fs::write(base.join("rabbitmq.conf"), conf).unwrap();
        std::fs::copy(ca, base.join("ca.pem")).unwrap();
        std::fs::copy(&cert.cert, base.join("broker.pem")).unwrap();
        std::fs::copy(&cert.key, base.join("broker.key")).unwrap();
        run("chown", Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(&base));
        let node = format!("fedq-{}@localhost", &self.name[9..]);
        let script = format!(
            "cd {b} && env RABBITMQ_NODENAME={node} RABBITMQ_CONFIG_FILE={b}/rabbitmq.conf \
             RABBITMQ_MNESIA_BASE={b}/mnesia RABBITMQ_LOG_BASE={b}/log RABBITMQ_PID_FILE={b}/pid \
             RABBITMQ_ENABLED_PLUGINS_FILE=/etc/rabbitmq/enabled_plugins rabbitmq-server -detached",
            b = base.display()
        );
        self.exec_ok("rabbitmq-server", &["su", "rabbitmq", "-s", "/bin/sh", "-c", &script]);
        self.rabbit_node = Some(node.clone());
        let ctl = |args: &[&str]| {
            let mut all = vec!["rabbitmqctl", "-n", node.as_str()];
            all.extend_from_slice(args);
            self.exec_ok("rabbitmqctl", &all)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !self
            .command(&["rabbitmqctl", "-n", &node, "await_startup", "--timeout", "120"])
            .output()
            .unwrap()
            .status
            .success()
        {
            assert!(std::time::Instant::now() < deadline, "the namespace's broker did not start");
            std::thread::sleep(Duration::from_millis(500));
        }
        ctl(&["add_user", "fedq-server", PASSWORD]);
        ctl(&["set_user_tags", "fedq-server", "administrator"]);
        ctl(&["add_vhost", "fedq"]);
        ctl(&["set_permissions", "-p", "fedq", "fedq-server", ".*", ".*", ".*"]);
    }

    /// `fedq server` inside the namespace, on its address, with `env`.
    fn start_server(&mut self, env: &[(&str, String)]) {
        let log = std::fs::File::create(self.path("server.log")).unwrap();
        let child = self
            .command(&[env!("CARGO_BIN_EXE_fedq"), "server"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(node) = &self.rabbit_node {
            let _ = self.command(&["rabbitmqctl", "-n", node, "stop"]).output();
        }
        self.stop_postgres();
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

fn trusting(ca: &Path) -> ClientTls {
    ClientTls { ca_file: Some(ca.to_owned()), ..ClientTls::default() }
}

fn with_identity(ca: &Path, identity: &devca::Issued) -> ClientTls {
    ClientTls { cert_file: Some(identity.cert.clone()), key_file: Some(identity.key.clone()), ..trusting(ca) }
}

fn write_patients(path: &Path, rows: u64) {
    use std::fmt::Write as _;
    let mut csv = String::from("id,age\n");
    for i in 0..rows {
        let _ = writeln!(csv, "p{i:06},{}", 20 + i % 70);
    }
    std::fs::write(path, csv).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_sum_across_a_network_over_tls() {
    support::node::ensure_images();
    let mut ns = Namespace::create();
    let ip = ns.ip.clone();

    // The test's CA, and certificates for the namespace's address and for every client of the
    // broker (mutual TLS).
    let ca_dir = ns.path("ca");
    let ca = devca::create_ca(&ca_dir, "network test CA").unwrap().cert;
    let service = devca::issue(&ca_dir, "service", std::slice::from_ref(&ip), &ca_dir).unwrap();
    let server_identity = devca::issue(&ca_dir, "server-client", &["fedq-server".into()], &ca_dir).unwrap();
    ns.start_postgres(&service);
    ns.start_rabbitmq(&ca, &service);

    let base = format!("https://{ip}:8443");
    ns.start_server(&[
        ("FEDQ_HTTP__LISTEN", format!("{ip}:8443")),
        ("FEDQ_HTTP__TLS_CERT", service.cert.display().to_string()),
        ("FEDQ_HTTP__TLS_KEY", service.key.display().to_string()),
        ("FEDQ_DATABASE__URL", format!("postgres://fedq:{PASSWORD}@{ip}:5432/fedq?sslmode=require")),
        ("FEDQ_DATABASE__TLS__CA_FILE", ca.display().to_string()),
        ("FEDQ_BROKER__URL", format!("amqps://fedq-server:{PASSWORD}@{ip}:5671/fedq")),
        ("FEDQ_BROKER__VHOST", "fedq".into()),
        ("FEDQ_BROKER__TLS__CA_FILE", ca.display().to_string()),
        ("FEDQ_BROKER__TLS__CERT_FILE", server_identity.cert.display().to_string()),
        ("FEDQ_BROKER__TLS__KEY_FILE", server_identity.key.display().to_string()),
        ("FEDQ_BROKER__MANAGEMENT_URL", "http://127.0.0.1:15672".into()),
        ("FEDQ_BROKER__MANAGEMENT_USER", "fedq-server".into()),
        ("FEDQ_BROKER__MANAGEMENT_PASSWORD", PASSWORD.into()),
        ("FEDQ_BOOTSTRAP__ROOT_USERNAME", "root".into()),
        ("FEDQ_BOOTSTRAP__ROOT_PASSWORD", PASSWORD.into()),
        ("FEDQ_TRANSPARENCY__KEY_FILE", ns.path("transparency.key").display().to_string()),
    ]);
    let tls = trusting(&ca);
    let health = tls.http_client("test", Duration::from_secs(5)).unwrap();
    eventually(90, "the server in the namespace to be healthy over HTTPS", || async {
        let r = health.get(format!("{base}/api/v1/health")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // Plain text to the namespace's addresses: the clients refuse it themselves...
    let refused = Client::login(&format!("http://{ip}:8443"), &ClientTls::default(), "root", PASSWORD).await;
    let refused = refused.unwrap_err().to_string();
    assert!(refused.contains("https://") && refused.contains("allow_plaintext"), "{refused}");
    // ...and the services, which listen there for TLS only, refuse it when forced.
    let plain = ClientTls { allow_plaintext: true, ..ClientTls::default() };
    assert!(Client::login(&format!("http://{ip}:8443"), &plain, "root", PASSWORD).await.is_err());
    let amqp = lapin::Connection::connect(
        &format!("amqp://fedq-server:{PASSWORD}@{ip}:5672/fedq"),
        lapin::ConnectionProperties::default(),
    )
    .await;
    assert!(amqp.is_err(), "no plain AMQP listener on the network");
    let pg =
        tokio_postgres::connect(&format!("postgres://fedq:{PASSWORD}@{ip}:5432/fedq"), tokio_postgres::NoTls)
            .await;
    let pg = pg.err().expect("plain PostgreSQL is refused");
    let pg = pg.as_db_error().map(|e| e.message().to_owned()).unwrap_or_else(|| pg.to_string());
    assert!(pg.contains("no encryption") || pg.contains("pg_hba"), "{pg}");
    // A certificate from another CA is refused with a clear error.
    let other = ns.path("other-ca");
    let other_ca = devca::create_ca(&other, "another CA").unwrap().cert;
    let err = Client::login(&base, &trusting(&other_ca), "root", PASSWORD).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }));
    assert!(err.to_string().contains("UnknownIssuer") && err.to_string().contains("--ca-file"), "{err}");

    // The federation, set up across the veth pair.
    let root = Client::login(&base, &tls, "root", PASSWORD).await.expect("root logs in over HTTPS");
    let mut orgs: Vec<(Identity, String)> = Vec::new();
    for i in 0..3 {
        let name = format!("registry-{i}");
        let body = root.post("/organizations", &json!({"name": name})).await.unwrap();
        let org: OrgId = body["id"].as_str().unwrap().parse().unwrap();
        let admin = format!("admin-{i}");
        root.post(
            "/users",
            &json!({"username": admin, "password": PASSWORD, "role": "org_admin", "organization": org}),
        )
        .await
        .unwrap();
        let key = OrgKey::generate();
        let as_admin = Client::login(&base, &tls, &admin, PASSWORD).await.unwrap();
        as_admin
            .put(
                &format!("/organizations/{org}/public-key"),
                &json!({"public_key": key.public().to_string()}),
            )
            .await
            .unwrap();
        orgs.push((Identity::new(org, key), name));
    }
    let ids: Vec<OrgId> = orgs.iter().map(|(o, _)| o.org()).collect();
    let collaboration =
        root.post("/collaborations", &json!({"name": "registries", "organizations": ids})).await.unwrap();
    let collaboration = collaboration["id"].as_str().unwrap().parse().unwrap();
    // The researcher is created by her organization's administrator: root creates only that one.
    let admin_0 = Client::login(&base, &tls, "admin-0", PASSWORD).await.unwrap();
    admin_0
        .post(
            "/users",
            &json!({"username": "ada", "password": PASSWORD, "role": "researcher", "organization": ids[0]}),
        )
        .await
        .unwrap();
    let pins: std::collections::BTreeMap<_, _> =
        orgs.iter().map(|(o, _)| (o.org(), vec![o.current().id().to_string()])).collect();

    let mut counts = Vec::new();
    let mut nodes = Vec::new();
    let mut guards = Vec::new();
    for (i, (org, name)) in orgs.iter().enumerate() {
        let dir = ns.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let registration = root
            .post("/nodes", &json!({"organization": org.org(), "name": format!("{name}-node")}))
            .await
            .unwrap();
        let broker = &registration["broker"];
        let node_url = broker["url"].as_str().unwrap();
        assert!(node_url.starts_with("amqps://"), "nodes are told to use TLS: {node_url}");
        let host_port = node_url.trim_start_matches("amqps://").trim_end_matches('/');
        let vhost = broker["vhost"].as_str().unwrap();
        let identity =
            devca::issue(&ca_dir, &format!("{name}-client"), &[format!("{name}-node")], &dir).unwrap();
        let key_file = dir.join("org.key");
        org.current().write_new(&key_file).unwrap();
        let count = 1_000 + u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 7 + i as u64;
        counts.push(count);
        write_patients(&dir.join("patients.csv"), count);
        let node_name = format!("n{}-{i}", &ns.name[9..]);
        guards.push(support::node::NodeGuard { name: node_name.clone(), process: None });
        let reach = fedq_test_kit::Reach {
            server_url: base.clone(),
            server_tls: tls.clone(),
            broker: format!("amqps://{host_port}"),
            vhost: vhost.to_owned(),
            broker_tls: with_identity(&ca, &identity),
        };
        let config = NodeConfig {
            limits: Limits { memory_mib: 64, timeout_secs: 120, ..Limits::default() },
            policy: Policy {
                images: vec![ImageRule {
                    name: "fedq/secure-sum".into(),
                    digest: "*".into(),
                    data: vec!["patients".into()],
                    ..ImageRule::default()
                }],
                requesters: vec![ids[0].to_string()],
                ..Policy::default()
            },
            data: [("patients".to_owned(), dir.join("patients.csv"))].into_iter().collect(),
            peers: PeersSection { pins: pins.clone(), ..PeersSection::default() },
            ..fedq_test_kit::node_config(&node_name, org.org(), &registration, &key_file, &dir, &reach)
        };
        nodes
            .push(fedq::node::start(config).await.expect("the node starts against the namespace's services"));
    }

    let trust = KeyTrust::in_memory(FirstUse::Refuse);
    for (org, _) in &orgs {
        trust.trust(org.org(), org.current().id()).unwrap();
    }
    let researcher =
        Client::login(&base, &tls, "ada", PASSWORD).await.unwrap().with_trust(std::sync::Arc::new(trust));
    let spec = TaskSpec {
        collaboration,
        image: "fedq/secure-sum:0.1.0".into(),
        organizations: ids.clone(),
        inputs: Inputs::Same(json!({"data": "patients", "share": true}).to_string().into_bytes()),
        name: "secure sum across the network".into(),
        return_log: false,
    };
    let created = researcher.create_task(&orgs[0].0, &spec).await.expect("the task is created");
    let results = researcher
        .wait_and_open(&orgs[0].0, collaboration, created.task, Duration::from_secs(240))
        .await
        .expect("the results open");
    let total: u64 = counts.iter().sum();
    assert_eq!(results.len(), 3, "{}", ns.server_log());
    for result in &results {
        assert_eq!(result.status, JobStatus::Completed, "{result:?}");
        let output: Value = serde_json::from_slice(&result.output).unwrap();
        assert_eq!(output["N"], total, "{output}");
    }
    for node in nodes {
        node.shutdown().await;
    }
    drop(guards);
    drop(ns);
}
