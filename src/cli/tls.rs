//! `fedq tls`: a development certificate authority and the certificates it signs, for a test
//! federation or one machine. A real deployment uses its own CA (docs/operations.md).

use std::path::PathBuf;

use clap::Subcommand;

use super::CliError;
use crate::tls::devca;

#[derive(Debug, Subcommand)]
pub(super) enum TlsCommand {
    /// Create a development CA in a directory (ca.pem, and ca.key with mode 0600), or keep the
    /// one already there. Prints the CA certificate's path, the `ca_file` every client is given.
    DevCa {
        /// Where the CA lives.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's name, shown in its certificate.
        #[arg(long, default_value = "fedq development CA")]
        name: String,
    },
    /// Issue a certificate and key signed by the CA in `--ca-dir`, for a server (the names and
    /// addresses clients connect to) and usable as a client identity (mutual TLS).
    Issue {
        /// The CA's directory (`fedq tls dev-ca`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// File name of the certificate and key: NAME.pem and NAME.key.
        #[arg(long)]
        name: String,
        /// A DNS name or IP address the certificate is valid for; repeat as needed.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Where to write the files (default: the CA's directory).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

pub(super) fn run(command: TlsCommand) -> Result<(), CliError> {
    let failed = |e: devca::DevCaError| CliError::BadInput(e.to_string());
    match command {
        TlsCommand::DevCa { dir, name } => {
            let ca = devca::create_ca(&dir, &name).map_err(failed)?;
            let what = if ca.created { "created" } else { "kept the existing" };
            eprintln!("{what} CA in {} (key {}, mode 0600)", dir.display(), ca.key.display());
            println!("{}", ca.cert.display());
        }
        TlsCommand::Issue { ca_dir, name, hosts, out_dir } => {
            let out = out_dir.unwrap_or_else(|| ca_dir.clone());
            let issued = devca::issue(&ca_dir, &name, &hosts, &out).map_err(failed)?;
            println!("certificate: {}", issued.cert.display());
            println!("key:         {} (mode 0600)", issued.key.display());
        }
    }
    Ok(())
}
