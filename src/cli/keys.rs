//! `fedq keys`: organization key files.

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use crate::keys::{OrgKey, PublicKey};

#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process; boxing buys nothing")]
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
}

pub(super) fn run(command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Generate { out } => {
            let key = OrgKey::generate();
            key.write_new(&out)?;
            println!("private key:  {} (mode 0600; keep it secret, back it up)", out.display());
            println!("public key:   {}", key.public());
            println!("fingerprint:  {}", key.id().grouped());
        }
        KeysCommand::Public { key } => println!("{}", OrgKey::load(&key)?.public()),
        KeysCommand::Fingerprint { public_key } => println!("{}", public_key.id().grouped()),
    }
    Ok(())
}
