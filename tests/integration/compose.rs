//! The docker-compose deployment (`compose/docker-compose.yml`) started for real, with the
//! images `scripts/compose-images` builds on this machine from Debian's packages (RabbitMQ,
//! PostgreSQL) and the server's binary: the stack comes up healthy over TLS, three nodes on the
//! host enroll against it with the command line and run Secure Sum; a Secure Sum whose ring
//! messages wait in the broker while the server container is stopped completes once it is back;
//! the whole stack stopped and started again (its volumes kept) still knows the federation and
//! runs the next task. Everything runs under a compose project of the test's own, on ports of
//! its own, and is removed (`down -v`) even when an assertion fails.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use support::fedq_ok as fedq;
use support::newcomer::{Registries, learned, nodes_online, secure_sum_args, three_registries};

const ROOT_PASSWORD: &str = "compose-root-password";

/// A compose project in a directory of its own, taken down with its volumes when dropped.
struct Stack {
    dir: tempfile::TempDir,
    project: String,
    files: Vec<&'static str>,
}

impl Stack {
    fn compose_dir(&self) -> PathBuf {
        self.dir.path().join("compose")
    }

    fn compose(&self, args: &[&str]) -> Output {
        let mut command = Command::new("docker-compose");
        command.arg("-p").arg(&self.project);
        for file in &self.files {
            command.args(["-f", file]);
        }
        command.args(args).current_dir(self.compose_dir()).output().expect("docker-compose runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The health of a service's container (`healthy`, `starting`, …; `exited` when stopped).
    fn health(&self, service: &str) -> String {
        let id = self.ok(&["ps", "-q", service]).trim().to_owned();
        if id.is_empty() {
            return "absent".into();
        }
        let out = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                &id,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match text.split_once(' ') {
            Some(("running", health)) => health.to_owned(),
            Some((state, _)) => state.to_owned(),
            None => text,
        }
    }

    async fn wait_healthy(&self, services: &[&str], secs: u64) {
        for service in services {
            support::eventually(secs, &format!("compose service {service} to be healthy"), || async {
                (self.health(service) == "healthy").then_some(())
            })
            .await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A failed test shows what the services said before they go.
        if std::thread::panicking() {
            let logs = self.compose(&["logs", "--no-color", "--tail", "40"]);
            eprintln!("docker-compose logs:\n{}", String::from_utf8_lossy(&logs.stdout));
        }
        let out = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
        if !out.status.success() {
            eprintln!("docker-compose down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A port on loopback that nothing listens on, below the ephemeral range that port 0 draws from
/// (so that no other test's listener takes it meanwhile).
fn free_low_port() -> u16 {
    loop {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            return port;
        }
    }
}

/// The compose files and what they mount, as in a checkout (compose/ beside broker/), with a
/// development CA's certificates and the secrets in compose/.env.
fn stage(dir: &Path, http_port: u16, amqp_port: u16, server_image: &str, more_env: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = dir.join("compose");
    std::fs::create_dir_all(&compose).unwrap();
    std::fs::create_dir_all(dir.join("broker")).unwrap();
    for file in [
        "docker-compose.yml",
        "docker-compose.cluster.yml",
        "rabbitmq.conf",
        "rabbitmq-cluster.conf",
        "server.toml",
        "postgres-init/10-fedq-role.sh",
    ] {
        let to = compose.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo.join("compose").join(file), to).unwrap();
    }
    std::fs::copy(repo.join("broker/definitions.json"), dir.join("broker/definitions.json")).unwrap();
    let ca = dir.join("ca");
    let d = dir.to_str().unwrap();
    fedq(dir, &["tls", "dev-ca", "--dir", ca.to_str().unwrap(), "--name", "compose test CA"], None);
    for (name, out) in [("server", "compose/tls/server"), ("rabbitmq", "compose/tls/rabbitmq")] {
        let out = format!("{d}/{out}");
        fedq(
            dir,
            &[
                "tls",
                "issue",
                "--ca-dir",
                ca.to_str().unwrap(),
                "--name",
                name,
                "--out-dir",
                &out,
                "--host",
                "localhost",
            ],
            None,
        );
    }
    std::fs::copy(ca.join("ca.pem"), compose.join("tls/rabbitmq/ca.pem")).unwrap();
    // The server runs as uid 10001 in its container (compose/README.md, "Certificates").
    std::os::unix::fs::chown(compose.join("tls/server/server.key"), Some(10001), None).unwrap();
    let env = format!(
        "DB_PASSWORD=db-{pw}\nBROKER_PASSWORD=broker-{pw}\nBROKER_ADMIN_PASSWORD=admin-{pw}\nROOT_PASSWORD={ROOT_PASSWORD}\n\
         NODE_AMQP_URL=amqps://localhost:{amqp_port}\nHTTP_PORT={http_port}\nAMQP_PORT={amqp_port}\n\
         ERLANG_COOKIE=cookie-{pw}\nRABBITMQ_IMAGE=fedq/rabbitmq:bookworm\nPOSTGRES_IMAGE=fedq/postgres:bookworm\n\
         SERVER_IMAGE={server_image}\n{more_env}",
        pw = uuid::Uuid::new_v4().simple(),
    );
    std::fs::write(compose.join(".env"), env).unwrap();
    ca.join("ca.pem")
}

/// The images: the algorithm images of the nodes, and the compose images with this build's
/// `fedq` in the server's (under a tag of the test's own).
fn build_images(server_image: &str) {
    support::node::ensure_images();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/compose-images"))
        .args(["--binary", env!("CARGO_BIN_EXE_fedq"), "--server-tag", server_image])
        .output()
        .expect("scripts/compose-images runs");
    assert!(out.status.success(), "scripts/compose-images: {}", String::from_utf8_lossy(&out.stderr));
}

/// A compose deployment up and healthy with three registries enrolled against it. Fields drop
/// in order: the nodes, then the stack (`down -v`), then the test's server image.
struct Deployment {
    registries: Registries,
    stack: Stack,
    _image: ImageGuard,
    /// The sum of the registries' counts, which every registry must learn.
    total: u64,
}

impl Deployment {
    /// Builds the images, starts the compose `files` (with a free port for each of
    /// `more_ports`), waits for `services` to be healthy and enrolls three registries holding
    /// `counts` patients.
    async fn start(
        files: Vec<&'static str>,
        more_ports: &[&str],
        services: &[&str],
        counts: [usize; 3],
    ) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let server_image = format!("fedq/server:test-{tag}");
        build_images(&server_image);
        let image = ImageGuard(server_image.clone());
        let (http_port, amqp_port) = (free_low_port(), free_low_port());
        let more: String = more_ports.iter().map(|name| format!("{name}={}\n", free_low_port())).collect();
        let stack = Stack { dir: tempfile::tempdir().unwrap(), project: format!("fedq-test-{tag}"), files };
        let ca = stage(stack.dir.path(), http_port, amqp_port, &server_image, &more);

        let started = Instant::now();
        stack.ok(&["up", "-d"]);
        stack.wait_healthy(services, 300).await;
        eprintln!("docker-compose up to a healthy server: {:.1?}", started.elapsed());

        let server = format!("https://localhost:{http_port}");
        let work = stack.dir.path().join("work");
        let registries = three_registries(&server, Some(&ca), ROOT_PASSWORD, &work, counts);
        nodes_online(&registries.root, 3).await;
        let total = counts.iter().sum::<usize>() as u64;
        Self { registries, stack, _image: image, total }
    }

    /// The researcher's `fedq` with `args`; its standard output.
    fn fedq(&self, args: &[&str]) -> String {
        fedq(&self.registries.researcher, args, None)
    }

    /// Secure Sum over the three registries: with `extra` (`--wait`…), JSON out.
    fn secure_sum(&self, extra: &[&str]) -> String {
        let mut args = secure_sum_args(&self.registries.key);
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push("--json".into());
        self.fedq(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// A Secure Sum waited for; what every registry learned is the total.
    fn secure_sum_done(&self) {
        let out = self.secure_sum(&["--wait", "--timeout", "120"]);
        assert_eq!(learned(&out), vec![self.total; 3], "{out}");
    }

    /// A Secure Sum created, not waited for: its task id.
    fn secure_sum_created(&self) -> String {
        let created: serde_json::Value = serde_json::from_str(&self.secure_sum(&[])).unwrap();
        created["task"].as_str().unwrap().to_owned()
    }

    /// `fedq result` of `task`, waiting up to two minutes.
    fn result(&self, task: &str) -> String {
        let key = self.registries.key.to_str().unwrap();
        self.fedq(&["result", task, "--json", "--timeout", "120", "--key", key])
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_deployment_runs_secure_sum_and_keeps_queued_work_across_restarts() {
    let services = ["rabbitmq", "postgres", "server"];
    let d = Deployment::start(vec!["docker-compose.yml"], &[], &services, [10, 11, 12]).await;
    d.secure_sum_done();

    // Least privilege: the server's database role is no superuser; its AMQP user has no tag,
    // and the management API's administrator is another user.
    let psql = "/usr/lib/postgresql/15/bin/psql";
    let sql = "SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname IN ('fedq', 'postgres') ORDER BY 1";
    let roles = d.stack.ok(&["exec", "-T", "-u", "postgres", "postgres", psql, "-d", "fedq", "-tAc", sql]);
    assert_eq!(roles.trim(), "fedq|f|f\npostgres|t|t", "{roles}");
    let users = d.stack.ok(&["exec", "-T", "rabbitmq", "rabbitmqctl", "list_users", "-q"]);
    let tags = |user: &str| users.lines().find(|l| l.starts_with(&format!("{user}\t"))).map(str::to_owned);
    assert_eq!(tags("fedq-server").as_deref(), Some("fedq-server\t[]"), "{users}");
    assert_eq!(tags("fedq-admin").as_deref(), Some("fedq-admin\t[administrator]"), "{users}");

    // Queued work: the task is created, then the server container stops; the ring's messages
    // wait in the broker's ingress queue until it is back.
    let task = d.secure_sum_created();
    d.stack.ok(&["stop", "-t", "10", "server"]);
    assert_eq!(d.stack.health("server"), "exited");
    d.stack.ok(&["start", "server"]);
    d.stack.wait_healthy(&["server"], 120).await;
    let out = d.result(&task);
    assert_eq!(learned(&out), vec![d.total; 3], "the task held while the server was stopped: {out}");

    // The whole stack stopped and started: the volumes keep the federation; nodes reconnect.
    d.stack.ok(&["stop", "-t", "10"]);
    for service in services {
        assert_eq!(d.stack.health(service), "exited", "{service}");
    }
    let restarted = Instant::now();
    d.stack.ok(&["start"]);
    d.stack.wait_healthy(&services, 180).await;
    eprintln!("docker-compose start to a healthy server: {:.1?}", restarted.elapsed());
    nodes_online(&d.registries.root, 3).await;
    let listed = d.fedq(&["task", "list", "--json"]);
    assert!(listed.contains(&task), "the tasks from before the restart are kept: {listed}");
    d.secure_sum_done();
}

/// Removes the test's server image when dropped.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// The clustered variant (`docker-compose.cluster.yml`): three broker nodes and two server
/// replicas come up healthy; Secure Sum runs; a broker node, the one the second replica prefers,
/// is stopped while a Secure Sum is under way, and the task completes (its queues are quorum
/// queues on all three nodes; the replica moves to another node).
#[tokio::test(flavor = "multi_thread")]
async fn the_clustered_compose_deployment_loses_a_broker_node_mid_run() {
    let d = Deployment::start(
        vec!["docker-compose.yml", "docker-compose.cluster.yml"],
        &["AMQP_PORT_2", "AMQP_PORT_3", "HTTP_PORT_2"],
        &["rabbitmq", "rabbitmq-2", "rabbitmq-3", "postgres", "server", "server-2"],
        [3, 4, 5],
    )
    .await;
    d.secure_sum_done();
    // The cluster's Erlang cookie is in each node's data directory, not on a command line.
    for node in ["rabbitmq", "rabbitmq-2", "rabbitmq-3"] {
        let processes = d.stack.ok(&["top", node]);
        assert!(!processes.contains("setcookie") && !processes.contains("cookie-"), "{node}: {processes}");
    }

    let task = d.secure_sum_created();
    d.stack.ok(&["stop", "-t", "5", "rabbitmq-2"]);
    assert_eq!(d.stack.health("rabbitmq-2"), "exited");
    let out = d.result(&task);
    assert_eq!(learned(&out), vec![d.total; 3], "the task ran on with a broker node gone: {out}");
    // The second replica's own answer (Docker's health status would lag by its retries).
    support::eventually(60, "the second replica to reach another broker node", || async {
        let out = d.stack.compose(&[
            "exec",
            "-T",
            "server-2",
            "curl",
            "-fsSk",
            "https://localhost:8443/api/v1/health",
        ]);
        let health: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (health["broker"] == true).then_some(())
    })
    .await;
}
