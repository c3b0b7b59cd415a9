//! `fedq audit`: the server's transparency log checked by someone who trusts nothing it says
//! (docs/protocol.md, "The transparency log"). `verify` replays every leaf (from the start, or
//! from a checkpoint saved earlier) and requires the newest signed root; `prove` proves that
//! envelopes or leaves are, or are not, in the log; `verify --org` prints an organization's own
//! view: the trust events about it and the envelopes it sent and received.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use fedq_transparency::{Frontier, Leaf, SignedTreeHead, verify_inclusion};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::CliError;
use crate::client::Client;
use crate::client::audit::AuditError;
use crate::contract::TreeHeadBody;
use crate::ids::OrgId;

/// `fedq audit …`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    /// The log's public key (64 hex digits), as compared out of band; by default the key of the
    /// `--from` checkpoint, else the server's (printed, to compare).
    #[arg(long, global = true)]
    log_key: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the whole log against its newest signed tree head.
    Verify {
        /// A checkpoint saved by `--save`: only later leaves are read, and the log must extend it.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Save a checkpoint (log key, tree head, frontier) to this file.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Also print this organization's own view (name or id): the trust events about it and
        /// the envelopes it sent and received.
        #[arg(long)]
        org: Option<String>,
    },
    /// Prove that envelopes (files) or leaves (hashes) are in the log, or say that they are not.
    Prove {
        /// Envelope files.
        envelopes: Vec<PathBuf>,
        /// A leaf hash (64 hex digits), as `verify --org` prints for events; repeatable.
        #[arg(long = "leaf")]
        leaves: Vec<String>,
    },
}

/// What `--save` writes and `--from` reads.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    log_key: String,
    head: TreeHeadBody,
    frontier: Frontier,
}

/// `fedq audit`.
pub fn run(args: AuditArgs) -> Result<(), CliError> {
    let client = super::research::session_client()?;
    let answer = super::runtime()?.block_on(execute(&client, &args))?;
    if args.json {
        println!("{answer:#}");
    } else if let Some(text) = answer["text"].as_str() {
        print!("{text}");
    }
    Ok(())
}

async fn execute(client: &Client, args: &AuditArgs) -> Result<Value, CliError> {
    match &args.command {
        AuditCommand::Verify { from, save, org } => {
            let checkpoint = from.as_ref().map(read_checkpoint).transpose()?;
            let pinned = args.log_key.clone().or_else(|| checkpoint.as_ref().map(|c| c.log_key.clone()));
            let key = log_key(client, pinned.as_deref()).await?;
            let head = client.log_head(&key, None).await.map_err(CliError::Log)?;
            let start = checkpoint.map(|c| c.frontier).unwrap_or_default();
            let org = match org {
                Some(org) => Some(super::lookup::organization_id(client, org).await?),
                None => None,
            };
            let mut view = View::new(org);
            let frontier = client
                .log_replay(&start, &head, |index, leaf| view.visit(index, leaf))
                .await
                .map_err(CliError::Log)?;
            // Every key the server serves must have its leaf: one in its database alone was put
            // there outside the log. Only a replay from the start has seen every such leaf.
            let unlogged =
                if from.is_none() { Some(unlogged_keys(client, &view.logged_keys).await?) } else { None };
            let mut answer = view.answer(&key, &head, start.size());
            let note = match &unlogged {
                None => "keys       not checked: a checkpoint starts after the leaves that publish them (verify \
                         without --from to check them)\n"
                    .to_owned(),
                Some(list) if list.is_empty() => {
                    "keys       every organization's current key, as the server serves it, has its leaf in the log\n"
                        .to_owned()
                }
                Some(_) => String::new(),
            };
            if let Some(text) = answer["text"].as_str() {
                answer["text"] = Value::from(format!("{text}{note}"));
            }
            if let Some(keys) = unlogged.filter(|k| !k.is_empty()) {
                // No checkpoint of a log caught misbehaving: a later `--from` would start past it.
                print!("{}", answer["text"].as_str().unwrap_or_default());
                return Err(CliError::KeyNotLogged { keys });
            }
            if let Some(path) = save {
                let checkpoint = Checkpoint {
                    log_key: hex::encode(key.as_bytes()),
                    head: TreeHeadBody::from(&head),
                    frontier,
                };
                let text = serde_json::to_string_pretty(&checkpoint).expect("a checkpoint serializes");
                crate::files::write_atomic(path, text.as_bytes(), 0o644)
                    .map_err(|source| CliError::Io { path: path.clone(), source })?;
            }
            Ok(answer)
        }
        AuditCommand::Prove { envelopes, leaves } => {
            let key = log_key(client, args.log_key.as_deref()).await?;
            let head = client.log_head(&key, None).await.map_err(CliError::Log)?;
            let mut wanted: Vec<(String, fedq_transparency::Hash)> = Vec::new();
            for path in envelopes {
                let bytes =
                    std::fs::read(path).map_err(|source| CliError::Io { path: path.clone(), source })?;
                let parsed = crate::envelope::parse(&bytes, usize::MAX)
                    .map_err(|e| CliError::BadInput(format!("{}: not an envelope ({e})", path.display())))?;
                let leaf = Leaf::Envelope(fedq_transparency::EnvelopeLeaf::of(&parsed.header, &bytes));
                wanted.push((path.display().to_string(), leaf.hash()));
            }
            for text in leaves {
                let hash = fedq_transparency::wire::hash_from_hex(text).map_err(|_| {
                    CliError::BadInput(format!("--leaf {text}: a leaf hash is 64 hex digits"))
                })?;
                wanted.push((text.clone(), hash));
            }
            if wanted.is_empty() {
                return Err(CliError::BadInput("name envelope files or --leaf hashes to prove".into()));
            }
            let mut proven = Vec::new();
            let mut text = String::new();
            let mut missing = Vec::new();
            for (what, hash) in wanted {
                match client.log_inclusion(&hash, head.head.size).await.map_err(CliError::Log)? {
                    Some((index, path)) => {
                        verify_inclusion(&hash, index, head.head.size, &path, &head.head.root)
                            .map_err(|why| CliError::BadProof { what: what.clone(), why })?;
                        text.push_str(&format!(
                            "{what}: in the log, leaf {index} of {} (proof of {} hashes verified)\n",
                            head.head.size,
                            path.len()
                        ));
                        proven.push(json!({"what": what, "leaf_hash": hex::encode(hash), "index": index}));
                    }
                    None => missing.push(what),
                }
            }
            if !missing.is_empty() {
                print!("{text}");
                return Err(CliError::NotInLog { size: head.head.size, missing });
            }
            Ok(json!({"tree_size": head.head.size, "proven": proven, "text": text}))
        }
    }
}

/// The organizations visible to the session whose current key, as the server serves it, no leaf
/// of `logged` publishes: each as "name (id): key fingerprint".
async fn unlogged_keys(
    client: &Client,
    logged: &HashMap<OrgId, HashSet<[u8; 32]>>,
) -> Result<Vec<String>, CliError> {
    let orgs = client.get("/organizations").await?;
    let mut unlogged = Vec::new();
    for org in orgs.as_array().into_iter().flatten() {
        let Some(id) = org["id"].as_str().and_then(|id| id.parse::<OrgId>().ok()) else { continue };
        let Some(served) = client.current_key(id).await? else { continue };
        if !logged.get(&id).is_some_and(|keys| keys.contains(served.id().as_bytes())) {
            let name = org["name"].as_str().unwrap_or("?");
            unlogged.push(format!("{name} ({id}): key {}", served.id()));
        }
    }
    Ok(unlogged)
}

/// The key heads must verify with: the pinned one (and the server must show the same), else the
/// server's.
async fn log_key(client: &Client, pinned: Option<&str>) -> Result<VerifyingKey, CliError> {
    let shown = client.log_key().await.map_err(CliError::Log)?;
    match pinned {
        Some(pinned) if !pinned.eq_ignore_ascii_case(&hex::encode(shown.as_bytes())) => {
            Err(CliError::Log(AuditError::Alarm(fedq_transparency::Alarm::KeyChanged {
                pinned: pinned.to_owned(),
                now: hex::encode(shown.as_bytes()),
            })))
        }
        _ => Ok(shown),
    }
}

fn read_checkpoint(path: &PathBuf) -> Result<Checkpoint, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io { path: path.clone(), source })?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::BadInput(format!(
            "{}: not a checkpoint of `fedq audit verify --save` ({e})",
            path.display()
        ))
    })
}

/// What `verify` saw.
struct View {
    org: Option<OrgId>,
    /// Every key a leaf published or rotated to, by organization.
    logged_keys: HashMap<OrgId, HashSet<[u8; 32]>>,
    envelopes: u64,
    events: u64,
    unreadable: u64,
    own_events: Vec<Value>,
    own_sent: u64,
    own_received: u64,
}

impl View {
    fn new(org: Option<OrgId>) -> Self {
        Self {
            org,
            logged_keys: HashMap::new(),
            envelopes: 0,
            events: 0,
            unreadable: 0,
            own_events: Vec::new(),
            own_sent: 0,
            own_received: 0,
        }
    }

    fn visit(&mut self, index: u64, leaf: &[u8]) {
        match Leaf::decode(leaf) {
            Ok(Leaf::Envelope(e)) => {
                self.envelopes += 1;
                if Some(e.sender) == self.org {
                    self.own_sent += 1;
                }
                if Some(e.recipient) == self.org {
                    self.own_received += 1;
                }
            }
            Ok(Leaf::Event(e)) => {
                self.events += 1;
                if let fedq_transparency::Event::KeyPublished { key }
                | fedq_transparency::Event::KeyRotated { new: key, .. } = e.event
                {
                    self.logged_keys.entry(e.organization).or_default().insert(key);
                }
                if Some(e.organization) == self.org {
                    self.own_events.push(json!({
                        "index": index,
                        "at_ms": e.at.as_millis(),
                        "event": e.event.to_string(),
                        "leaf_hash": hex::encode(fedq_transparency::leaf_hash(leaf)),
                    }));
                }
            }
            Err(_) => self.unreadable += 1,
        }
    }

    fn answer(self, key: &VerifyingKey, head: &SignedTreeHead, from: u64) -> Value {
        let mut text = format!(
            "log key    {}\ntree head  {} leaves, root {}, signed at {} ms\nverified   leaves {from} to {}: \
             they give the signed root ({} envelopes, {} trust events{})\n",
            hex::encode(key.as_bytes()),
            head.head.size,
            hex::encode(head.head.root),
            head.head.timestamp_ms,
            head.head.size,
            self.envelopes,
            self.events,
            if self.unreadable > 0 {
                format!(", {} leaves of a newer layout", self.unreadable)
            } else {
                String::new()
            },
        );
        if let Some(org) = self.org {
            text.push_str(&format!(
                "organization {org}: sent {} and received {} envelopes in these leaves; its trust events:\n",
                self.own_sent, self.own_received
            ));
            for e in &self.own_events {
                text.push_str(&format!(
                    "  leaf {:>8}  {}  {}\n",
                    e["index"],
                    e["event"].as_str().unwrap_or_default(),
                    e["leaf_hash"].as_str().unwrap_or_default()
                ));
            }
        }
        json!({
            "log_key": hex::encode(key.as_bytes()),
            "tree_head": TreeHeadBody::from(head),
            "verified_from": from,
            "envelopes": self.envelopes,
            "events": self.events,
            "organization": self.org.map(|org| json!({
                "id": org,
                "sent": self.own_sent,
                "received": self.own_received,
                "events": self.own_events,
            })),
            "text": text,
        })
    }
}
