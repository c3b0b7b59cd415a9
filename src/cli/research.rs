//! The researcher's commands: `fedq login`, `fedq task create|list|show|kill|wait`, and
//! `fedq result`. Inputs are sealed, and results opened, here on the researcher's machine with
//! the organization's key; the server sees neither.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::CliError;
use crate::client::files::{session_path, task_record_path, trust_store_path};
use crate::client::{Client, Inputs, Look, OpenedResult, TaskSpec};
use crate::contract::{Job, Task};
use crate::ids::{CollaborationId, JobId, OrgId, TaskId};
use crate::keys::{FirstUse, Identity, KeyTrust, OrgKey};
use crate::tls::ClientTls;

/// `fedq login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The server's base URL.
    #[arg(long, env = "FEDQ_SERVER")]
    server: String,
    /// User name.
    #[arg(long)]
    user: String,
    /// Read the password from standard input instead of asking for it.
    #[arg(long)]
    password_stdin: bool,
    /// The CA that signs the server's certificate (PEM), when it is not a public one.
    #[arg(long, env = "FEDQ_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Allow plain `http://` to a server that is not on this machine (everything, your password
    /// included, then crosses the network in clear).
    #[arg(long)]
    allow_plaintext: bool,
}

/// `fedq task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Seal each organization's input and create a task.
    Create(CreateArgs),
    /// Tasks visible to you, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One task with its jobs' statuses.
    Show {
        /// The task.
        task: TaskId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a task and its subtasks.
    Kill {
        /// The task.
        task: TaskId,
    },
    /// Wait for a task's jobs, showing progress per organization, then print the results.
    Wait(ResultArgs),
}

/// `fedq task create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The collaboration (name or id).
    #[arg(long)]
    collaboration: String,
    /// The algorithm image (name:tag or name@sha256:…).
    #[arg(long)]
    image: String,
    /// An organization to run at (name or id); repeat it, in the order the algorithm expects.
    #[arg(long = "org", required = true)]
    organizations: Vec<String>,
    /// Your organization's private key file.
    #[arg(long, env = "FEDQ_KEY")]
    key: PathBuf,
    /// The input for every organization, from a file (`-` for standard input).
    #[arg(long, conflicts_with = "input_json")]
    input: Option<PathBuf>,
    /// The input for every organization, as JSON text.
    #[arg(long)]
    input_json: Option<String>,
    /// A different input for one organization: ORG=FILE; repeat as needed.
    #[arg(long = "input-for", value_parser = parse_input_for)]
    input_for: Vec<(OrgId, PathBuf)>,
    /// A name for the task.
    #[arg(long, default_value = "")]
    name: String,
    /// Ask the nodes for the containers' logs (sent only where a node's policy shares them).
    #[arg(long)]
    logs: bool,
    /// Wait for the results and print them.
    #[arg(long)]
    wait: bool,
    /// With `--wait`: give up after this many seconds (exit status 3, the results so far printed).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Trust the key of an organization you have no fingerprint for yet, and print its
    /// fingerprint (compare it out of band). Without it such an organization is refused.
    #[arg(long)]
    trust_on_first_use: bool,
}

/// `fedq task wait` and `fedq result`.
#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The task.
    task: TaskId,
    /// Your organization's private key file.
    #[arg(long, env = "FEDQ_KEY")]
    key: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Trust the key of an organization you have no fingerprint for yet (see `task create`).
    #[arg(long)]
    trust_on_first_use: bool,
}

fn parse_input_for(text: &str) -> Result<(OrgId, PathBuf), String> {
    let (org, path) = text.split_once('=').ok_or("expected ORG=FILE")?;
    Ok((org.parse().map_err(|e| format!("{e}"))?, PathBuf::from(path)))
}

/// A saved login.
#[derive(Serialize, Deserialize)]
struct Session {
    server: String,
    token: String,
    /// How the server is reached (its CA, plain text allowed or not).
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    allow_plaintext: bool,
}

impl Session {
    fn tls(&self) -> ClientTls {
        ClientTls {
            ca_file: self.ca_file.clone(),
            allow_plaintext: self.allow_plaintext,
            ..ClientTls::default()
        }
    }
}

fn client(first_use: bool) -> Result<Client, CliError> {
    let path = session_path();
    let text = std::fs::read_to_string(&path).map_err(|_| CliError::NotLoggedIn { path: path.clone() })?;
    let session: Session = serde_json::from_str(&text).map_err(|_| CliError::NotLoggedIn { path })?;
    let first_use = if first_use { FirstUse::Accept } else { FirstUse::Refuse };
    let trust = KeyTrust::open(&trust_store_path(), first_use)?;
    let client =
        Client::with_token(&session.server, &session.tls(), SecretString::from(session.token.clone()))?;
    Ok(client.with_trust(Arc::new(trust)))
}

/// A client of the saved session, for the key commands.
pub(super) fn session_client() -> Result<Client, CliError> {
    client(false)
}

pub(super) fn identity(key: &Path, org: OrgId) -> Result<Identity, CliError> {
    Ok(Identity::new(org, OrgKey::load(key)?))
}

/// `fedq login`: asks for the password, stores the session token (mode 0600).
pub fn login(args: LoginArgs) -> Result<(), CliError> {
    let password = if args.password_stdin || !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| CliError::Io { path: "-".into(), source })?;
        SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned())
    } else {
        SecretString::from(
            rpassword::prompt_password(format!("password for {}: ", args.user))
                .map_err(|source| CliError::Io { path: "terminal".into(), source })?,
        )
    };
    // Kept as an absolute path: later commands may run from another directory.
    let ca_file = match &args.ca_file {
        Some(path) => {
            Some(std::fs::canonicalize(path).map_err(|source| CliError::Io { path: path.clone(), source })?)
        }
        None => None,
    };
    let tls =
        ClientTls { ca_file: ca_file.clone(), allow_plaintext: args.allow_plaintext, ..ClientTls::default() };
    let client = super::runtime()?
        .block_on(Client::login(&args.server, &tls, &args.user, password.expose_secret()))
        .map_err(|e| match e {
            // Here plain text is allowed by this command's flag, not by a setting.
            crate::client::ClientError::Tls(crate::tls::TlsError::Plaintext {
                scheme, secure, host, ..
            }) => crate::client::ClientError::Tls(crate::tls::TlsError::Plaintext {
                setting: "--server".into(),
                allow: "pass --allow-plaintext".into(),
                scheme,
                secure,
                host,
            }),
            other => other,
        })?;
    let path = session_path();
    let session = Session {
        server: args.server,
        token: client.token().expose_secret().to_owned(),
        ca_file,
        allow_plaintext: args.allow_plaintext,
    };
    write_private(&path, &serde_json::to_vec_pretty(&session).expect("a session encodes"))?;
    eprintln!("logged in as {}; session kept in {}", args.user, path.display());
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let io = |source| CliError::Io { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    crate::files::write_atomic(path, bytes, 0o600).map_err(io)
}

/// `fedq task …`.
pub fn task(command: TaskCommand) -> Result<(), CliError> {
    let first_use = match &command {
        TaskCommand::Create(args) => args.trust_on_first_use,
        TaskCommand::Wait(args) => args.trust_on_first_use,
        _ => false,
    };
    let client = client(first_use)?;
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let outcome = async {
            match command {
                TaskCommand::Create(args) => create(&client, args).await,
                TaskCommand::List { limit, json } => {
                    let tasks = client.tasks(limit).await?;
                    if json {
                        println!("{}", pretty(&tasks));
                    } else {
                        for t in &tasks {
                            println!("{}  {}  {}  {}", t.id, summary(t), t.image, t.name);
                        }
                    }
                    Ok(())
                }
                TaskCommand::Show { task, json } => {
                    let shown = client.task(task).await?;
                    if json {
                        println!("{}", pretty(&shown));
                    } else {
                        println!("task {task}  image {}  run {}", shown.image, shown.run);
                        for job in &shown.jobs {
                            println!("  {}  {}", org_label(job), job.status);
                        }
                    }
                    Ok(())
                }
                TaskCommand::Kill { task } => {
                    client.kill(task).await?;
                    eprintln!("task {task} killed");
                    Ok(())
                }
                TaskCommand::Wait(args) => wait(&client, &args, true).await,
            }
        }
        .await;
        super::lookup::naming_organizations(&client, outcome).await
    })
}

/// `fedq result`: the results as they are now (waiting up to the timeout for all of them).
pub fn result(args: ResultArgs) -> Result<(), CliError> {
    let client = client(args.trust_on_first_use)?;
    super::runtime()?.block_on(async {
        let outcome = wait(&client, &args, false).await;
        super::lookup::naming_organizations(&client, outcome).await
    })
}

fn summary(task: &Task) -> String {
    let done = task.jobs.iter().filter(|j| j.status.is_terminal()).count();
    format!("{done}/{} done ({})", task.jobs.len(), task.status())
}

/// Pretty JSON of an answer the client decoded (for `--json`).
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("an answer encodes")
}

/// A collaboration by name or id. Names are resolved among what this user can see: the
/// collaborations of their organization and its partners.
pub(super) async fn resolve_collaboration(
    client: &Client,
    name_or_id: &str,
) -> Result<CollaborationId, CliError> {
    match name_or_id.parse::<CollaborationId>() {
        Ok(id) => Ok(id),
        Err(_) => super::lookup::collaboration_id(client, name_or_id).await,
    }
}

/// Organizations by name or id, in the order given.
pub(super) async fn resolve_organizations(
    client: &Client,
    names_or_ids: &[String],
) -> Result<Vec<OrgId>, CliError> {
    let mut organizations = Vec::with_capacity(names_or_ids.len());
    for org in names_or_ids {
        organizations.push(match org.parse::<OrgId>() {
            Ok(id) => id,
            Err(_) => super::lookup::organization_id(client, org).await?,
        });
    }
    Ok(organizations)
}

async fn create(client: &Client, args: CreateArgs) -> Result<(), CliError> {
    let me = client.me().await?;
    let org = me.organization().ok_or(CliError::NoOrganization)?;
    let me_id = identity(&args.key, org)?;
    let common = match (&args.input, &args.input_json) {
        (Some(path), _) => super::read_input(path)?,
        (None, Some(text)) => {
            serde_json::from_str::<Value>(text)
                .map_err(|e| CliError::BadInput(format!("--input-json: {e}")))?;
            text.clone().into_bytes()
        }
        (None, None) => Vec::new(),
    };
    let collaboration = resolve_collaboration(client, &args.collaboration).await?;
    let organizations = resolve_organizations(client, &args.organizations).await?;
    let inputs = if args.input_for.is_empty() {
        Inputs::Same(common)
    } else {
        let mut each = Vec::with_capacity(organizations.len());
        for org in &organizations {
            each.push(match args.input_for.iter().find(|(o, _)| o == org) {
                Some((_, path)) => super::read_input(path)?,
                None => common.clone(),
            });
        }
        Inputs::Each(each)
    };
    let spec = TaskSpec {
        collaboration,
        image: args.image,
        organizations,
        inputs,
        name: args.name,
        return_log: args.logs,
    };
    let created = client.create_task(&me_id, &spec).await?;
    let record = serde_json::to_vec(&created.jobs).expect("jobs encode");
    if let Err(e) = write_private(&task_record_path(created.task), &record) {
        eprintln!(
            "warning: {e}; `fedq result` in another session cannot check the results against the jobs created"
        );
    }
    if args.json && !args.wait {
        println!("{}", json!({"task": created.task, "run": created.run, "jobs": created.jobs}));
    } else if !args.json {
        eprintln!("task {} created in run {}", created.task, created.run);
        println!("{}", created.task);
    }
    if args.wait {
        let wait_args = ResultArgs {
            task: created.task,
            key: args.key,
            timeout: args.timeout,
            json: args.json,
            trust_on_first_use: args.trust_on_first_use,
        };
        return wait(client, &wait_args, true).await;
    }
    Ok(())
}

async fn wait(client: &Client, args: &ResultArgs, progress: bool) -> Result<(), CliError> {
    let task = client.task(args.task).await?;
    if let Some(parent) = task.parent {
        return Err(CliError::BadInput(format!(
            "task {} is a subtask of {parent}: its results go to the node that created it; ask for {parent}'s",
            args.task
        )));
    }
    let collaboration = task.collaboration;
    let org = task.creator_organization;
    let me = identity(&args.key, org)?;
    if let Ok(bytes) = std::fs::read(task_record_path(args.task))
        && let Ok(jobs) = serde_json::from_slice::<Vec<(JobId, OrgId)>>(&bytes)
    {
        client.expect(args.task, jobs);
    }
    let show = progress && !args.json && std::io::stderr().is_terminal();
    let bars = indicatif::MultiProgress::new();
    let mut lines: Vec<(String, indicatif::ProgressBar)> = Vec::new();
    let watch = |look: &Look| {
        if !show {
            return;
        }
        for job in &look.task.jobs {
            let org = org_label(job);
            let status = job.status;
            let bar = match lines.iter().find(|(o, _)| *o == org) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = bars.add(indicatif::ProgressBar::new_spinner());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    lines.push((org.clone(), bar.clone()));
                    bar
                }
            };
            bar.set_message(format!("{org}  {status}"));
            if status.is_terminal() {
                bar.finish();
            }
        }
    };
    let look = client.wait(args.task, Duration::from_secs(args.timeout), watch).await?;
    let jobs = look.task.jobs;
    let opened = client.open_results(&me, collaboration, &look.results).await?;
    print_results(&opened, &jobs, args.json);
    if look.complete {
        return Ok(());
    }
    // What was printed is partial: say so, and exit with a failure a script can tell apart.
    let pending = jobs
        .iter()
        .filter(|j| !opened.iter().any(|r| r.job == j.id))
        .map(|j| format!("{} ({})", org_label(j), j.status))
        .collect();
    Err(CliError::Incomplete { task: args.task, waited_secs: args.timeout, pending })
}

/// An organization as people know it: its name, then its id (names are unique, ids are what
/// the other commands take).
fn org_label(job: &Job) -> String {
    let id = job.organization;
    if job.organization_name.is_empty() {
        id.to_string()
    } else {
        format!("{} ({id})", job.organization_name)
    }
}

fn print_results(results: &[OpenedResult], jobs: &[Job], json: bool) {
    let name_of = |r: &OpenedResult| {
        jobs.iter()
            .find(|j| j.organization == r.organization)
            .map(|j| j.organization_name.clone())
            .unwrap_or_default()
    };
    if json {
        let list: Vec<Value> = results
            .iter()
            .map(|r| {
                let output = match std::str::from_utf8(&r.output) {
                    Ok(text) => serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!(text)),
                    Err(_) => json!({"base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &r.output)}),
                };
                json!({"job": r.job, "organization": r.organization, "organization_name": name_of(r),
                       "status": r.status, "output": output, "reason": r.reason, "log": r.log})
            })
            .collect();
        println!("{}", json!(list));
        return;
    }
    for r in results {
        let output = String::from_utf8_lossy(&r.output);
        let name = name_of(r);
        let org =
            if name.is_empty() { r.organization.to_string() } else { format!("{name} ({})", r.organization) };
        match &r.reason {
            Some(reason) => println!("{org}  {}  {output}  ({reason})", r.status),
            None => println!("{org}  {}  {output}", r.status),
        }
        if !r.log.is_empty() {
            for line in r.log.lines() {
                println!("    | {line}");
            }
        }
    }
}
