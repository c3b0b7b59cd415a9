//! TLS on every hop between machines, with rustls: the settings each client connection takes
//! (a CA file, an optional client certificate, and the explicit permission to talk in plain
//! text), the rule that refuses plain text to anything but loopback, the client configurations
//! built from them for HTTPS (reqwest), and what AMQPS (lapin, in `fedq-broker`) and PostgreSQL (in `fedq-server`) build theirs from, the server's reloadable
//! certificate (`server`), and the development CA (`devca`).
//!
//! Without a CA file a client trusts the system's roots; with one it trusts that CA alone, so a
//! federation with a private CA cannot be fooled by a certificate another CA issued.

use fedq_core::files;

pub mod devca;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// What went wrong setting up TLS, or why a plain-text address is refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("{0} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")")]
    NoCertificate(PathBuf),
    /// The file holds no PEM private key.
    #[error("{0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    /// A client certificate was given without its key, or the other way round.
    #[error("{setting}: cert_file and key_file go together; set both or neither")]
    HalfIdentity {
        /// The settings section.
        setting: String,
    },
    /// rustls refused the certificates or keys.
    #[error("TLS setup failed for {what}: {detail}")]
    Setup {
        /// What was being set up.
        what: String,
        /// rustls's reason.
        detail: String,
    },
    /// A plain-text address that is not on this machine, without permission.
    #[error(
        "{setting} = {scheme}://{host}… would send credentials and keys across the network in \
         plain text; use {secure} (see docs/operations.md, \"Certificates\"), or, only on a \
         network you trust, {allow}"
    )]
    Plaintext {
        /// The setting (or command-line argument) that holds the address.
        setting: String,
        /// How to allow plain text there: the setting, or the command line's flag.
        allow: String,
        /// The plain scheme.
        scheme: String,
        /// The address form to use instead (`https://`, `postgres://…?sslmode=require`).
        secure: String,
        /// The host.
        host: String,
    },
}

/// TLS settings of one client connection (`[server.tls]`, `[broker.tls]`, `[database.tls]`…).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// PEM file of the CA that signs the peer's certificate. Unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate presented to the peer (mutual TLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Allow `http://`, `amqp://` or a database without `sslmode=require` to an address that is
    /// not loopback. Only for a network that is itself trusted: everything crosses it in clear.
    pub allow_plaintext: bool,
}

/// Whether `host` (a name or an address, IPv6 possibly in brackets) is this machine's loopback.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Makes sure the process has one rustls crypto provider (aws-lc-rs), whoever asks first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The process's rustls crypto provider (installing it first if nobody has).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_crypto_provider();
    rustls::crypto::CryptoProvider::get_default().cloned().expect("a provider was just installed")
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

/// Every certificate of a PEM file (a chain, or several CAs).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_in(path, &read(path)?)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_in(path, &read(path)?)
}

/// The certificates of `pem`, read from `path`; none is an error naming the file.
fn certs_in(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The private key of `pem`, read from `path`.
fn key_in(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::NoKey(path.to_owned()))
}

/// A client identity as PEM: the certificate chain, then the private key.
pub type IdentityPem = (Vec<u8>, Vec<u8>);

impl ClientTls {
    /// Refuses `scheme://host` when the scheme is plain, the host is not loopback and plain text
    /// is not allowed. `setting` names the setting in the error (`broker.url`).
    pub fn check_plaintext(&self, setting: &str, scheme: &str, host: &str) -> Result<(), TlsError> {
        let secure = match scheme {
            "http" => "https://",
            "amqp" => "amqps://",
            "postgres" | "postgresql" => "postgres://…?sslmode=require",
            _ => return Ok(()),
        };
        if self.allow_plaintext || is_loopback(host) {
            return Ok(());
        }
        let section = setting.rsplit_once('.').map_or(setting, |(s, _)| s);
        Err(TlsError::Plaintext {
            setting: setting.to_owned(),
            allow: format!("set {section}.tls.allow_plaintext = true"),
            scheme: scheme.to_owned(),
            secure: secure.to_owned(),
            host: host.to_owned(),
        })
    }

    /// Checks an `http(s)://` URL against the plain-text rule.
    pub fn check_http_url(&self, setting: &str, url: &str) -> Result<(), TlsError> {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if host_port.starts_with('[') {
            host_port.split_inclusive(']').next().unwrap_or(host_port)
        } else {
            host_port.split(':').next().unwrap_or(host_port)
        };
        self.check_plaintext(setting, &scheme.to_ascii_lowercase(), host)
    }

    /// The CA file's PEM text, if one is set (checked to hold a certificate).
    pub fn ca_pem(&self) -> Result<Option<String>, TlsError> {
        let Some(path) = &self.ca_file else { return Ok(None) };
        let pem = read(path)?;
        certs_in(path, &pem)?;
        Ok(Some(String::from_utf8_lossy(&pem).into_owned()))
    }

    /// The client certificate and key files, if set (both or neither).
    fn identity_files(&self, setting: &str) -> Result<Option<(&Path, &Path)>, TlsError> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(TlsError::HalfIdentity { setting: setting.to_owned() }),
        }
    }

    /// The client certificate and key, if set.
    fn identity(
        &self,
        setting: &str,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
        let Some((cert, key)) = self.identity_files(setting)? else { return Ok(None) };
        Ok(Some((load_certs(cert)?, load_key(key)?)))
    }

    /// The roots a client trusts: the CA file alone, or the system's roots.
    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in load_certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::Setup {
                        what: path.display().to_string(),
                        detail: e.to_string(),
                    })?;
                }
            }
            None => {
                // Unreadable system certificates are skipped: the rest still verify.
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        Ok(roots)
    }

    /// A rustls client configuration: these roots, this identity, TLS 1.2 and 1.3.
    pub fn rustls_config(&self, setting: &str) -> Result<rustls::ClientConfig, TlsError> {
        let setup = |e: rustls::Error| TlsError::Setup { what: setting.to_owned(), detail: e.to_string() };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(setup)?
            .with_root_certificates(self.roots()?);
        match self.identity(setting)? {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(setup),
            None => Ok(builder.with_no_client_auth()),
        }
    }

    /// An HTTP client that verifies servers with these settings.
    pub fn http_client(&self, setting: &str, timeout: Duration) -> Result<reqwest::Client, TlsError> {
        let tls = self.rustls_config(setting)?;
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| TlsError::Setup { what: setting.to_owned(), detail: e.to_string() })
    }

    /// The client identity's certificate chain and key, PEM, checked here so that a bad file
    /// is reported when settings are read, not at every reconnect (for AMQPS, whose client
    /// takes PEM rather than a rustls configuration).
    pub fn identity_pem(&self, setting: &str) -> Result<Option<IdentityPem>, TlsError> {
        match self.identity_files(setting)? {
            Some((cert, key)) => {
                let (cert_pem, key_pem) = (read(cert)?, read(key)?);
                certs_in(cert, &cert_pem)?;
                key_in(key, &key_pem)?;
                Ok(Some((cert_pem, key_pem)))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_recognised() {
        for host in ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["192.0.2.1", "fedq.invalid", "localhost.fedq.invalid", "0.0.0.0", "[fe80::1]"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn plain_text_is_refused_beyond_loopback_unless_allowed() {
        let strict = ClientTls::default();
        assert!(strict.check_http_url("server.url", "http://127.0.0.1:8080").is_ok());
        assert!(strict.check_http_url("server.url", "http://[::1]:8080/x").is_ok());
        assert!(strict.check_http_url("server.url", "https://192.0.2.3").is_ok());
        let err = strict.check_http_url("server.url", "http://user:pw@192.0.2.3:8080/api").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("https://") && text.contains("server.tls.allow_plaintext"), "{text}");
        assert!(!text.contains("pw"), "credentials are not repeated: {text}");
        assert!(strict.check_plaintext("broker.url", "amqp", "broker.fedq.invalid").is_err());
        assert!(strict.check_plaintext("broker.url", "amqps", "broker.fedq.invalid").is_ok());
        let lax = ClientTls { allow_plaintext: true, ..ClientTls::default() };
        assert!(lax.check_http_url("server.url", "http://192.0.2.3").is_ok());
    }

    #[test]
    fn unreadable_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let tls = ClientTls { ca_file: Some(empty.clone()), ..ClientTls::default() };
        assert!(matches!(tls.rustls_config("x"), Err(TlsError::NoCertificate(p)) if p == empty));
        let missing = ClientTls { ca_file: Some(dir.path().join("nope.pem")), ..ClientTls::default() };
        assert!(matches!(missing.rustls_config("x"), Err(TlsError::Read { .. })));
        let half = ClientTls { cert_file: Some(empty), ..ClientTls::default() };
        assert!(matches!(half.rustls_config("broker"), Err(TlsError::HalfIdentity { .. })));
    }
}
