//! `fedq admin`: what administrators do over the REST API, from the saved session. Organizations
//! are named by name or id.

use clap::Subcommand;
use serde_json::{Value, json};

use super::CliError;
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// One-time tokens that enroll nodes (`fedq node enroll`).
    #[command(subcommand)]
    Enrollment(EnrollmentCommand),
}

#[derive(Debug, Subcommand)]
pub enum EnrollmentCommand {
    /// Create a token for a node of an organization; it is shown once.
    Create {
        /// The organization (name or id).
        org: String,
        /// The node's name (letters, digits, '-' or '_').
        node_name: String,
        /// How long the token is valid, in seconds (a day by default, a week at most).
        #[arg(long)]
        valid_secs: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `fedq admin …`.
pub fn run(command: AdminCommand) -> Result<(), CliError> {
    let client = super::research::session_client()?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|source| CliError::Io { path: "tokio runtime".into(), source })?;
    runtime.block_on(async {
        match command {
            AdminCommand::Enrollment(EnrollmentCommand::Create { org, node_name, valid_secs, json }) => {
                let org = organization(&client, &org).await?;
                let id = org["id"].as_str().unwrap_or_default();
                let mut body = json!({"node_name": node_name});
                if let Some(secs) = valid_secs {
                    body["valid_secs"] = json!(secs);
                }
                let created = client.post(&format!("/organizations/{id}/enrollments"), &body).await?;
                if json {
                    println!("{created}");
                } else {
                    println!("{}", created["token"].as_str().unwrap_or_default());
                    eprintln!(
                        "token for node {node_name} of {}, valid once until {}; on the node's machine:\n  \
                         fedq node enroll --server URL --token TOKEN [--ca-file CA.pem]",
                        org["name"].as_str().unwrap_or_default(),
                        crate::time::Timestamp::from_millis(system_time_millis(&created["expires_at"])),
                    );
                }
                Ok(())
            }
        }
    })
}

/// The organization named `name_or_id` as the server shows it.
pub async fn organization(client: &Client, name_or_id: &str) -> Result<Value, CliError> {
    let all = client.get("/organizations").await?;
    all.as_array()
        .into_iter()
        .flatten()
        .find(|o| o["id"].as_str() == Some(name_or_id) || o["name"].as_str() == Some(name_or_id))
        .cloned()
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "no organization named {name_or_id:?} that this user can see (`fedq admin` takes a name or an id)"
            ))
        })
}

/// Milliseconds since the epoch of a `SystemTime` as serde writes it.
fn system_time_millis(value: &Value) -> i64 {
    let secs = value["secs_since_epoch"].as_i64().unwrap_or(0);
    let nanos = value["nanos_since_epoch"].as_i64().unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}
