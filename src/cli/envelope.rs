//! `fedq envelope`: seal, inspect and open envelopes by hand, to see exactly what the server and
//! the broker see and what only the recipient can read.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use super::{CliError, read_input, write_output};
use crate::envelope::{self, MemoryReplayGuard, OpenPolicy, Padding, Route, SealOptions};
use crate::ids::{CollaborationId, OrgId, RunId, TaskId};
use crate::keys::{Identity, Keyring, OrgKey, PublicKey};
use crate::protocol::{JobStatus, Kind};
use crate::time::Timestamp;

#[derive(Debug, Subcommand)]
pub(super) enum EnvelopeCommand {
    /// Seal a file for another organization.
    Seal {
        /// The sender's private key file.
        #[arg(long)]
        key: PathBuf,
        /// The sender organization.
        #[arg(long)]
        from_org: OrgId,
        /// The recipient organization.
        #[arg(long)]
        to_org: OrgId,
        /// The recipient's public key (`fedq-pk1:…`).
        #[arg(long)]
        to_public_key: PublicKey,
        /// The envelope kind.
        #[arg(long, default_value = "run_message", value_parser = kind_parser())]
        kind: Kind,
        /// The collaboration (a new random id if omitted).
        #[arg(long)]
        collaboration: Option<CollaborationId>,
        /// The task (a new random id if omitted).
        #[arg(long)]
        task: Option<TaskId>,
        /// The run (a new random id if omitted).
        #[arg(long)]
        run: Option<RunId>,
        /// How long the envelope stays valid, e.g. `1h` or `7days`.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "7days")]
        ttl: Duration,
        /// Pad the sealed payload to a Padmé size bucket.
        #[arg(long)]
        pad: bool,
        /// The payload file, or `-` for standard input.
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the envelope, or `-` for standard output.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the clear header of an envelope as JSON: all that the server and broker can read.
    Inspect {
        /// The envelope file, or `-` for standard input.
        file: PathBuf,
    },
    /// Check and open an envelope sealed for this organization.
    Open {
        /// The recipient's private key file.
        #[arg(long)]
        key: PathBuf,
        /// The recipient organization.
        #[arg(long)]
        org: OrgId,
        /// The sender organization.
        #[arg(long)]
        from_org: OrgId,
        /// The sender's public key (`fedq-pk1:…`).
        #[arg(long)]
        from_public_key: PublicKey,
        /// The envelope file, or `-` for standard input.
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write the payload, or `-` for standard output.
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
}

/// The envelope kinds as command-line values: the protocol's own names, listed in `--help`.
fn kind_parser() -> impl clap::builder::TypedValueParser<Value = Kind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Kind::ALL.map(Kind::as_str))
        .map(|name| name.parse::<Kind>().expect("a possible value is a kind"))
}

pub(super) fn run(command: EnvelopeCommand) -> Result<(), CliError> {
    match command {
        EnvelopeCommand::Seal {
            key,
            from_org,
            to_org,
            to_public_key,
            kind,
            collaboration,
            task,
            run,
            ttl,
            pad,
            input,
            out,
        } => {
            let me = Identity::new(from_org, OrgKey::load(&key)?);
            let route = Route {
                kind,
                collaboration: collaboration.unwrap_or_default(),
                task: task.unwrap_or_default(),
                run: run.unwrap_or_default(),
                // Status-carrying kinds sent by hand report a completed job.
                status: kind.carries_status().then_some(JobStatus::Completed),
            };
            let payload = read_input(&input)?;
            let options = SealOptions { ttl, padding: if pad { Padding::Padme } else { Padding::None } };
            let sealed =
                envelope::seal(&me, to_org, &to_public_key, &route, &payload, &options, Timestamp::now())?;
            write_output(&out, &sealed.bytes)?;
            tracing::debug!(id = %sealed.header.id, bytes = sealed.bytes.len(), "sealed");
        }
        EnvelopeCommand::Inspect { file } => {
            let bytes = read_input(&file)?;
            let header = envelope::peek_header(&bytes, usize::MAX)?;
            let json = serde_json::json!({
                "version": header.version,
                "id": header.id.to_string(),
                "kind": header.kind,
                "sender": header.sender,
                "sender_key": header.sender_key.to_string(),
                "recipient": header.recipient,
                "recipient_key": header.recipient_key.to_string(),
                "collaboration": header.collaboration,
                "task": header.task,
                "run": header.run,
                "created_at_ms": header.created_at.as_millis(),
                "expires_at_ms": header.expires_at.as_millis(),
                "status": header.status,
                "envelope_bytes": bytes.len(),
            });
            println!("{}", serde_json::to_string_pretty(&json).expect("JSON values always serialize"));
        }
        EnvelopeCommand::Open { key, org, from_org, from_public_key, input, out } => {
            let me = Identity::new(org, OrgKey::load(&key)?);
            let mut keyring = Keyring::new();
            keyring.insert(from_org, from_public_key);
            let bytes = read_input(&input)?;
            // One invocation opens one envelope, so the replay guard lives only this long; the
            // node keeps a persistent one.
            let mut guard = MemoryReplayGuard::new();
            let opened =
                envelope::open(&bytes, &me, &keyring, &mut guard, &OpenPolicy::default(), Timestamp::now())?;
            write_output(&out, &opened.payload)?;
        }
    }
    Ok(())
}
