//! The integration-test harness: every test gets its own PostgreSQL database and RabbitMQ
//! virtual host, and a server on a free port, started in-process against the real services.
//! The services are started by `scripts/services` (which `scripts/test` runs first), never from
//! inside a test: a test only checks that they answer and says what to run when they do not.

#![allow(dead_code)]

pub mod browser;
pub mod dashboard;
pub mod federation;
pub mod newcomer;
pub mod node;

use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fedq::broker::management::{Management, Permissions};
use fedq::envelope::{self, Route, SealOptions};
use fedq::ids::{CollaborationId, JobId, OrgId, RunId, TaskId};
use fedq::keys::{Identity, OrgKey, PublicKey};
use fedq::protocol::{JobStart, Kind, Payload, Requester};
use fedq::server::config::{HttpConfig, ServerConfig};
use fedq::server::{RunningServer, start};
use fedq::time::Timestamp;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::SecretString;
use serde_json::{Value, json};

pub const PG_ADMIN_URL: &str = "postgres://fedq:fedq-dev@127.0.0.1:5432/postgres";
pub const ROOT_PASSWORD: &str = "root-password-for-tests";

/// Checks once per test binary that the services the tests need are up, and fails with what
/// to run when they are not.
pub fn ensure_services() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let listening = [
            ("PostgreSQL", "127.0.0.1:5432"),
            ("RabbitMQ", "127.0.0.1:5672"),
            ("RabbitMQ over TLS", "127.0.0.1:5671"),
            ("RabbitMQ's management API", "127.0.0.1:15672"),
        ];
        for (what, addr) in listening {
            let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
            assert!(
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok(),
                "{what} is not listening on {addr}: run scripts/services first (scripts/test does)"
            );
        }
        for (what, path) in
            [("Docker", "/var/run/docker.sock"), ("the development CA", "/var/lib/fedq-dev/tls/ca.pem")]
        {
            assert!(
                std::path::Path::new(path).exists(),
                "{what} is missing ({path}): run scripts/services first (scripts/test does)"
            );
        }
    });
}

pub fn management() -> Management {
    Management::new("http://127.0.0.1:15672", "guest", SecretString::from("guest"))
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A server with its own database and virtual host.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub server: Option<RunningServer>,
    pub config: ServerConfig,
    pub db_name: String,
    pub vhost: String,
    pub http: reqwest::Client,
    pub root_token: String,
    /// Each organization's first administrator's token: root creates only that user, the
    /// organization's other users are created by it.
    admins: std::sync::Mutex<std::collections::HashMap<OrgId, String>>,
    /// Whether `cleanup` removed the database and virtual host; if not, `Drop` does.
    cleaned: bool,
}

pub async fn spawn_app() -> TestApp {
    let (config, db_name, vhost) = prepare().await;
    let server = start(config.clone()).await.expect("the server starts");
    let mut app = attach(config, db_name, vhost, server.addr).await;
    app.server = Some(server);
    app
}

/// A `TestApp` for a server that runs elsewhere (a `fedq server` process) at `addr`.
pub async fn attach(
    config: ServerConfig,
    db_name: String,
    vhost: String,
    addr: std::net::SocketAddr,
) -> TestApp {
    let mut app = attach_stopped(config, db_name, vhost);
    app.addr = addr;
    app.wait_healthy().await;
    app.root_token = app.login("root", ROOT_PASSWORD).await;
    app
}

/// A `TestApp` for a server that has stopped (or never ran), for `cleanup`.
pub fn attach_stopped(config: ServerConfig, db_name: String, vhost: String) -> TestApp {
    TestApp {
        addr: config.http.listen,
        server: None,
        config,
        db_name,
        vhost,
        http: reqwest::Client::new(),
        root_token: String::new(),
        admins: Default::default(),
        cleaned: false,
    }
}

/// Creates this test's database and virtual host; returns the server settings for them.
pub async fn prepare() -> (ServerConfig, String, String) {
    ensure_services();
    let id = suffix();
    let db_name = format!("fedq_test_{id}");
    let vhost = format!("fedq-test-{id}");

    let (admin, conn) =
        tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls).await.expect("PostgreSQL is up");
    tokio::spawn(conn);
    admin.batch_execute(&format!("CREATE DATABASE {db_name}")).await.unwrap();

    let mgmt = management();
    mgmt.create_vhost(&vhost).await.expect("RabbitMQ management API is up");
    let all = Permissions { configure: ".*".into(), write: ".*".into(), read: ".*".into() };
    mgmt.set_permissions(&vhost, "guest", &all).await.unwrap();

    let services = fedq_test_kit::Services {
        database_url: format!("postgres://fedq:fedq-dev@127.0.0.1:5432/{db_name}"),
        broker_url: format!("amqp://guest:guest@127.0.0.1:5672/{vhost}"),
        vhost: vhost.clone(),
        management_url: "http://127.0.0.1:15672".into(),
        management_user: "guest".into(),
        management_password: "guest".into(),
        tls: Default::default(),
    };
    // The log key of this test's server (and its replicas), removed by `cleanup`.
    let mut config = fedq_test_kit::server_config(
        &services,
        HttpConfig::default(),
        ROOT_PASSWORD,
        &log_key_file(&db_name),
    );
    config.transparency.sequence_interval_ms = 100;
    // Every test server serves its metrics, on a port of its own.
    config.metrics = fedq::metrics::MetricsSection { listen: Some("127.0.0.1:0".parse().unwrap()) };
    (config, db_name, vhost)
}

/// Where the log key of the test server with database `db_name` lives.
pub fn log_key_file(db_name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("fedq-test-log-keys");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{db_name}.key"))
}

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `fedq server` as a process with `config` given as `FEDQ_…` variables, listening on
/// `port`, logging at `rust_log` to `log` (appended).
pub fn spawn_server_process(
    config: &ServerConfig,
    port: u16,
    log: &std::path::Path,
    rust_log: &str,
) -> std::process::Child {
    spawn_server_process_with(config, port, log, rust_log, &[])
}

/// As `spawn_server_process`, with further variables.
pub fn spawn_server_process_with(
    config: &ServerConfig,
    port: u16,
    log: &std::path::Path,
    rust_log: &str,
    extra: &[(&str, String)],
) -> std::process::Child {
    use secrecy::ExposeSecret as _;
    use std::process::Stdio;
    let log = std::fs::File::options().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_fedq"))
        .arg("server")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", rust_log)
        .env("FEDQ_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("FEDQ_DATABASE__URL", config.database.url.expose_secret())
        .env("FEDQ_BROKER__URL", config.broker.url.expose_secret())
        .env("FEDQ_BROKER__VHOST", &config.broker.vhost)
        .env("FEDQ_BROKER__MANAGEMENT_URL", &config.broker.management_url)
        .env("FEDQ_BROKER__MANAGEMENT_USER", &config.broker.management_user)
        .env("FEDQ_BROKER__MANAGEMENT_PASSWORD", config.broker.management_password.expose_secret())
        .env("FEDQ_BOOTSTRAP__ROOT_USERNAME", "root")
        .env("FEDQ_BOOTSTRAP__ROOT_PASSWORD", ROOT_PASSWORD)
        .env("FEDQ_TRANSPARENCY__KEY_FILE", &config.transparency.key_file)
        .env("FEDQ_TRANSPARENCY__SEQUENCE_INTERVAL_MS", config.transparency.sequence_interval_ms.to_string())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the fedq binary starts")
}

/// The value of the sample `series` (a name with its labels, as printed) in OpenMetrics text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

/// Scrapes `/metrics` at `addr`.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap()
}

/// Polls `check` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.addr)
    }

    pub async fn wait_healthy(&self) {
        eventually(30, "the server to be healthy", || async {
            let resp = self.http.get(self.url("/health")).send().await.ok()?;
            (resp.status() == 200).then_some(())
        })
        .await;
    }

    /// Sends a request; returns the status and the JSON body (Null if none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) =
            self.call("POST", "/login", None, Some(json!({"username": user, "password": password}))).await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Creates an organization (as root) and publishes a fresh key for it (as its own
    /// administrator, `admin-of-NAME`); returns its identity.
    pub async fn org(&self, name: &str) -> Identity {
        let key = OrgKey::generate();
        let (status, body) =
            self.call("POST", "/organizations", Some(&self.root_token), Some(json!({"name": name}))).await;
        assert_eq!(status, 201, "{body}");
        let org: OrgId = body["id"].as_str().unwrap().parse().unwrap();
        let admin = self.user(org, &format!("admin-of-{name}"), "org_admin").await;
        self.publish_key(org, &admin, key.public(), None).await;
        Identity::new(org, key)
    }

    /// An organization administrator publishes `key`, with a rotation signature if given.
    pub async fn publish_key(&self, org: OrgId, admin: &str, key: &PublicKey, rotation: Option<[u8; 64]>) {
        let mut body = json!({"public_key": key.to_string()});
        if let Some(signature) = rotation {
            body["rotation_signature"] = json!(STANDARD.encode(signature));
        }
        let (status, body) =
            self.call("PUT", &format!("/organizations/{org}/public-key"), Some(admin), Some(body)).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Creates a user with a role in an organization and logs in. The organization's first
    /// administrator is created by root (the only user root may create there); every other user
    /// by that administrator, created first if the organization has none yet.
    pub async fn user(&self, org: OrgId, name: &str, role: &str) -> String {
        let admin = self.admins.lock().unwrap().get(&org).cloned();
        let creator = match admin {
            Some(admin) => admin,
            None if role == "org_admin" => {
                let token = self.create_user(&self.root_token, org, name, role).await;
                self.admins.lock().unwrap().insert(org, token.clone());
                return token;
            }
            None => {
                let first = format!("first-admin-of-{}", &org.to_string()[..8]);
                let token = self.create_user(&self.root_token, org, &first, "org_admin").await;
                self.admins.lock().unwrap().insert(org, token.clone());
                token
            }
        };
        self.create_user(&creator, org, name, role).await
    }

    /// `creator` creates a user; the new user logs in.
    async fn create_user(&self, creator: &str, org: OrgId, name: &str, role: &str) -> String {
        let password = "a-long-password-123";
        let (status, body) = self
            .call(
                "POST",
                "/users",
                Some(creator),
                Some(json!({"username": name, "password": password, "role": role, "organization": org})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        self.login(name, password).await
    }

    pub async fn collaboration(&self, name: &str, orgs: &[OrgId]) -> CollaborationId {
        let (status, body) = self
            .call(
                "POST",
                "/collaborations",
                Some(&self.root_token),
                Some(json!({"name": name, "organizations": orgs})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Registers a node; returns the registration answer (API key, broker credentials).
    pub async fn node(&self, org: OrgId, name: &str) -> Value {
        let (status, body) = self
            .call("POST", "/nodes", Some(&self.root_token), Some(json!({"organization": org, "name": name})))
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// A plain SQL connection to this test's database.
    pub async fn sql(&self) -> tokio_postgres::Client {
        let url = format!("postgres://fedq:fedq-dev@127.0.0.1:5432/{}", self.db_name);
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// What a server operator with the database does: retire `org`'s keys and make `key` its
    /// current one, with no transparency-log leaf recording it.
    pub async fn swap_key_in_database(&self, org: OrgId, key: &fedq::keys::OrgKey) {
        let sql = self.sql().await;
        sql.execute("UPDATE organization_keys SET retired_at = now() WHERE org_id = $1", &[org.as_uuid()])
            .await
            .unwrap();
        sql.execute(
            "INSERT INTO organization_keys (org_id, key_id, public_key) VALUES ($1, $2, $3)",
            &[org.as_uuid(), &key.id().as_bytes().as_slice(), &key.public().to_string()],
        )
        .await
        .unwrap();
    }

    /// Undoes [`TestApp::swap_key_in_database`].
    pub async fn restore_key_in_database(&self, org: OrgId, key: &fedq::keys::OrgKey) {
        let sql = self.sql().await;
        sql.execute("DELETE FROM organization_keys WHERE key_id = $1", &[&key.id().as_bytes().as_slice()])
            .await
            .unwrap();
        sql.execute("UPDATE organization_keys SET retired_at = NULL WHERE org_id = $1", &[org.as_uuid()])
            .await
            .unwrap();
    }

    /// Results routed so far for `tasks`, and the most routed for any one of them.
    pub async fn routed_results(&self, tasks: &[TaskId]) -> (i64, i64) {
        let ids: Vec<uuid::Uuid> = tasks.iter().map(|t| *t.as_uuid()).collect();
        let row = self
            .sql()
            .await
            .query_one(
                "SELECT count(*), coalesce(max(n), 0) FROM (SELECT task_id, count(*) AS n FROM routing_log
                 WHERE kind = 'job_result' AND task_id = ANY($1) GROUP BY task_id) r",
                &[&ids],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// How many envelopes of `kind` the router logged for `task`.
    pub async fn routed(&self, task: TaskId, kind: &str) -> i64 {
        self.sql()
            .await
            .query_one(
                "SELECT count(*) FROM routing_log WHERE task_id = $1 AND kind = $2",
                &[task.as_uuid(), &kind],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// An AMQP connection to this test's virtual host as `user`.
    pub async fn amqp(&self, user: &str, password: &str) -> Result<Connection, lapin::Error> {
        let url = format!("amqp://{user}:{password}@127.0.0.1:5672/{}", self.vhost);
        Connection::connect(&url, ConnectionProperties::default()).await
    }

    /// Starts the server again with the same settings (after `stop`).
    pub async fn restart(&mut self) {
        let server = start(self.config.clone()).await.expect("the server starts again");
        self.addr = server.addr;
        self.server = Some(server);
        self.wait_healthy().await;
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Stops the server and removes the test's database and virtual host.
    pub async fn cleanup(mut self) {
        self.stop().await;
        remove_test_services(&self.vhost, &self.db_name).await;
        self.cleaned = true;
    }
}

/// Removes a test's virtual host and database.
async fn remove_test_services(vhost: &str, db_name: &str) {
    let _ = std::fs::remove_file(log_key_file(db_name));
    let _ = management().delete_vhost(vhost).await;
    if let Ok((admin, conn)) = tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await;
    }
}

impl Drop for TestApp {
    /// A test that failed before `cleanup` leaves nothing behind either. The removal runs on a
    /// thread with a runtime of its own: a runtime cannot be entered from the test's.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (vhost, db_name) = (self.vhost.clone(), self.db_name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(remove_test_services(&vhost, &db_name));
            }
        })
        .join();
    }
}

/// A node's broker session, from its registration answer.
pub struct NodeBroker {
    pub connection: Connection,
    pub channel: Channel,
    pub user: String,
    pub queue: String,
}

impl NodeBroker {
    pub async fn connect(app: &TestApp, registration: &Value) -> Result<Self, lapin::Error> {
        let b = &registration["broker"];
        let user = b["username"].as_str().unwrap().to_owned();
        let connection = app.amqp(&user, b["password"].as_str().unwrap()).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { connection, channel, user, queue: b["queue"].as_str().unwrap().to_owned() })
    }

    /// Publishes to ingress with the validated user id, as a node does.
    pub async fn publish(&self, bytes: &[u8]) -> Result<(), lapin::Error> {
        self.publish_as(bytes, &self.user.clone()).await
    }

    pub async fn publish_as(&self, bytes: &[u8], user_id: &str) -> Result<(), lapin::Error> {
        let props = BasicProperties::default().with_delivery_mode(2).with_user_id(user_id.into());
        self.channel
            .basic_publish("fedq.ingress".into(), "".into(), BasicPublishOptions::default(), bytes, props)
            .await?
            .await?;
        Ok(())
    }

    /// Waits for the next message on this node's queue.
    pub async fn next(&self, secs: u64) -> lapin::message::Delivery {
        eventually(secs, "a message on the node's queue", || async {
            let got = self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .ok()?;
            got.map(|m| m.delivery)
        })
        .await
    }

    /// Takes the next message if there is one now.
    pub async fn try_next(&self) -> Option<lapin::message::Delivery> {
        let got = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        got.map(|m| m.delivery)
    }

    /// Whether the queue is empty now (takes a message if there is one).
    pub async fn is_empty(&self) -> bool {
        self.try_next().await.is_none()
    }
}

/// Seals a `job_start` for `to` and returns the JSON job entry of `POST /tasks`.
pub fn job_entry(
    from: &Identity,
    to: OrgId,
    to_key: &PublicKey,
    route: &Route,
    input: &[u8],
    all: &[OrgId],
) -> (JobId, Value, Vec<u8>) {
    let job = JobId::new();
    let payload = Payload::JobStart(JobStart {
        job,
        image: "fedq/test@sha256:00".into(),
        requester: Requester::User { org: from.org(), user: "researcher".into() },
        organizations: all.to_vec(),
        input: serde_bytes::ByteBuf::from(input.to_vec()),
        return_log: false,
        log_head: None,
        on_behalf_of: Vec::new(),
    });
    let sealed = envelope::seal(
        from,
        to,
        to_key,
        route,
        &payload.to_bytes(),
        &SealOptions::default(),
        Timestamp::now(),
    )
    .unwrap();
    (job, json!({"id": job, "organization": to, "envelope": STANDARD.encode(&sealed.bytes)}), sealed.bytes)
}

pub fn route(kind: Kind, collaboration: CollaborationId, task: TaskId, run: RunId) -> Route {
    Route {
        kind,
        collaboration,
        task,
        run,
        status: kind.carries_status().then_some(fedq::protocol::JobStatus::Completed),
    }
}

/// Two organizations A and B in one collaboration, a researcher of A, a node each, and a task
/// with a job at both whose `job_start` envelopes the nodes have already taken: a run in which
/// A and B can exchange run messages.
pub struct TwoOrgRun {
    pub a: Identity,
    pub b: Identity,
    pub collaboration: CollaborationId,
    pub researcher: String,
    pub reg_a: Value,
    pub reg_b: Value,
    pub node_a: NodeBroker,
    pub node_b: NodeBroker,
    pub task: TaskId,
    pub run: RunId,
}

impl TwoOrgRun {
    pub async fn start(app: &TestApp) -> Self {
        let a = app.org("a").await;
        let b = app.org("b").await;
        let collaboration = app.collaboration("ab", &[a.org(), b.org()]).await;
        let researcher = app.user(a.org(), "ada", "researcher").await;
        let reg_a = app.node(a.org(), "a-1").await;
        let reg_b = app.node(b.org(), "b-1").await;
        let node_a = NodeBroker::connect(app, &reg_a).await.unwrap();
        let node_b = NodeBroker::connect(app, &reg_b).await.unwrap();
        let (task, run) = (TaskId::new(), RunId::new());
        let r = route(Kind::JobStart, collaboration, task, run);
        let all = [a.org(), b.org()];
        let (_, ea, _) = job_entry(&a, a.org(), a.current().public(), &r, b"input-a", &all);
        let (_, eb, _) = job_entry(&a, b.org(), b.current().public(), &r, b"input-b", &all);
        let body =
            json!({"id": task, "run": run, "collaboration": collaboration, "image": "img", "jobs": [ea, eb]});
        let (status, created) = app.call("POST", "/tasks", Some(&researcher), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        node_a.next(10).await;
        node_b.next(10).await;
        Self { a, b, collaboration, researcher, reg_a, reg_b, node_a, node_b, task, run }
    }

    /// A run message from B to A carrying `body`.
    pub fn b_to_a(&self, body: &[u8]) -> Vec<u8> {
        let msg = route(Kind::RunMessage, self.collaboration, self.task, self.run);
        envelope::seal(
            &self.b,
            self.a.org(),
            self.a.current().public(),
            &msg,
            body,
            &SealOptions::default(),
            Timestamp::now(),
        )
        .unwrap()
        .bytes
    }
}

/// Runs `fedq` with `args`, its session and trust store in `home`; returns (success, stdout,
/// stderr).
pub fn fedq_command(home: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let (code, out, err) = fedq_status(home, args, stdin);
    (code == Some(0), out, err)
}

/// As [`fedq_command`], with the exit status itself.
pub fn fedq_status(
    home: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (Option<i32>, String, String) {
    let out = fedq_output(home, args, stdin);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Runs `fedq` with `args`, its session, trusted keys and task records in `home`; the process's
/// output.
pub fn fedq_output(home: &std::path::Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedq"))
        .args(args)
        .env("FEDQ_SESSION", home.join("session.json"))
        .env("XDG_CONFIG_HOME", home)
        .env_remove("FEDQ_ENROLLMENT_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Runs `fedq` as [`fedq_command`] does and asserts it succeeded; its standard output.
pub fn fedq_ok(home: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = fedq_command(home, args, stdin);
    assert!(ok, "fedq {args:?}\n{out}\n{err}");
    out
}

/// The project's Python (`scripts/python`: a virtual environment with fedq's packages, made or
/// brought up to date on the way).
pub fn python() -> Command {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python"))
}

/// Runs `fedq_algorithm.<module>`'s algorithm in the mock federation of `fedq_algorithm.mock` (no
/// server, broker, keys or containers), one organization per data folder, all with `input`;
/// each organization's result as JSON, in the folders' order.
pub fn in_the_mock(module: &str, input: &Value, folders: &[String], timeout_secs: u32) -> Vec<Value> {
    let script = format!(
        "import json, sys\n\
         from fedq_algorithm import mock\n\
         from fedq_algorithm.{module} import run\n\
         orgs = {{f'org-{{i}}': path for i, path in enumerate(sys.argv[2:])}}\n\
         results = mock.run(run, orgs, json.loads(sys.argv[1]), timeout={timeout_secs})\n\
         print(json.dumps([results[org].json() for org in orgs]))"
    );
    let out = python()
        .args(["-c", &script, &input.to_string()])
        .args(folders)
        .output()
        .expect("scripts/python runs");
    assert!(out.status.success(), "the mock failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
