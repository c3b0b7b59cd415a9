//! The command line: argument definitions and dispatch. Each subcommand lives in its own module
//! and returns [`CliError`]; `main` prints the error chain.

mod admin;
mod analysis;
mod audit;
mod envelope;
mod keys;
mod lookup;
mod node;
mod research;
mod tls;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// fedq: federated analyses whose data never leaves the organizations that hold it.
#[derive(Debug, Parser)]
#[command(name = "fedq", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create and inspect organization keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Seal, inspect and open envelopes by hand.
    #[command(subcommand)]
    Envelope(envelope::EnvelopeCommand),
    /// Run the central server: REST API and blind router.
    Server {
        /// Settings file (TOML); `FEDQ_…` environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a node worker for an organization (meant to run as a systemd service).
    Node(node::NodeArgs),
    /// Log in to a server; the session is kept for the task and result commands.
    Login(research::LoginArgs),
    /// Create, follow and stop tasks.
    #[command(subcommand)]
    Task(research::TaskCommand),
    /// Fetch a task's results and open them with your organization's key.
    Result(research::ResultArgs),
    /// Run an analysis on secure aggregation at registries (summary, crosstab, correlation,
    /// linear, glm, kaplan-meier) and print its statistics.
    Analysis(analysis::AnalysisArgs),
    /// Administration over the REST API, from the saved session: organizations,
    /// collaborations, users, nodes, keys, enrollment tokens, dead letters (names or ids,
    /// `--json`).
    Admin(admin::AdminArgs),
    /// Check the server's transparency log: verify it from scratch or from a checkpoint, prove
    /// that envelopes or leaves are in it, print an organization's own view.
    Audit(audit::AuditArgs),
    /// A development certificate authority and the certificates it signs.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
}

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A private key file could not be written or read.
    #[error(transparent)]
    KeyFile(#[from] crate::keys::KeyFileError),
    /// A public key or fingerprint given on the command line is malformed.
    #[error("invalid public key: {0}")]
    PublicKey(#[from] crate::keys::KeyParseError),
    /// Sealing failed.
    #[error(transparent)]
    Seal(#[from] crate::envelope::SealError),
    /// The envelope was refused.
    #[error("envelope refused ({code}): {0}", code = .0.code())]
    Open(#[from] crate::envelope::OpenError),
    /// The envelope's header could not be read.
    #[error("envelope refused: {0}")]
    Format(#[from] crate::envelope::FormatError),
    /// The server's settings are invalid.
    #[error(transparent)]
    ServerConfig(#[from] crate::server::config::ConfigError),
    /// The server could not start.
    #[error("the server could not start: {0}")]
    Server(#[from] crate::server::ServerError),
    /// The node's settings file is not there.
    #[error(
        "no node settings at {path}: enroll this machine with `fedq node enroll` (which writes them to \
         /etc/fedq/node.toml, or where --config says), or give the settings file with --config"
    )]
    NoNodeSettings {
        /// The file looked for.
        path: PathBuf,
    },
    /// The node's settings, read from `path` and the `FEDQ_…` variables, are invalid.
    #[error("{path}: {source}")]
    NodeConfig {
        /// The settings file read.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: crate::node::config::ConfigError,
    },
    /// A key was refused; the message names the organizations.
    #[error("{0}")]
    KeyRefused(String),
    /// node.toml could not be edited as asked.
    #[error("{0}")]
    PolicyEdit(#[from] crate::node::policy_file::PolicyEditError),
    /// The node could not start.
    #[error("the node could not start: {0}")]
    Node(#[from] crate::node::NodeError),
    /// A talk with the server failed, or what it returned did not open.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// A key is not trusted, or the store of trusted keys cannot be used.
    #[error(transparent)]
    Trust(#[from] crate::keys::TrustError),
    /// No saved session.
    #[error("not logged in (no session at {path}); run `fedq login` first")]
    NotLoggedIn {
        /// Where the session was looked for.
        path: PathBuf,
    },
    /// The logged-in user belongs to no organization (root), so cannot create tasks.
    #[error("this user belongs to no organization; log in as a researcher")]
    NoOrganization,
    /// An input given on the command line is not usable.
    #[error("invalid input: {0}")]
    BadInput(String),
    /// An analysis did not run at every organization: each one's reason.
    #[error("the {analysis} analysis failed: {}", .reasons.join("; "))]
    AnalysisFailed {
        /// Which analysis.
        analysis: &'static str,
        /// `registry-b: the data has no column 'bmi' (column_missing)`, per organization.
        reasons: Vec<String>,
    },
    /// The transparency log could not be read, or was caught misbehaving.
    #[error("transparency log: {0}")]
    Log(crate::client::audit::AuditError),
    /// The server proved an inclusion with a proof that does not verify.
    #[error(
        "{what}: the server's inclusion proof does not verify against its signed head ({why}): the log is not what it signed"
    )]
    BadProof {
        /// The envelope file or leaf hash.
        what: String,
        /// Which check failed.
        why: fedq_transparency::ProofError,
    },
    /// Envelopes or leaves asked about are not in the log.
    #[error(
        "not in the log of {size} leaves: {}. A leaf takes its place within a second of routing; if it stays \
         absent, the server routed it without logging it (or refused it)",
        missing.join(", ")
    )]
    NotInLog {
        /// The log's size.
        size: u64,
        /// What is missing.
        missing: Vec<String>,
    },
    /// The server serves keys that no leaf of its transparency log publishes.
    #[error(
        "the server serves keys that no leaf of the log publishes: {}. A key in the server's directory \
         without its leaf was put there outside the log (in its database, by whoever controls it): do not \
         trust it; compare its fingerprint with the organization's administrator",
        keys.join("; ")
    )]
    KeyNotLogged {
        /// Each as "name (id): key fingerprint".
        keys: Vec<String>,
    },
    /// Not every job had its result when the wait ended; the results printed are partial.
    #[error(
        "task {task}: {} organization(s) had no result after {waited_secs} s: {}; the results printed are \
         partial. Run `fedq result {task}` again later (`fedq task show {task}` shows each job)",
        pending.len(),
        pending.join(", ")
    )]
    Incomplete {
        /// The task waited for.
        task: crate::ids::TaskId,
        /// How long the command waited.
        waited_secs: u64,
        /// Each job without a result: its organization and status.
        pending: Vec<String>,
    },
    /// `fedq node check` found problems (printed above).
    #[error("{failed} check(s) failed; fix what each says and run `fedq node check` again")]
    CheckFailed {
        /// How many.
        failed: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file, or `-` for standard input and output.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// The process's exit status: 3 when a wait ended without every result (so that a script
    /// can tell "not yet" from a failure), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Incomplete { .. } => 3,
            // The log misbehaved: evidence to keep, not a failure to retry.
            Self::Log(crate::client::audit::AuditError::Alarm(_))
            | Self::BadProof { .. }
            | Self::KeyNotLogged { .. } => 4,
            _ => 1,
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Keys(command) => keys::run(command),
        Command::Envelope(command) => envelope::run(command),
        Command::Server { config } => {
            let config = crate::server::config::ServerConfig::load(config.as_deref())?;
            runtime()?.block_on(async {
                let server = crate::server::start(config).await?;
                server.run_until_signal().await;
                Ok(())
            })
        }
        Command::Login(args) => research::login(args),
        Command::Tls(command) => tls::run(command),
        Command::Task(command) => research::task(command),
        Command::Result(args) => research::result(args),
        Command::Analysis(args) => analysis::analysis(args),
        Command::Node(args) => node::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Audit(args) => audit::run(args),
    }
}

impl Cli {
    /// The log level when `RUST_LOG` is unset: services log their work; commands a person runs
    /// interactively log only warnings.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Server { .. } | Command::Node(_) => "info",
            _ => "warn,warp=off,lapin=off",
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default `default_level`).
pub fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The runtime a command's asynchronous work runs on.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Runtime::new().map_err(|source| CliError::Io { path: "tokio runtime".into(), source })
}

/// Reads a file, or standard input for `-`.
fn read_input(path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    use std::io::Read as _;
    let io = |source| CliError::Io { path: path.to_owned(), source };
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(io)?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(io)
    }
}

/// Writes a file, or standard output for `-`.
fn write_output(path: &std::path::Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write as _;
    let io = |source| CliError::Io { path: path.to_owned(), source };
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes).and_then(|()| out.flush()).map_err(io)
    } else {
        std::fs::write(path, bytes).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use clap::error::ErrorKind;

    /// Every `fedq …` command in a shell block of the documentation parses: its subcommands
    /// and flags exist and nothing required is missing. Placeholders (`TASK`, `ORG_B_ID`) only
    /// fail as values, which is accepted; a renamed flag or subcommand is not.
    #[test]
    fn every_fedq_command_in_the_docs_parses() {
        let docs = [
            ("README.md", include_str!("../../README.md")),
            ("docs/node.md", include_str!("../../docs/node.md")),
            ("docs/operations.md", include_str!("../../docs/operations.md")),
            ("docs/algorithm-api.md", include_str!("../../docs/algorithm-api.md")),
        ];
        let mut checked = 0;
        for (file, text) in docs {
            let mut in_shell = false;
            let mut pending = String::new();
            for line in text.lines() {
                let trimmed = line.trim();
                if let Some(fence) = trimmed.strip_prefix("```") {
                    in_shell = !in_shell && fence == "sh";
                    continue;
                }
                if !in_shell {
                    continue;
                }
                pending.push_str(trimmed.trim_end_matches('\\'));
                pending.push(' ');
                if trimmed.ends_with('\\') {
                    continue;
                }
                let command = std::mem::take(&mut pending);
                let command = command.split(" #").next().unwrap_or_default();
                let Some(words) = shlex::split(command) else { panic!("{file}: cannot split `{command}`") };
                // Leading `NAME=value` words set the environment.
                let words: Vec<String> =
                    words.into_iter().skip_while(|w| w.contains('=') && !w.starts_with('-')).collect();
                if words.first().map(String::as_str) != Some("fedq") {
                    continue;
                }
                checked += 1;
                if let Err(e) = super::Cli::try_parse_from(&words) {
                    assert!(
                        matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::DisplayHelp),
                        "{file}: `{}` does not parse: {e}",
                        command.trim()
                    );
                }
            }
        }
        assert!(checked >= 30, "only {checked} commands found");
    }
}
