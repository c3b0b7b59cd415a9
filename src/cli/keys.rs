//! `fedq keys`: organization key files, the keys you trust, and publishing your organization's
//! key (with a signed rotation when it replaces one).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;

use super::{CliError, lookup};
use crate::ids::OrgId;
use crate::keys::{FirstUse, KeyId, KeyTrust, OrgKey, PublicKey, Rotation};

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Generate a new organization key: writes the private key (mode 0600, never overwrites) and
    /// prints the public key and its fingerprint.
    Generate {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a private key file (one line, for scripts).
    Public {
        /// The private key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Print the fingerprint of a public key, to compare out of band.
    Fingerprint {
        /// The public key (`fedq-pk1:…`).
        public_key: PublicKey,
    },
    /// Trust an organization's key by its fingerprint, after comparing it with the organization
    /// out of band (also to accept a new key after it confirmed a change).
    Trust {
        /// The organization: its id, or its name as the logged-in session sees it.
        org: String,
        /// The fingerprint (`SHA256:…`).
        fingerprint: KeyId,
        /// The store of trusted keys (default: yours; a node's is `<state_dir>/trusted-keys.json`).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// List the keys you trust, per organization, oldest first.
    Trusted {
        /// The store of trusted keys (default: yours).
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Publish your organization's key (as its administrator, logged in with `fedq login`).
    /// With `--previous-key`, the hand-over is signed with the key it replaces, so members follow
    /// the rotation by themselves; without it, each member must trust the new fingerprint.
    Publish {
        /// The private key file whose public key to publish.
        #[arg(long)]
        key: PathBuf,
        /// The private key file of the key it replaces (signs the rotation).
        #[arg(long)]
        previous_key: Option<PathBuf>,
    },
}

fn store(path: Option<PathBuf>) -> Result<KeyTrust, CliError> {
    let path = path.unwrap_or_else(crate::client::files::trust_store_path);
    Ok(KeyTrust::open(&path, FirstUse::Refuse)?)
}

/// The organization named `org`: an id as it is (no session needed), a name as the logged-in
/// session sees it (`fedq admin org list`). Its id, and its name when it is known.
fn organization(org: &str) -> Result<(OrgId, Option<String>), CliError> {
    if let Ok(id) = org.parse::<OrgId>() {
        return Ok((id, org_names().remove(&id)));
    }
    let client = super::research::session_client()?;
    let id = super::runtime()?.block_on(lookup::organization_id(&client, org))?;
    Ok((id, Some(org.to_owned())))
}

/// The names of the organizations the logged-in session sees, to print beside their ids. None
/// without a session: the store of trusted keys holds ids only, and works without a server
/// (a node's, say). When the server does not answer, the ids alone, and why on standard error.
fn org_names() -> BTreeMap<OrgId, String> {
    let Ok(client) = super::research::session_client() else { return BTreeMap::new() };
    let listed = super::runtime().and_then(|r| Ok(r.block_on(client.get("/organizations"))?));
    match listed {
        Ok(orgs) => orgs
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| Some((o["id"].as_str()?.parse().ok()?, o["name"].as_str()?.to_owned())))
            .collect(),
        Err(e) => {
            eprintln!("(organizations by id only: their names could not be read: {e})");
            BTreeMap::new()
        }
    }
}

/// An organization as people know it: its name, then its id; the id alone when the name is
/// not known.
fn label(org: OrgId, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} ({org})"),
        None => org.to_string(),
    }
}

pub(super) fn run(command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Generate { out } => {
            let key = OrgKey::generate();
            key.write_new(&out)?;
            println!("private key:  {} (mode 0600; keep it secret, back it up)", out.display());
            println!("public key:   {}", key.public());
            println!("fingerprint:  {}", key.id());
        }
        KeysCommand::Public { key } => println!("{}", OrgKey::load(&key)?.public()),
        KeysCommand::Fingerprint { public_key } => println!("{}", public_key.id()),
        KeysCommand::Trust { org, fingerprint, store: path } => {
            let store = store(path)?;
            let (id, name) = organization(&org)?;
            let shown = label(id, name.as_deref());
            if store.trust(id, fingerprint)? {
                eprintln!("organization {shown}: key {fingerprint} is now trusted (and current)");
            } else {
                eprintln!("organization {shown}: key {fingerprint} was already trusted");
            }
        }
        KeysCommand::Trusted { store: path } => {
            let trusted = store(path)?.list();
            let names = if trusted.is_empty() { BTreeMap::new() } else { org_names() };
            for (org, keys) in trusted {
                let org_label = label(org, names.get(&org).map(String::as_str));
                for (i, key) in keys.iter().enumerate() {
                    let current = if i + 1 == keys.len() { "current" } else { "earlier" };
                    let how = serde_json::to_value(key.how).unwrap_or_default();
                    println!("{org_label}  {}  {current}  {}", key.fingerprint, how.as_str().unwrap_or(""));
                }
            }
        }
        KeysCommand::Publish { key, previous_key } => {
            let new = OrgKey::load(&key)?;
            let client = super::research::session_client()?;
            let runtime = tokio::runtime::Runtime::new()
                .map_err(|source| CliError::Io { path: "tokio runtime".into(), source })?;
            runtime.block_on(async {
                let me = client.me().await.map_err(CliError::from)?;
                let org = me.organization().ok_or(CliError::NoOrganization)?;
                let mut publish = crate::contract::PublishKey {
                    public_key: new.public().to_string(),
                    rotation_signature: None,
                };
                if let Some(previous) = previous_key {
                    let old = OrgKey::load(&previous)?;
                    let rotation = Rotation::sign(org, &old, new.public());
                    publish.rotation_signature = Some(STANDARD.encode(rotation.signature));
                }
                let body = serde_json::to_value(&publish).expect("a request body serializes");
                client.put(&format!("/organizations/{org}/public-key"), &body).await?;
                // Your own new key is trusted here; partners follow the signed rotation.
                let trust = Arc::clone(client.trust());
                trust.trust_own(org, new.public())?;
                // The key is published: a name that cannot be read now only leaves the id.
                let shown = client.get(&format!("/organizations/{org}")).await.ok();
                let name = shown.as_ref().and_then(|o| o["name"].as_str());
                println!("published {} for organization {}", new.id(), label(org, name));
                Ok::<(), CliError>(())
            })?;
        }
    }
    Ok(())
}
