//! `fedq admin`: what administrators do over the REST API, from the saved session
//! (`fedq login`). Organizations, collaborations, users and nodes are named by name or id;
//! `--json` prints what the server answered, with organizations' names added beside their ids
//! (`organization_name`, a collaboration's `members`, a dead letter's `sender_name` and
//! `recipient_name`).

use std::io::{IsTerminal as _, Read as _};

use clap::Subcommand;
use serde_json::{Value, json};

use super::CliError;
use super::lookup::{collaboration_id, find, id_of, not_seen, organization_id, with_organization_names};
use crate::client::Client;
use crate::contract;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Organizations (root creates them).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Collaborations and their members (root).
    #[command(subcommand)]
    Collab(CollabCommand),
    /// Users and their roles.
    #[command(subcommand)]
    User(UserCommand),
    /// Nodes: list, revoke.
    #[command(subcommand)]
    Node(NodeCommand),
    /// An organization's published keys: list, revoke a compromised one.
    #[command(subcommand)]
    Key(KeyCommand),
    /// One-time tokens that enroll nodes (`fedq node enroll`).
    #[command(subcommand)]
    Enrollment(EnrollmentCommand),
    /// Envelopes the router refused, with the reason (root: all; an organization's
    /// administrator: those to or from it).
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Every organization this user can see.
    List,
    /// Create an organization (root).
    Create {
        /// Its name, unique.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CollabCommand {
    /// Every collaboration this user can see, with its members.
    List,
    /// Create a collaboration of existing organizations (root).
    Create {
        /// Its name, unique.
        name: String,
        /// A member (name or id; repeatable).
        #[arg(long = "org", required = true)]
        orgs: Vec<String>,
    },
    /// Add an organization to a collaboration (root).
    Add {
        /// The collaboration (name or id).
        collab: String,
        /// The organization (name or id).
        org: String,
    },
    /// Remove an organization from a collaboration (root).
    Remove {
        /// The collaboration (name or id).
        collab: String,
        /// The organization (name or id).
        org: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Users of this user's organization (all for root).
    List,
    /// Create a user; the password is read from standard input or asked for.
    Create {
        /// The user name.
        username: String,
        /// `researcher`, `org_admin`, `viewer` or `root`.
        #[arg(long)]
        role: String,
        /// The organization (name or id; not for root users).
        #[arg(long)]
        org: Option<String>,
    },
    /// Delete a user (by name or id).
    Delete {
        /// The user.
        user: String,
    },
    /// Give a user (by name or id) another role within their organization.
    Role {
        /// The user.
        user: String,
        /// `org_admin`, `researcher` or `viewer`.
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Nodes of this user's organization (all for root), online or not.
    List,
    /// Revoke a node (name or id): its API key stops working, its broker user and connections go.
    Revoke {
        /// The node.
        node: String,
        /// Its organization (name or id), where node names repeat across organizations.
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// An organization's published keys, newest first.
    List {
        /// The organization (name or id).
        org: String,
    },
    /// Revoke a compromised key of your organization, with a statement signed by `--key`: the
    /// revoked key itself, or the organization's current key when the revoked one is lost.
    Revoke {
        /// The organization (name or id).
        org: String,
        /// The key's fingerprint (`SHA256:…`).
        fingerprint: String,
        /// The organization's key file that signs the revocation.
        #[arg(long)]
        key: std::path::PathBuf,
    },
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
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// The newest dead letters, with the organizations' names.
    List {
        /// Only this reason code (`expired`, `not_a_member`, …).
        #[arg(long)]
        reason: Option<String>,
        /// How many (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// How many of the newest to skip (the next page).
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
}

/// `fedq admin`'s options and command.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Print the server's answers as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

/// Runs `fedq admin …`.
pub fn run(args: AdminArgs) -> Result<(), CliError> {
    let client = super::research::session_client()?;
    let answer = super::runtime()?.block_on(execute(&client, args.command))?;
    if args.json {
        println!("{answer:#}");
    } else {
        print_human(&answer);
    }
    Ok(())
}

async fn execute(client: &Client, command: AdminCommand) -> Result<Value, CliError> {
    Ok(match command {
        AdminCommand::Org(OrgCommand::List) => client.get("/organizations").await?,
        AdminCommand::Org(OrgCommand::Create { name }) => {
            client
                .post("/organizations", &body(&contract::CreateOrganization { name, public_key: None }))
                .await?
        }
        AdminCommand::Collab(CollabCommand::List) => {
            named_members(client, client.get("/collaborations").await?).await?
        }
        AdminCommand::Collab(CollabCommand::Create { name, orgs }) => {
            let mut organizations = Vec::new();
            for org in &orgs {
                organizations.push(organization_id(client, org).await?);
            }
            client
                .post("/collaborations", &body(&contract::CreateCollaboration { name, organizations }))
                .await?
        }
        AdminCommand::Collab(CollabCommand::Add { collab, org }) => {
            let (c, o) = (
                collaboration_id(client, &collab).await?.to_string(),
                organization_id(client, &org).await?.to_string(),
            );
            client.put(&format!("/collaborations/{c}/organizations/{o}"), &json!({})).await?
        }
        AdminCommand::Collab(CollabCommand::Remove { collab, org }) => {
            let (c, o) = (
                collaboration_id(client, &collab).await?.to_string(),
                organization_id(client, &org).await?.to_string(),
            );
            client.delete(&format!("/collaborations/{c}/organizations/{o}")).await?
        }
        AdminCommand::User(UserCommand::List) => {
            with_organization_names(client, client.get("/users").await?).await?
        }
        AdminCommand::User(UserCommand::Create { username, role, org }) => {
            let role = role_of(&role)?;
            let organization = match org {
                Some(org) => Some(organization_id(client, &org).await?),
                None => None,
            };
            let password = contract::Credential::new(read_password(&username)?);
            client
                .post("/users", &body(&contract::CreateUser { username, password, role, organization }))
                .await?
        }
        AdminCommand::User(UserCommand::Delete { user }) => {
            let users = client.get("/users").await?;
            let found = find(&users, &user, "username").ok_or_else(|| not_seen("user", &user))?;
            client.delete(&format!("/users/{}", id_of(&found))).await?
        }
        AdminCommand::User(UserCommand::Role { user, role }) => {
            let users = client.get("/users").await?;
            let found = find(&users, &user, "username").ok_or_else(|| not_seen("user", &user))?;
            let role = contract::SetRole { role: role_of(&role)? };
            let changed = client.patch(&format!("/users/{}", id_of(&found)), &body(&role)).await?;
            with_organization_names(client, changed).await?
        }
        AdminCommand::Node(NodeCommand::List) => {
            with_organization_names(client, client.get("/nodes").await?).await?
        }
        AdminCommand::Node(NodeCommand::Revoke { node, org }) => {
            let nodes = client.get("/nodes").await?;
            let org = match org {
                Some(org) => Some(organization_id(client, &org).await?.to_string()),
                None => None,
            };
            let matching: Vec<&Value> = nodes
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["id"].as_str() == Some(&node) || n["name"].as_str() == Some(&node))
                .filter(|n| org.as_ref().is_none_or(|o| n["organization"].as_str() == Some(o)))
                .collect();
            let found = match matching.as_slice() {
                [one] => *one,
                [] => return Err(not_seen("node", &node)),
                _ => {
                    return Err(CliError::BadInput(format!(
                        "several organizations have a node named {node:?}: say which with --org"
                    )));
                }
            };
            client.delete(&format!("/nodes/{}", id_of(found))).await?
        }
        AdminCommand::Key(KeyCommand::List { org }) => {
            let org = organization_id(client, &org).await?.to_string();
            client.get(&format!("/organizations/{org}/keys")).await?
        }
        AdminCommand::Key(KeyCommand::Revoke { org, fingerprint, key }) => {
            let org = organization_id(client, &org).await?.to_string();
            let revoked: crate::keys::KeyId = fingerprint.parse().map_err(|_| {
                CliError::BadInput(format!("{fingerprint}: a fingerprint is `SHA256:<64 hex digits>`"))
            })?;
            let signer = crate::keys::OrgKey::load(&key)?;
            let org_id: crate::ids::OrgId =
                org.parse().map_err(|_| CliError::BadInput(format!("{org}: not an organization id")))?;
            let revocation = crate::keys::Revocation::sign(org_id, revoked, &signer);
            use base64::Engine as _;
            let statement = contract::RevokeKey {
                signature: base64::engine::general_purpose::STANDARD.encode(revocation.signature),
                signed_by: signer.id().to_string(),
            };
            client.post(&format!("/organizations/{org}/keys/{revoked}/revoke"), &body(&statement)).await?
        }
        AdminCommand::Enrollment(EnrollmentCommand::Create { org, node_name, valid_secs }) => {
            let org = organization_id(client, &org).await?.to_string();
            let asked = contract::CreateEnrollment { node_name: node_name.clone(), valid_secs };
            let created = client.post(&format!("/organizations/{org}/enrollments"), &body(&asked)).await?;
            eprintln!(
                "a token for node {node_name} of {}, valid once, until {}; on the node's machine:\n  \
                 FEDQ_ENROLLMENT_TOKEN=… fedq node enroll --server URL [--ca-file CA.pem] …",
                created["organization_name"].as_str().unwrap_or_default(),
                humantime::format_rfc3339_seconds(system_time(&created["expires_at"])),
            );
            created
        }
        AdminCommand::DeadLetters(DeadLetterCommand::List { reason, limit, offset }) => {
            let letters = client.dead_letters(reason.as_deref(), limit, offset).await?;
            let orgs = client.get("/organizations").await?;
            // An organization outside this session's view keeps its id alone.
            let name = |id: Option<crate::ids::OrgId>| {
                id.and_then(|id| find(&orgs, &id.to_string(), "name"))
                    .map_or(Value::Null, |o| o["name"].clone())
            };
            let mut named = Vec::new();
            for letter in &letters {
                let mut item = json!(letter);
                item["sender_name"] = name(letter.sender);
                item["recipient_name"] = name(letter.recipient);
                named.push(item);
            }
            Value::Array(named)
        }
    })
}

/// Prints an answer for people: a list as one line per item, an object as `key: value` lines;
/// a bare token (enrollment) alone on its line, so that it can be captured.
fn print_human(answer: &Value) {
    if let Some(token) = answer["token"].as_str() {
        println!("{token}");
        return;
    }
    let line = |item: &Value| -> String {
        if item.get("reason_code").is_some() {
            return dead_letter_line(item);
        }
        let fields =
            ["id", "name", "username", "role", "organization_name", "organization", "fingerprint", "status"];
        let mut parts: Vec<String> =
            fields.iter().filter_map(|f| item[*f].as_str().map(|v| format!("{f}={v}"))).collect();
        if let Some(online) = item["online"].as_bool() {
            parts.push(format!("online={online}"));
        }
        if let Some(members) = item["members"].as_array() {
            let names: Vec<&str> = members.iter().filter_map(Value::as_str).collect();
            parts.push(format!("members={}", names.join(",")));
        }
        if item.get("revoked_at").is_some_and(|r| !r.is_null()) {
            parts.push("revoked".into());
        }
        parts.join("  ")
    };
    match answer {
        Value::Array(items) => items.iter().for_each(|i| println!("{}", line(i))),
        Value::Null => println!("done"),
        other => println!("{}", line(other)),
    }
}

/// A dead letter on one line: when, why, and the organizations by name where this session
/// sees them (by id otherwise), the reason for people last.
fn dead_letter_line(item: &Value) -> String {
    let text = |field: &str| item[field].as_str().filter(|v| !v.is_empty()).unwrap_or("-").to_owned();
    let org = |field: &str| match item[format!("{field}_name")].as_str() {
        Some(name) => name.to_owned(),
        None => text(field),
    };
    let received = system_time(&item["received_at"]);
    format!(
        "{}  {}  kind={}  from={}  to={}  task={}  publisher={}  size={}  {}",
        humantime::format_rfc3339_seconds(received),
        text("reason_code"),
        text("kind"),
        org("sender"),
        org("recipient"),
        text("task"),
        text("publisher"),
        item["size"].as_u64().unwrap_or(0),
        text("reason"),
    )
}

/// Collaborations with their members' names beside the ids.
async fn named_members(client: &Client, mut collabs: Value) -> Result<Value, CliError> {
    let orgs = client.get("/organizations").await?;
    for collab in collabs.as_array_mut().into_iter().flatten() {
        let mut members: Vec<Value> = collab["organizations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|id| {
                find(&orgs, id.as_str().unwrap_or_default(), "name").map_or(id.clone(), |o| o["name"].clone())
            })
            .collect();
        members.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        collab["members"] = json!(members);
    }
    Ok(collabs)
}

/// The new user's password: standard input when it is not a terminal, else asked twice.
/// A request body as the client sends it.
fn body(request: &impl serde::Serialize) -> Value {
    serde_json::to_value(request).expect("a request body serializes")
}

/// A role named on the command line.
fn role_of(text: &str) -> Result<contract::Role, CliError> {
    contract::Role::parse(text).ok_or_else(|| {
        let roles: Vec<&str> = contract::Role::ALL.iter().map(|r| r.as_str()).collect();
        CliError::BadInput(format!("{text:?} is no role: the roles are {}", roles.join(", ")))
    })
}

fn read_password(username: &str) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| CliError::Io { path: "-".into(), source })?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_owned());
    }
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt).map_err(|source| CliError::Io { path: "terminal".into(), source })
    };
    let first = ask(format!("password for new user {username}: "))?;
    if ask("again: ".into())? != first {
        return Err(CliError::BadInput("the passwords differ".into()));
    }
    Ok(first)
}

/// A `SystemTime` as serde writes it (the epoch if it is not one).
fn system_time(value: &Value) -> std::time::SystemTime {
    let secs = value["secs_since_epoch"].as_u64().unwrap_or(0);
    let nanos = value["nanos_since_epoch"].as_u64().unwrap_or(0);
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs) + std::time::Duration::from_nanos(nanos)
}
