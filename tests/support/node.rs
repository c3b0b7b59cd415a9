//! Node fixtures: a server (as in `mod.rs`), a researcher organization A, a data organization B
//! with a real node (in-process or as a `fedq node` process) running the `fedq/probe` image in
//! real Docker containers.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Once;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fedq::envelope::{self, MemoryReplayGuard, OpenPolicy, Route, SealOptions};
use fedq::ids::{CollaborationId, JobId, RunId, TaskId};
use fedq::keys::{Identity, Keyring};
use fedq::node::config::{ImageRule, Limits, NodeConfig, PeersSection, Policy};
use fedq::node::{RunningNode, start};
use fedq::protocol::{JobResult, JobStart, Kind, Payload, Requester};
use fedq::time::Timestamp;
use serde_json::{Value, json};

use super::{TestApp, eventually, spawn_app};

/// The probe image, as `scripts/images` tags it.
pub const PROBE: &str = "fedq/probe:0.1.0";

/// Builds the algorithm images once per test binary (quick when nothing changed).
pub fn ensure_images() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        super::ensure_services();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/images");
        let out = Command::new(script).arg("--with-probe").output().expect("scripts/images runs");
        assert!(out.status.success(), "scripts/images failed:\n{}", String::from_utf8_lossy(&out.stderr));
    });
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// A federation of two organizations with a node at B.
pub struct Fed {
    pub app: TestApp,
    pub a: Identity,
    pub b: Identity,
    pub collaboration: CollaborationId,
    pub researcher: String,
    pub registration: Value,
    pub config: NodeConfig,
    pub config_path: PathBuf,
    pub node: Option<RunningNode>,
    pub guard: NodeGuard,
    pub dir: tempfile::TempDir,
    keys: Keyring,
}

/// A submitted probe job.
pub struct Submitted {
    pub task: TaskId,
    pub run: RunId,
    pub job: JobId,
}

/// Registers a node for `org` at the server and writes its key and settings under `dir`;
/// returns its settings, the settings file (for `fedq node --config`) and the registration.
pub async fn register_node(
    app: &TestApp,
    org: &Identity,
    dir: &std::path::Path,
    limits: Limits,
    images: &[&str],
) -> (NodeConfig, PathBuf, Value) {
    let name = format!("t-{}", suffix());
    let registration = app.node(org.org(), &name).await;
    let key_file = dir.join("org.key");
    org.current().write_new(&key_file).unwrap();
    let password = registration["broker"]["password"].as_str().unwrap();
    let reach = fedq_test_kit::Reach {
        server_url: format!("http://{}", app.addr),
        server_tls: Default::default(),
        broker: "amqp://127.0.0.1:5672".into(),
        vhost: app.vhost.clone(),
        broker_tls: Default::default(),
    };
    let config = NodeConfig {
        limits,
        policy: Policy {
            images: images
                .iter()
                .map(|i| ImageRule { name: (*i).into(), digest: "*".into(), ..ImageRule::default() })
                .collect(),
            requesters: vec!["*".into()],
            share_logs: true,
            // Probe tests run at one or two organizations; the rule has its own tests.
            min_organizations: 1,
            ..Policy::default()
        },
        // Probe tests trust partners on first use; `Federation` pins every key instead.
        peers: PeersSection { trust_on_first_use: true, ..PeersSection::default() },
        metrics: fedq::metrics::MetricsSection { listen: Some("127.0.0.1:0".parse().unwrap()) },
        ..fedq_test_kit::node_config(&name, org.org(), &registration, &key_file, dir, &reach)
    };
    let config_path = dir.join("node.toml");
    let toml = to_toml(&config, password, registration["api_key"].as_str().unwrap(), &app.vhost);
    std::fs::write(&config_path, toml).unwrap();
    (config, config_path, registration)
}

impl Fed {
    /// Everything but the node, which `start_node` or `spawn_node_process` starts.
    pub async fn new(limits: Limits) -> Self {
        ensure_images();
        let app = spawn_app().await;
        let a = app.org("a").await;
        let b = app.org("b").await;
        let collaboration = app.collaboration("ab", &[a.org(), b.org()]).await;
        let researcher = app.user(a.org(), "ada", "researcher").await;
        let dir = tempfile::tempdir().unwrap();
        let (config, config_path, registration) =
            register_node(&app, &b, dir.path(), limits, &["fedq/probe"]).await;
        let name_for_guard = config.node.name.clone();
        let mut keys = Keyring::new();
        keys.insert(a.org(), a.current().public().clone());
        keys.insert(b.org(), b.current().public().clone());
        Self {
            app,
            a,
            b,
            collaboration,
            researcher,
            registration,
            config,
            config_path,
            node: None,
            guard: NodeGuard { name: name_for_guard, process: None },
            dir,
            keys,
        }
    }

    /// Test limits: small and quick.
    pub fn limits() -> Limits {
        Limits {
            memory_mib: 64,
            concurrent_jobs: 2,
            timeout_secs: 60,
            run_volume_mib: 64,
            // Tests share the machine's disk: the reserve is the deployment's concern.
            state_reserve_mib: 0,
            ..Limits::default()
        }
    }

    /// Starts the node in this process.
    pub async fn start_node(&mut self) {
        self.node = Some(start(self.config.clone()).await.expect("the node starts"));
    }

    /// Starts the node as a `fedq node` process.
    pub fn spawn_node_process(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_fedq"))
            .args(["node", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("node.log")).unwrap())
            .spawn()
            .expect("fedq node starts");
        self.guard.process = Some(child);
    }

    /// The node-local endpoint's address.
    pub fn endpoint(&self) -> std::net::SocketAddr {
        self.node.as_ref().expect("an in-process node").endpoint()
    }

    /// Submits a probe job at B with `steps`, in a new run.
    pub async fn submit(&self, steps: Value) -> Submitted {
        self.submit_image(PROBE, RunId::new(), steps).await
    }

    /// Submits a job at B running `image` with input `steps`, in `run`.
    pub async fn submit_image(&self, image: &str, run: RunId, steps: Value) -> Submitted {
        let (task, job) = (TaskId::new(), JobId::new());
        let route =
            Route { kind: Kind::JobStart, collaboration: self.collaboration, task, run, status: None };
        let sealed = self.job_start(&self.b, &route, job, image, &steps, &[self.b.org()]);
        let body = json!({
            "id": task, "run": run, "collaboration": self.collaboration, "image": image,
            "jobs": [{"id": job, "organization": self.b.org(), "envelope": STANDARD.encode(&sealed)}],
        });
        let (status, created) = self.app.call("POST", "/tasks", Some(&self.researcher), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        Submitted { task, run, job }
    }

    /// A `job_start` for `to`, requested by A's researcher, sealed by A.
    fn job_start(
        &self,
        to: &Identity,
        route: &Route,
        job: JobId,
        image: &str,
        steps: &Value,
        organizations: &[fedq::ids::OrgId],
    ) -> Vec<u8> {
        let payload = Payload::JobStart(JobStart {
            job,
            image: image.into(),
            requester: Requester::User { org: self.a.org(), user: "ada".into() },
            organizations: organizations.to_vec(),
            input: serde_bytes::ByteBuf::from(serde_json::to_vec(steps).unwrap()),
            return_log: true,
            log_head: None,
            on_behalf_of: Vec::new(),
        });
        envelope::seal(
            &self.a,
            to.org(),
            to.current().public(),
            route,
            &payload.to_bytes(),
            &SealOptions::default(),
            Timestamp::now(),
        )
        .unwrap()
        .bytes
    }

    /// Submits one task with a job at A (which no node runs: A's part is played by the test,
    /// through [`Fed::send_from_a`]) and a probe job at B with `steps`, in a new run: what a run
    /// message from A to B needs.
    pub async fn submit_with_a(&self, steps: Value) -> (Submitted, JobId) {
        let (task, run, job_a, job_b) = (TaskId::new(), RunId::new(), JobId::new(), JobId::new());
        let route =
            Route { kind: Kind::JobStart, collaboration: self.collaboration, task, run, status: None };
        let jobs: Vec<Value> = [(job_a, &self.a, json!([])), (job_b, &self.b, steps)]
            .into_iter()
            .map(|(job, org, steps)| {
                let sealed = self.job_start(org, &route, job, PROBE, &steps, &[self.a.org(), self.b.org()]);
                json!({"id": job, "organization": org.org(), "envelope": STANDARD.encode(&sealed)})
            })
            .collect();
        let body = json!({"id": task, "run": run, "collaboration": self.collaboration, "image": PROBE, "jobs": jobs});
        let (status, created) = self.app.call("POST", "/tasks", Some(&self.researcher), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        (Submitted { task, run, job: job_b }, job_a)
    }

    /// Sends run messages from A's job of `submitted` (see [`Fed::submit_with_a`]) to B, through
    /// a node of A registered for the purpose, as A's node would.
    pub async fn send_from_a(&self, submitted: &Submitted, job_a: JobId, messages: &[(&str, &[u8])]) {
        self.send_from_a_seen(submitted, job_a, messages, None).await;
    }

    /// As [`Fed::send_from_a`], with the transparency log's head A's node would seal in.
    pub async fn send_from_a_seen(
        &self,
        submitted: &Submitted,
        job_a: JobId,
        messages: &[(&str, &[u8])],
        log_head: Option<fedq::protocol::SeenHead>,
    ) {
        let name = format!("a-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let registration = self.app.node(self.a.org(), &name).await;
        let node_a = super::NodeBroker::connect(&self.app, &registration).await.unwrap();
        let route = Route {
            kind: Kind::RunMessage,
            collaboration: self.collaboration,
            task: submitted.task,
            run: submitted.run,
            status: None,
        };
        for (topic, body) in messages {
            let payload = Payload::RunMessage(fedq::protocol::RunMessage {
                from_job: job_a,
                topic: (*topic).into(),
                body: serde_bytes::ByteBuf::from(body.to_vec()),
                log_head: log_head.clone(),
            });
            let sealed = envelope::seal(
                &self.a,
                self.b.org(),
                self.b.current().public(),
                &route,
                &payload.to_bytes(),
                &SealOptions::default(),
                Timestamp::now(),
            )
            .unwrap();
            node_a.publish(&sealed.bytes).await.unwrap();
        }
        let _ = node_a.connection.close(0, "done".into()).await;
    }

    /// Waits for the job's result and opens it as the researcher's organization.
    pub async fn result(&self, task: TaskId) -> JobResult {
        let envelope = eventually(120, "the job's result", || async {
            let (status, body) = self
                .app
                .call("GET", &format!("/tasks/{task}/results?wait=10"), Some(&self.researcher), None)
                .await;
            assert_eq!(status, 200, "{body}");
            let result = body["results"].as_array()?.first()?.clone();
            Some(STANDARD.decode(result["envelope"].as_str()?).unwrap())
        })
        .await;
        let mut guard = MemoryReplayGuard::new();
        let opened = envelope::open(
            &envelope,
            &self.a,
            &self.keys,
            &mut guard,
            &OpenPolicy::default(),
            Timestamp::now(),
        )
        .expect("the result opens");
        match opened.decode().unwrap() {
            Payload::JobResult(result) => result,
            other => panic!("not a result: {other:?}"),
        }
    }

    /// Runs a probe and returns its result and what each step found.
    pub async fn probe(&self, steps: Value) -> (JobResult, Vec<Value>) {
        self.probe_image(PROBE, steps).await
    }

    /// As `probe`, with another image that runs the probe (a tag of `fedq/probe`).
    pub async fn probe_image(&self, image: &str, steps: Value) -> (JobResult, Vec<Value>) {
        let submitted = self.submit_image(image, RunId::new(), steps).await;
        let result = self.result(submitted.task).await;
        let found = serde_json::from_slice(&result.output).unwrap_or_default();
        (result, found)
    }

    /// The running container of `job`, by its label.
    pub fn container_of(&self, job: JobId) -> Option<String> {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=org.fedq.job={job}")])
            .output()
            .unwrap();
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!id.is_empty()).then_some(id)
    }

    /// Waits until the job's container runs; returns its id.
    pub async fn wait_running(&self, job: JobId) -> String {
        eventually(60, "the job's container to run", || async { self.container_of(job) }).await
    }

    /// Stops the node (in-process or process) and removes what the test created.
    pub async fn cleanup(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        drop(self.guard);
        self.app.cleanup().await;
    }
}

/// A test node's process and name: dropping it (a failed test too) stops the process and
/// removes its containers, volumes (detaching the loop devices of their run disks), network and
/// firewall rules, so that failures do not exhaust Docker's address pools or the loop devices.
pub struct NodeGuard {
    pub name: String,
    pub process: Option<Child>,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_docker_leftovers(&self.name);
    }
}

/// Removes everything Docker and the firewall hold for a test node, and the loop devices of run
/// disks whose test directory is gone (a node stopped mid-run leaves them attached to a deleted
/// file, which keeps its space until they are detached). Idempotent.
fn remove_docker_leftovers(name: &str) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker rm -f $(docker ps -aq --filter label=org.fedq.node={name}) 2>/dev/null; \
             for v in $(docker volume ls -q --filter label=org.fedq.node={name}); do \
               d=$(docker volume inspect -f '{{{{index .Options \"device\"}}}}' \"$v\"); \
               docker volume rm \"$v\" >/dev/null 2>&1; \
               case \"$d\" in /dev/loop*) losetup -d \"$d\" 2>/dev/null;; esac; \
             done; \
             docker network rm fedq-{name} 2>/dev/null; \
             losetup -a | grep '/state/runs/.*/volume.img (deleted))$' | cut -d: -f1 | \
               while read -r d; do losetup -d \"$d\" 2>/dev/null; done; true"
        ))
        .output();
    fedq_firewall_cleanup(name);
}

/// Removes a test node's firewall chain if its process died without doing so.
fn fedq_firewall_cleanup(node: &str) {
    use sha2::Digest as _;
    let tag = hex::encode(&sha2::Sha256::digest(node.as_bytes())[..5]);
    let script = format!(
        "for t in iptables ip6tables; do \
           for c in INPUT FORWARD DOCKER-USER; do \
             $t -w -S $c 2>/dev/null | grep -E -- '-j FEDQ-{tag}(-F)?$' | sed 's/^-A/-D/' | \
               while read -r rule; do $t -w $rule; done; \
           done; \
           for chain in FEDQ-{tag} FEDQ-{tag}-F; do $t -w -F $chain 2>/dev/null; $t -w -X $chain 2>/dev/null; done; \
         done; true"
    );
    let _ = Command::new("sh").arg("-c").arg(script).output();
}

/// The node's settings as a TOML file, for `fedq node --config`.
fn to_toml(config: &NodeConfig, broker_password: &str, api_key: &str, vhost: &str) -> String {
    let n = &config.node;
    let l = &config.limits;
    format!(
        r#"[node]
name = "{name}"
organization = "{org}"
key_file = "{key}"
state_dir = "{state}"
heartbeat_secs = {hb}
shutdown_grace_secs = {grace}

[server]
url = "{server}"
api_key = "{api_key}"

[broker]
url = "amqp://{user}:{broker_password}@127.0.0.1:5672/{vhost}"
username = "{user}"
server_user = "{server_user}"

[limits]
memory_mib = {memory}
concurrent_jobs = {jobs}
timeout_secs = {timeout}

[peers]
trust_on_first_use = true

[policy]
requesters = ["*"]
share_logs = true
min_organizations = 1
{images}"#,
        name = n.name,
        org = n.organization,
        key = n.key_file.display(),
        state = n.state_dir.display(),
        hb = n.heartbeat_secs,
        grace = n.shutdown_grace_secs,
        server = config.server.url,
        user = config.broker.username,
        server_user = config.broker.server_user,
        memory = l.memory_mib,
        jobs = l.concurrent_jobs,
        timeout = l.timeout_secs,
        images = config
            .policy
            .images
            .iter()
            .map(|i| format!(
                "[[policy.images]]\nname = \"{}\"\ndigest = \"{}\"\ndata = {:?}\n",
                i.name, i.digest, i.data
            ))
            .collect::<String>(),
    )
}
