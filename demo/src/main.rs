//! `fedq-demo secure-sum` (what `scripts/demo` runs): a whole federation on this machine in one
//! command. It starts the services if needed, builds the algorithm images, creates a fresh
//! database and broker virtual host, starts the server and one node per registry (each with its
//! own CSV of patients), runs Secure Sum as a researcher would, and prints the total beside what
//! the server saw. Everything it created is removed at the end.
//!
//! A harness of this checkout, not part of the `fedq` binary: it runs the checkout's scripts.

// It reports with the `fedq` command line's own error type, returned once per run and printed;
// its size costs nothing here.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use serde_json::{Value, json};

use fedq::broker::management::{Management, Permissions};
use fedq::cli::CliError;
use fedq::client::{Client, Inputs, TaskSpec};
use fedq::keys::{FirstUse, Identity, KeyTrust, OrgKey};
use fedq::node::config::{DEFAULT_MIN_ORGANIZATIONS, ImageRule, Limits, NodeConfig, PeersSection, Policy};
use fedq::server::config::HttpConfig;
use fedq::tls::ClientTls;

/// A whole federation on this machine, in one command.
#[derive(Debug, Parser)]
#[command(name = "fedq-demo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: DemoCommand,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo runs a server and nodes in-process; their request traces and the broker client's
    // reconnection chatter would drown what it prints.
    fedq::cli::init_tracing("warn,warp=off,lapin=off");
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

/// `fedq-demo …`.
#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// Secure Sum across registries: nobody, the server included, learns another's count.
    SecureSum(DemoArgs),
    /// A count and a mean over columns that two registries hold for the same patients (a third
    /// deals randomness); nobody sees another's columns.
    Vertical(DemoArgs),
}

/// Which analysis a demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Analysis {
    SecureSum,
    Vertical,
}

/// Patients of the vertical demo, with the columns A and B hold: id, age, diagnosis, BMI.
fn vertical_patients() -> Vec<(String, u64, &'static str, u64)> {
    let salt = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
    (0..5000u64)
        .map(|i| {
            let h = (i + salt).wrapping_mul(2_654_435_761) % 1_000_003;
            (
                format!("pt-{:07}", (i * 7919) % 10_000_000),
                18 + h % 80,
                if h % 5 == 0 { "E11" } else { "I10" },
                17 + h % 23,
            )
        })
        .collect()
}

/// Settings of the demo: where the local services are.
#[derive(Debug, Args)]
struct DemoArgs {
    /// Registries in the ring.
    #[arg(long, default_value_t = 3)]
    registries: usize,
    /// PostgreSQL URL of a role that may create databases.
    #[arg(long, default_value = "postgres://fedq:fedq-dev@127.0.0.1:5432/postgres")]
    postgres: String,
    /// RabbitMQ's host and port: its AMQPS listener (its AMQP one with --plaintext).
    #[arg(long)]
    amqp: Option<String>,
    /// The development CA and the certificate for localhost that `scripts/services` makes: every
    /// hop of the demo (the server's HTTPS, PostgreSQL, RabbitMQ) is verified against it.
    #[arg(long, default_value = "/var/lib/fedq-dev/tls")]
    tls_dir: PathBuf,
    /// Run every hop in plain text instead (on this machine only).
    #[arg(long)]
    plaintext: bool,
    /// RabbitMQ's management API.
    #[arg(long, default_value = "http://127.0.0.1:15672")]
    management: String,
    /// Management user (administrator) and password.
    #[arg(long, default_value = "guest")]
    management_user: String,
    /// Its password.
    #[arg(long, default_value = "guest")]
    management_password: String,
    /// Do not run `scripts/services` and `scripts/images` first.
    #[arg(long)]
    no_setup: bool,
    /// Keep the federation running for your own client (the Python package, the notebook
    /// `examples/secure_sum.ipynb`, the `fedq` command line) instead of running the analysis:
    /// write how to reach it to FILE (JSON, mode 0600: it holds the researcher's password) and
    /// wait for Ctrl-C or SIGTERM.
    #[arg(long, value_name = "FILE")]
    serve: Option<PathBuf>,
}

/// Runs a demo.
fn run(command: DemoCommand) -> Result<(), CliError> {
    let (analysis, mut args) = match command {
        DemoCommand::SecureSum(args) => (Analysis::SecureSum, args),
        DemoCommand::Vertical(args) => (Analysis::Vertical, args),
    };
    if analysis == Analysis::Vertical {
        // A and B hold the columns, C deals randomness.
        args.registries = 3;
    }
    if args.registries < DEFAULT_MIN_ORGANIZATIONS {
        return Err(CliError::BadInput(format!(
            "Secure Sum needs at least {DEFAULT_MIN_ORGANIZATIONS} registries: with two, each learns the other's \
             count from the total, and the nodes refuse such a ring (policy.min_organizations)"
        )));
    }
    if !args.no_setup {
        script("services")?;
        script("images")?;
    }
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|source| CliError::Io { path: "tokio runtime".into(), source })?;
    runtime.block_on(demo(&args, analysis))
}

/// Runs one of the project's scripts (from the working directory's checkout, else the one this
/// binary was built from).
fn script(name: &str) -> Result<(), CliError> {
    let candidates = [
        PathBuf::from("scripts").join(name),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(name),
    ];
    let path = candidates.iter().find(|p| p.exists()).ok_or_else(|| {
        CliError::BadInput(format!(
            "scripts/{name} not found; run the demo from a fedq checkout or pass --no-setup"
        ))
    })?;
    eprintln!("== scripts/{name}");
    let status = Command::new(path)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|source| CliError::Io { path: path.clone(), source })?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::BadInput(format!("scripts/{name} failed ({status})")))
    }
}

fn step(text: &str) {
    eprintln!("== {text}");
}

/// The id of local image `reference`, which the demo's node policies pin.
fn image_id(reference: &str) -> Result<String, CliError> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .map_err(|source| CliError::Io { path: PathBuf::from("docker"), source })?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && id.starts_with("sha256:") {
        Ok(id)
    } else {
        Err(CliError::BadInput(format!("image {reference} is not built; run scripts/images")))
    }
}

fn demo_err(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::BadInput(format!("{what}: {e}"))
}

async fn demo(args: &DemoArgs, analysis: Analysis) -> Result<(), CliError> {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let db_name = format!("fedq_demo_{tag}");
    let vhost = format!("fedq-demo-{tag}");
    let work = std::env::temp_dir().join(format!("fedq-demo-{tag}"));
    std::fs::create_dir_all(&work).map_err(|source| CliError::Io { path: work.clone(), source })?;

    step(&format!("a fresh database {db_name} and broker virtual host {vhost}"));
    let (admin, connection) = tokio_postgres::connect(&args.postgres, tokio_postgres::NoTls)
        .await
        .map_err(|e| demo_err("PostgreSQL", e))?;
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("CREATE DATABASE {db_name}"))
        .await
        .map_err(|e| demo_err("PostgreSQL", e))?;
    let management = Management::new(
        &args.management,
        &args.management_user,
        SecretString::from(args.management_password.clone()),
    );
    management.create_vhost(&vhost).await.map_err(|e| demo_err("RabbitMQ", e))?;
    let all = Permissions { configure: ".*".into(), write: ".*".into(), read: ".*".into() };
    management
        .set_permissions(&vhost, &args.management_user, &all)
        .await
        .map_err(|e| demo_err("RabbitMQ", e))?;

    let outcome = run_federation(args, analysis, &db_name, &vhost, &work).await;

    step("cleaning up");
    let _ = management.delete_vhost(&vhost).await;
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await;
    let _ = std::fs::remove_dir_all(&work);
    outcome
}

async fn run_federation(
    args: &DemoArgs,
    analysis: Analysis,
    db_name: &str,
    vhost: &str,
    work: &Path,
) -> Result<(), CliError> {
    let root_password = hex::encode(uuid::Uuid::new_v4().as_bytes());
    let db_url =
        args.postgres.rsplit_once('/').map(|(base, _)| format!("{base}/{db_name}")).unwrap_or_default();
    // Every hop over TLS verified against the development CA, unless asked otherwise.
    let (tls, http, scheme, amqp_scheme, amqp) = if args.plaintext {
        let amqp = args.amqp.clone().unwrap_or_else(|| "127.0.0.1:5672".into());
        (ClientTls::default(), HttpConfig::default(), "http", "amqp", amqp)
    } else {
        let tls = ClientTls { ca_file: Some(args.tls_dir.join("ca.pem")), ..ClientTls::default() };
        let http = HttpConfig {
            tls_cert: Some(args.tls_dir.join("localhost.pem")),
            tls_key: Some(args.tls_dir.join("localhost.key")),
            ..HttpConfig::default()
        };
        (tls, http, "https", "amqps", args.amqp.clone().unwrap_or_else(|| "localhost:5671".into()))
    };
    let server_db_url = if args.plaintext { db_url.clone() } else { format!("{db_url}?sslmode=require") };
    let services = fedq_test_kit::Services {
        database_url: server_db_url,
        broker_url: format!(
            "{amqp_scheme}://{}:{}@{amqp}/{vhost}",
            args.management_user, args.management_password
        ),
        vhost: vhost.to_owned(),
        management_url: args.management.clone(),
        management_user: args.management_user.clone(),
        management_password: args.management_password.clone(),
        tls: tls.clone(),
    };
    let config =
        fedq_test_kit::server_config(&services, http, &root_password, &work.join("transparency.key"));
    if args.plaintext {
        step("starting the server (REST API and blind router), every hop in plain text");
    } else {
        step(&format!(
            "starting the server (REST API and blind router); HTTPS, PostgreSQL and AMQPS verified against {}",
            args.tls_dir.join("ca.pem").display()
        ));
    }
    let server = fedq::server::start(config).await?;
    let base = format!("{scheme}://localhost:{}", server.addr.port());
    let result = async {
        // Ready once the database and the broker both answer.
        let http = tls.http_client("demo", Duration::from_secs(10)).map_err(|e| demo_err("TLS", e))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while http.get(format!("{base}/api/v1/health")).send().await.map(|r| r.status().as_u16()).ok()
            != Some(200)
        {
            if Instant::now() > deadline {
                return Err(CliError::BadInput("the server did not become healthy within 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let root = Client::login(&base, &tls, "root", &root_password).await?;
        let n = args.registries;
        step(&format!("{n} registries: each generates its key, writes its own data, and starts a node"));
        let patients = vertical_patients();
        let mut orgs = Vec::with_capacity(n);
        let mut admins = Vec::with_capacity(n);
        for i in 0..n {
            let key = OrgKey::generate();
            let name = format!("registry-{}", (b'a' + i as u8) as char);
            let body = root.post("/organizations", &json!({"name": name})).await?;
            let id: fedq::ids::OrgId = body["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| demo_err("organization", &body))?;
            // The registry's own administrator publishes its key: root cannot.
            let admin_password = hex::encode(uuid::Uuid::new_v4().as_bytes());
            let admin_name = format!("admin-{name}");
            root.post(
                "/users",
                &json!({"username": admin_name, "password": admin_password, "role": "org_admin", "organization": id}),
            )
            .await?;
            let admin = Client::login(&base, &tls, &admin_name, &admin_password).await?;
            admin
                .put(&format!("/organizations/{id}/public-key"), &json!({"public_key": key.public().to_string()}))
                .await?;
            admins.push(admin);
            orgs.push((name, Identity::new(id, key)));
        }
        let ids: Vec<_> = orgs.iter().map(|(_, o)| o.org()).collect();
        // Each party trusts the others' keys by fingerprint, as after comparing them out of band.
        let pins: std::collections::BTreeMap<_, _> =
            orgs.iter().map(|(_, o)| (o.org(), vec![o.current().id().to_string()])).collect();
        let collaboration =
            root.post("/collaborations", &json!({"name": "registries", "organizations": ids})).await?;
        let collaboration = collaboration["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| demo_err("collaboration", &collaboration))?;
        // The researcher is created by registry-a's administrator: root creates only that one.
        let password = hex::encode(uuid::Uuid::new_v4().as_bytes());
        admins[0]
            .post(
                "/users",
                &json!({"username": "ada", "password": password, "role": "researcher", "organization": ids[0]}),
            )
            .await?;

        let mut nodes = Vec::with_capacity(n);
        let mut counts = Vec::with_capacity(n);
        for (i, (name, org)) in orgs.iter().enumerate() {
            let dir = work.join(name);
            std::fs::create_dir_all(&dir).map_err(|source| CliError::Io { path: dir.clone(), source })?;
            let (label, csv, about) = match (analysis, i) {
                (Analysis::SecureSum, _) => {
                    let count = 20_000 + u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 37 + i as u64;
                    counts.push(count);
                    let mut csv = String::from("patient,age\n");
                    for p in 0..count {
                        csv.push_str(&format!("p{p},{}\n", 30 + p % 60));
                    }
                    ("patients", csv, format!("{count} patients"))
                }
                (Analysis::Vertical, 0) => {
                    let mut csv = String::from("id,age\n");
                    for p in &patients {
                        csv.push_str(&format!("{},{}\n", p.0, p.1));
                    }
                    ("ages", csv, format!("the age of {} patients", patients.len()))
                }
                (Analysis::Vertical, 1) => {
                    let mut csv = String::from("id,diagnosis,bmi\n");
                    for p in patients.iter().rev() {
                        csv.push_str(&format!("{},{},{}\n", p.0, p.2, p.3));
                    }
                    ("diagnoses", csv, format!("the diagnosis and BMI of {} patients", patients.len()))
                }
                (Analysis::Vertical, _) => ("none", String::new(), "no data: it deals randomness".to_owned()),
            };
            let data = dir.join(format!("{label}.csv"));
            std::fs::write(&data, csv).map_err(|source| CliError::Io { path: data.clone(), source })?;
            let registration = root
                .post("/nodes", &json!({"organization": org.org(), "name": format!("{name}-node")}))
                .await?;
            let key_file = dir.join("org.key");
            org.current().write_new(&key_file)?;
            let reach = fedq_test_kit::Reach {
                server_url: base.clone(),
                server_tls: tls.clone(),
                broker: format!("{amqp_scheme}://{amqp}"),
                vhost: vhost.to_owned(),
                broker_tls: tls.clone(),
            };
            let node_name = format!("demo-{}-{}", &vhost[10..], (b'a' + i as u8) as char);
            let mut base_config =
                fedq_test_kit::node_config(&node_name, org.org(), &registration, &key_file, &dir, &reach);
            base_config.node.heartbeat_secs = 3;
            let node = NodeConfig {
                limits: Limits { memory_mib: 128, ..Limits::default() },
                policy: Policy {
                    images: vec![ImageRule {
                        name: analysis.image().into(),
                        digest: image_id(&format!("{}:{}", analysis.image(), env!("CARGO_PKG_VERSION")))?,
                        data: vec![label.to_owned()],
                        requesters: Vec::new(),
                    }],
                    requesters: vec![ids[0].to_string()],
                    ..Policy::default()
                },
                data: [(label.to_owned(), data)].into_iter().collect(),
                peers: PeersSection { pins: pins.clone(), ..PeersSection::default() },
                ..base_config
            };
            nodes.push(fedq::node::start(node).await?);
            eprintln!("   {name}: {about}; node started");
        }

        if let Some(path) = &args.serve {
            let fingerprints: std::collections::BTreeMap<_, _> =
                orgs.iter().map(|(name, o)| (name.clone(), o.current().id().to_string())).collect();
            let connection = json!({
                "server": base,
                "ca_file": (!args.plaintext).then(|| args.tls_dir.join("ca.pem")),
                "username": "ada",
                "password": password,
                "organization": orgs[0].0,
                "key_file": work.join(&orgs[0].0).join("org.key"),
                "collaboration": "registries",
                "organizations": orgs.iter().map(|(name, _)| name).collect::<Vec<_>>(),
                "fingerprints": fingerprints,
                "image": format!("{}:{}", analysis.image(), env!("CARGO_PKG_VERSION")),
                "input": analysis.input(),
            });
            let bytes = serde_json::to_vec_pretty(&connection).expect("JSON encodes");
            fedq::files::write_atomic(path, &bytes, 0o600)
                .map_err(|source| CliError::Io { path: path.clone(), source })?;
            step(&format!(
                "the federation is up; the researcher ada at {} reaches it as {} says. Ctrl-C stops it",
                orgs[0].0,
                path.display()
            ));
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|source| CliError::Io { path: "SIGTERM".into(), source })?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            let _ = std::fs::remove_file(path);
            for node in nodes {
                node.shutdown().await;
            }
            return Ok(());
        }

        step("the researcher at registry-a submits the task; inputs are sealed per registry on her machine");
        let trust = KeyTrust::in_memory(FirstUse::Refuse);
        for (_, org) in &orgs {
            trust.trust(org.org(), org.current().id())?;
        }
        let researcher =
            Client::login(&base, &tls, "ada", &password).await?.with_trust(std::sync::Arc::new(trust));
        let spec = TaskSpec {
            collaboration,
            image: format!("{}:{}", analysis.image(), env!("CARGO_PKG_VERSION")),
            organizations: ids.clone(),
            inputs: Inputs::Same(analysis.input().to_string().into_bytes()),
            name: "demo".into(),
            return_log: false,
        };
        let started = Instant::now();
        let created = researcher.create_task(&orgs[0].1, &spec).await?;
        let results = researcher
            .wait_and_open(&orgs[0].1, collaboration, created.task, Duration::from_secs(300))
            .await?;
        let elapsed = started.elapsed();
        for node in nodes {
            node.shutdown().await;
        }

        let output_of = |org: usize| {
            results
                .iter()
                .find(|r| r.organization == ids[org])
                .and_then(|r| serde_json::from_slice::<Value>(&r.output).ok())
                .unwrap_or(Value::Null)
        };
        println!();
        let secrets: Vec<u64> = match analysis {
            Analysis::SecureSum => {
                let expected: u64 = counts.iter().sum();
                println!("Secure Sum over {n} registries, in {:.2} s", elapsed.as_secs_f64());
                for ((name, _), r) in orgs.iter().zip(&results) {
                    let out: Value = serde_json::from_slice(&r.output).unwrap_or(Value::Null);
                    println!("  {name}: {} — learned N = {}", r.status, out["N"]);
                }
                println!(
                    "  N = {} (the sum of the counts, which only each registry knows: {expected})",
                    output_of(0)["N"]
                );
                counts.iter().copied().chain([expected]).collect()
            }
            Analysis::Vertical => {
                let (a, b) = (output_of(0), output_of(1));
                let add = |k: &str| a[k].as_u64().unwrap_or(0).wrapping_add(b[k].as_u64().unwrap_or(0));
                let (count, sum) = (add("count_share"), add("sum_share"));
                let chosen: Vec<_> = patients.iter().filter(|p| p.1 > 65 && p.2 == "E11").collect();
                let clear_sum: u64 = chosen.iter().map(|p| p.3).sum();
                println!("Patients over 65 with diagnosis E11, age at registry-a, diagnosis and BMI at registry-b, in {:.2} s", elapsed.as_secs_f64());
                println!("  registry-a's share: {}  registry-b's share: {}  (each alone is random)", a["count_share"], b["count_share"]);
                println!("  count = {count}, mean BMI = {:.2}", sum as f64 / count.max(1) as f64);
                println!(
                    "  on the joined data in the clear (which no one holds): count = {}, mean BMI = {:.2}",
                    chosen.len(),
                    clear_sum as f64 / chosen.len().max(1) as f64
                );
                vec![count, sum]
            }
        };

        let db = tokio_postgres::connect(
            &db_url,
            tokio_postgres::NoTls,
        )
        .await
        .map_err(|e| demo_err("PostgreSQL", e))?;
        tokio::spawn(db.1);
        let rows =
            db.0.query(
                "SELECT kind, count(*), sum(size)::bigint FROM routing_log GROUP BY kind ORDER BY kind",
                &[],
            )
            .await
            .map_err(|e| demo_err("PostgreSQL", e))?;
        println!();
        println!("What the server saw (its routing log: headers and sizes, never contents):");
        for row in rows {
            let (kind, count, bytes): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            println!("  {count:>3} × {kind:<12} {bytes:>7} bytes sealed");
        }
        let dump = Command::new("pg_dump")
            .args([
                "--data-only",
                &db_url,
            ])
            .output()
            .map_err(|source| CliError::Io { path: "pg_dump".into(), source })?;
        let dump = String::from_utf8_lossy(&dump.stdout);
        let found: Vec<u64> = secrets.iter().copied().filter(|v| contains_number(&dump, *v)).collect();
        if found.is_empty() {
            println!(
                "  a dump of its database ({} bytes) contains none of the {}, as text or bytes",
                dump.len(),
                match analysis {
                    Analysis::SecureSum => "counts nor N",
                    Analysis::Vertical => "results",
                }
            );
        } else {
            println!("  WARNING: the database dump contains {found:?}");
        }
        Ok::<_, CliError>(())
    }
    .await;
    server.shutdown().await;
    result
}

impl Analysis {
    fn image(self) -> &'static str {
        match self {
            Analysis::SecureSum => "fedq/secure-sum",
            Analysis::Vertical => "fedq/vertical",
        }
    }

    fn input(self) -> Value {
        match self {
            Analysis::SecureSum => json!({"data": "patients", "share": true}),
            Analysis::Vertical => json!({
                "a": {"data": "ages", "column": "age", "greater_than": 65},
                "b": {"data": "diagnoses", "column": "diagnosis", "equals": "E11", "value": "bmi"},
            }),
        }
    }
}

/// Whether `dump` holds `value` as bounded decimal text, or its little/big-endian bytes in hex.
fn contains_number(dump: &str, value: u64) -> bool {
    let text = value.to_string();
    let bounded = dump.match_indices(&text).any(|(at, _)| {
        let before = dump[..at].chars().next_back();
        let after = dump[at + text.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '-'))
            && !after.is_some_and(|c| c.is_ascii_hexdigit())
    });
    bounded
        || dump.contains(&hex::encode(value.to_le_bytes()))
        || dump.contains(&hex::encode(value.to_be_bytes()))
}
