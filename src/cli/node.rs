//! `fedq node`: run the worker, enroll it, check it, clean up after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use secrecy::SecretString;

use super::CliError;
use crate::ids::OrgId;
use crate::keys::OrgKey;
use crate::node::enroll::{Choices, PinnedImage};
use crate::tls::ClientTls;

/// The systemd unit `fedq node enroll` installs.
const UNIT: &str = include_str!("../../compose/node/fedq-node.service");
/// Where `enroll` writes the settings, the unit reads them, and every other `fedq node` command
/// looks for them without `--config`.
const DEFAULT_CONFIG: &str = "/etc/fedq/node.toml";

/// `fedq node`: run the worker, or enroll, check or clean up after it.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Settings file (TOML), /etc/fedq/node.toml by default: where `enroll` writes it and the
    /// other commands read it. `FEDQ_…` environment variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<NodeCommand>,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Remove this node's leftover containers and expired run volumes.
    Gc {
        /// Remove every run volume and container of this node, expired or not (run it only
        /// while the node is stopped).
        #[arg(long)]
        all: bool,
    },
    /// Register this machine as a node with a one-time token from an administrator of the
    /// organization, and write its complete settings and systemd unit.
    Enroll(Box<EnrollArgs>),
    /// Verify the settings end to end (server, broker, Docker, firewall, images, data) and say
    /// what to fix.
    Check {
        /// Seconds each remote check (server, broker, Docker, firewall tools, disks, images) may take.
        #[arg(long, default_value_t = crate::node::check::DEFAULT_TIMEOUT.as_secs(),
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Show or change which images this node runs; a running node applies a change within
    /// seconds, without a restart.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// The image rules, requesters and limits the node applies.
    List,
    /// Allow an image, pinned to the id of the local image of that reference (a rebuilt image
    /// is another image: allow it again).
    Allow {
        /// The image as this machine's Docker knows it (`fedq/secure-sum`, `name:tag`).
        image: String,
        /// A data source (a label of `[data]`) its containers see (repeatable); none by default.
        #[arg(long = "data")]
        data: Vec<String>,
        /// An organization (id) whose tasks may run it (repeatable); by default, those of
        /// `[policy] requesters`.
        #[arg(long = "requester")]
        requesters: Vec<OrgId>,
        /// Keep the other rules of this name (two builds allowed side by side) instead of
        /// replacing them.
        #[arg(long)]
        keep_others: bool,
    },
    /// Remove the rules of an image name.
    Remove {
        /// The name of the rules (`fedq/secure-sum`), as `list` shows it.
        name: String,
        /// Remove only the rule pinned to this digest.
        #[arg(long)]
        digest: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct EnrollArgs {
    /// The server's URL (`https://…`).
    #[arg(long)]
    server: String,
    /// The enrollment token (`fedq_e_…`), from `fedq admin enrollment create` or the dashboard.
    #[arg(long, env = "FEDQ_ENROLLMENT_TOKEN", hide_env_values = true)]
    token: String,
    /// The CA that signs the server's certificate (the consortium's); the system's roots if
    /// left out.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The organization's private key file: used if it exists, generated (mode 0600) if not.
    #[arg(long, default_value = "/etc/fedq/org.key")]
    key: PathBuf,
    /// Where the node keeps its state.
    #[arg(long, default_value = "/var/lib/fedq")]
    state_dir: PathBuf,
    /// A data source, `LABEL=PATH` (repeatable), mounted read-only for the images allowed.
    #[arg(long = "data", value_parser = parse_data)]
    data: Vec<(String, PathBuf)>,
    /// An image this node may run (repeatable), pinned to the id of the local image of that
    /// reference.
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// An organization (id) whose tasks may run here (repeatable): the partners agreed on.
    #[arg(long = "requester")]
    requesters: Vec<OrgId>,
    /// A partner's key fingerprint compared out of band, `ORG=SHA256:…` (repeatable).
    #[arg(long = "pin", value_parser = parse_pin)]
    pins: Vec<(OrgId, String)>,
    /// Where the systemd unit goes.
    #[arg(long, default_value = "/etc/systemd/system/fedq-node.service")]
    unit: PathBuf,
    /// Write no systemd unit.
    #[arg(long)]
    no_unit: bool,
    /// Replace existing settings.
    #[arg(long)]
    force: bool,
}

fn parse_data(text: &str) -> Result<(String, PathBuf), String> {
    let (label, path) = text.split_once('=').ok_or("expected LABEL=PATH")?;
    Ok((label.to_owned(), PathBuf::from(path)))
}

fn parse_pin(text: &str) -> Result<(OrgId, String), String> {
    let (org, fingerprint) = text.split_once('=').ok_or("expected ORG=SHA256:…")?;
    let org = org.parse().map_err(|e| format!("{e}"))?;
    fingerprint.parse::<crate::keys::KeyId>().map_err(|e| format!("{e}"))?;
    Ok((org, fingerprint.to_owned()))
}

/// Runs `fedq node …`.
pub fn run(args: NodeArgs) -> Result<(), CliError> {
    let path = args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match args.command {
        Some(NodeCommand::Enroll(enroll_args)) => super::runtime()?.block_on(enroll(&path, *enroll_args)),
        Some(NodeCommand::Policy { command }) => policy(&path, command),
        Some(NodeCommand::Check { timeout }) => {
            let config = load(&path)?;
            let timeout = std::time::Duration::from_secs(timeout);
            let checks = super::runtime()?.block_on(crate::node::check::run(&config, timeout));
            let failed = checks.iter().filter(|c| c.outcome.is_err()).count();
            for check in &checks {
                match &check.outcome {
                    Ok(found) => println!("ok    {}: {found}", check.what),
                    Err(fix) => println!("FAIL  {}: {fix}", check.what),
                }
            }
            if failed > 0 {
                return Err(CliError::CheckFailed { failed });
            }
            println!("all {} checks passed", checks.len());
            Ok(())
        }
        command => {
            // Read with the file's version, so that `[policy]` and `[data]` follow its changes.
            let (config, file) = watched(&path)?;
            super::runtime()?.block_on(async {
                match command {
                    Some(NodeCommand::Gc { all }) => {
                        let (containers, volumes) = crate::node::gc(&config, all).await?;
                        println!("removed {containers} containers and {volumes} run volumes");
                    }
                    _ => {
                        let node = crate::node::start_from_file(config, file).await?;
                        node.run_until_signal().await;
                    }
                }
                Ok(())
            })
        }
    }
}

/// The settings in `path`, then the `FEDQ_…` variables; an error names the file.
fn load(path: &Path) -> Result<crate::node::config::NodeConfig, CliError> {
    Ok(watched(path)?.0)
}

/// [`load`], with the file's version for watching it.
fn watched(
    path: &Path,
) -> Result<(crate::node::config::NodeConfig, crate::node::live_policy::SettingsFile), CliError> {
    if !path.exists() {
        return Err(CliError::NoNodeSettings { path: path.to_owned() });
    }
    crate::node::live_policy::SettingsFile::load(path)
        .map_err(|source| CliError::NodeConfig { path: path.to_owned(), source })
}

/// `fedq node policy …`.
fn policy(path: &Path, command: PolicyCommand) -> Result<(), CliError> {
    use crate::node::config::ImageRule;
    use crate::node::policy_file::PolicyFile;
    let config = load(path)?;
    let edit = |change: &dyn Fn(&mut PolicyFile) -> Result<Vec<ImageRule>, CliError>| {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut file = PolicyFile::parse(&text)?;
        let removed = change(&mut file)?;
        let text = file.checked_text()?;
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o7777;
        crate::files::write_atomic(path, text.as_bytes(), mode).map_err(io(path))?;
        Ok::<_, CliError>(removed)
    };
    let applied = "a running node applies it within seconds (at once: systemctl reload fedq-node)";
    match command {
        PolicyCommand::List => {
            let policy = &config.policy;
            println!(
                "requesters        {}",
                list_or(&policy.requesters, "none: only this organization's own tasks")
            );
            println!("min_organizations {}", policy.min_organizations);
            println!("min_cell_count    {}", policy.min_cell_count);
            println!("share_logs        {}", policy.share_logs);
            if policy.images.is_empty() {
                println!("no image is allowed: `fedq node policy allow IMAGE` allows one");
            }
            for rule in &policy.images {
                println!(
                    "image {}@{}  data: {}  requesters: {}",
                    rule.name,
                    rule.digest,
                    list_or(&rule.data, "none"),
                    list_or(&rule.requesters, "those of [policy] requesters")
                );
            }
        }
        PolicyCommand::Allow { image, data, requesters, keep_others } => {
            if let Some(label) = data.iter().find(|l| !config.data.contains_key(*l)) {
                return Err(CliError::BadInput(format!(
                    "--data {label}: no such data source in [data] of {} (it has: {})",
                    path.display(),
                    list_or(&config.data.keys().cloned().collect::<Vec<_>>(), "none")
                )));
            }
            let id = super::runtime()?.block_on(local_image_id(&image))?;
            let rule = ImageRule {
                name: crate::node::policy::parse_reference(&image).name.to_owned(),
                digest: id,
                data,
                requesters: requesters.iter().map(ToString::to_string).collect(),
            };
            let removed = edit(&|file| Ok(file.allow(&rule, keep_others)?))?;
            for old in removed.iter().filter(|old| old.digest != rule.digest) {
                println!("replaced {}@{}", old.name, old.digest);
            }
            println!(
                "allowed {}@{} (data: {}); {applied}",
                rule.name,
                rule.digest,
                list_or(&rule.data, "none")
            );
        }
        PolicyCommand::Remove { name, digest } => {
            let removed = edit(&|file| Ok(file.remove(&name, digest.as_deref())?))?;
            for old in &removed {
                println!("removed {}@{}", old.name, old.digest);
            }
            println!("{applied}; jobs already running keep their containers");
        }
    }
    Ok(())
}

fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() { none.to_owned() } else { items.join(", ") }
}

/// The id of the local image `reference`, as Docker inspects it.
async fn local_image_id(reference: &str) -> Result<String, CliError> {
    let docker = bollard::Docker::connect_with_local_defaults()
        .map_err(|e| CliError::BadInput(format!("Docker: {e}")))?;
    let image = docker.inspect_image(reference).await.map_err(|_| {
        CliError::BadInput(format!(
            "{reference}: no such image on this machine; `docker load` it first (or build it)"
        ))
    })?;
    image.id.ok_or_else(|| CliError::BadInput(format!("{reference}: Docker gave no image id")))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_owned(), source }
}

async fn enroll(config: &Path, mut args: EnrollArgs) -> Result<(), CliError> {
    // The node runs as a service from `/`, and Docker mounts only absolute paths: every path
    // given relative to where this command runs is written as the absolute path it means here.
    let absolute = |path: &Path| {
        std::path::absolute(path).map_err(|e| {
            CliError::BadInput(format!("{}: cannot make it an absolute path: {e}", path.display()))
        })
    };
    args.key = absolute(&args.key)?;
    args.state_dir = absolute(&args.state_dir)?;
    if let Some(ca) = &args.ca_file {
        args.ca_file = Some(absolute(ca)?);
    }
    for (_, path) in &mut args.data {
        *path = absolute(path)?;
    }
    if config.exists() && !args.force {
        return Err(CliError::BadInput(format!(
            "{} exists: this machine is enrolled already (`fedq node check` verifies it); pass --force to \
             replace it with a new enrollment",
            config.display()
        )));
    }
    // Everything that can be checked here is checked before the one-time token is spent.
    let mut images = Vec::new();
    if !args.allow.is_empty() {
        for reference in &args.allow {
            let id =
                local_image_id(reference).await.map_err(|e| CliError::BadInput(format!("--allow {e}")))?;
            let name = crate::node::policy::parse_reference(reference).name.to_owned();
            images.push(PinnedImage { name, id });
        }
    }
    for (label, path) in &args.data {
        if !path.exists() {
            return Err(CliError::BadInput(format!(
                "--data {label}={}: no such file or directory",
                path.display()
            )));
        }
    }
    let ca_file = match &args.ca_file {
        Some(path) => Some(std::fs::canonicalize(path).map_err(io(path))?),
        None => None,
    };
    let tls = ClientTls { ca_file: ca_file.clone(), ..ClientTls::default() };
    let answer =
        crate::client::Client::enroll(&args.server, &tls, &SecretString::from(args.token.clone())).await?;

    let dir = config.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let broker_ca_file = match answer.broker.ca_pem.as_deref() {
        Some(pem) => {
            let path = dir.join("broker-ca.pem");
            crate::files::write_atomic(&path, pem.as_bytes(), 0o644).map_err(io(&path))?;
            Some(path)
        }
        None => ca_file.clone(),
    };
    // The log key, pinned now: a later change is then an alarm, not a new first use.
    let log_key = match crate::client::Client::with_token(
        &args.server,
        &tls,
        SecretString::from(answer.api_key.expose().to_owned()),
    ) {
        Ok(client) => match client.log_key().await {
            Ok(key) => Some(hex::encode(key.as_bytes())),
            Err(e) => {
                eprintln!(
                    "warning: could not read the server's transparency-log key ({e}); the node pins it at its first check"
                );
                None
            }
        },
        Err(_) => None,
    };
    let choices = Choices {
        log_key,
        server_url: args.server.clone(),
        server_ca_file: ca_file,
        broker_ca_file,
        key_file: args.key.clone(),
        state_dir: args.state_dir.clone(),
        data: args.data.iter().cloned().collect(),
        images,
        requesters: args.requesters.clone(),
        pins: args.pins.iter().fold(BTreeMap::new(), |mut pins, (org, fp)| {
            pins.entry(*org).or_insert_with(Vec::new).push(fp.clone());
            pins
        }),
    };
    let text =
        crate::node::enroll::render(&answer, &choices).map_err(|e| CliError::BadInput(e.to_string()))?;
    crate::files::write_atomic(config, text.as_bytes(), 0o600).map_err(io(config))?;
    // What was written must be what the node loads.
    load(config)?;
    let node = &answer.node.name;
    let org_name = answer.organization.as_ref().map(|o| o.name.as_str()).unwrap_or_default();
    println!("enrolled node {node} of {org_name}; settings in {} (mode 0600)", config.display());

    // The organization's key: kept if there, made if not, and compared with the published one.
    let key = if args.key.exists() {
        OrgKey::load(&args.key)?
    } else {
        if let Some(parent) = args.key.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let key = OrgKey::generate();
        key.write_new(&args.key)?;
        println!("generated the organization's key in {} ({})", args.key.display(), key.id());
        key
    };
    let published = answer
        .organization
        .as_ref()
        .and_then(|o| o.public_key.as_deref()?.parse::<crate::keys::PublicKey>().ok());
    match published {
        None => println!(
            "next, as an administrator of {org_name}: fedq keys publish --key {} (no key is published yet)",
            args.key.display()
        ),
        Some(published) if published.id() != key.id() => {
            eprintln!(
                "warning: {org_name}'s published key is {}, but {} holds {}: copy the organization's private key \
                 there (mode 0600) before starting the node",
                published.id(),
                args.key.display(),
                key.id()
            );
        }
        Some(_) => {}
    }
    if !args.no_unit {
        let unit = if config == Path::new(DEFAULT_CONFIG) {
            UNIT.to_owned()
        } else {
            UNIT.replace(DEFAULT_CONFIG, &config.display().to_string())
        };
        if let Some(parent) = args.unit.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        crate::files::write_atomic(&args.unit, unit.as_bytes(), 0o644).map_err(io(&args.unit))?;
        println!(
            "systemd unit in {}: systemctl daemon-reload && systemctl enable --now fedq-node",
            args.unit.display()
        );
    }
    if config == Path::new(DEFAULT_CONFIG) {
        println!("check it: fedq node check");
    } else {
        println!("check it: fedq node check --config {}", config.display());
    }
    Ok(())
}
