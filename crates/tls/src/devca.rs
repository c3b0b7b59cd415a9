//! A development certificate authority: `fedq tls dev-ca` makes one (its key never leaves the
//! directory, mode 0600), `fedq tls issue` signs certificates for the server, the broker, the
//! database and client identities. For a machine or a test federation; a real deployment uses
//! the CA of the consortium or a public one (docs/operations.md, "Certificates").

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no CA (run `fedq tls dev-ca` first).
    #[error("{0} holds no CA (ca.pem and ca.key); create one with `fedq tls dev-ca --dir {0}`")]
    NoCa(PathBuf),
    /// rcgen refused.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A name that cannot be a file name.
    #[error("{0:?} is not usable as a file name: letters, digits, '-', '_' and '.' only")]
    Name(String),
}

/// The files of a CA directory.
#[derive(Debug, Clone)]
pub struct CaFiles {
    /// The CA certificate, to give every client (`ca_file`).
    pub cert: PathBuf,
    /// Its private key (0600).
    pub key: PathBuf,
    /// Whether this call created it (false: it was there).
    pub created: bool,
}

/// A certificate and key just issued.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, followed by nothing else (the CA is `ca.pem`).
    pub cert: PathBuf,
    /// The private key (0600).
    pub key: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevCaError + '_ {
    move |source| DevCaError::Io { path: path.to_owned(), source }
}

/// Writes `contents` to `path` with `mode`.
fn write(path: &Path, contents: &str, mode: u32) -> Result<(), DevCaError> {
    crate::files::write_atomic(path, contents.as_bytes(), mode).map_err(io(path))
}

/// Validity from a day ago (clocks differ) for `days`.
fn validity(params: &mut CertificateParams, days: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let to_time = |d: Duration| {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(d.as_secs() - d.as_secs() % 86_400)
    };
    params.not_before = to_time(now.saturating_sub(Duration::from_secs(86_400)));
    params.not_after = to_time(now + Duration::from_secs(days * 86_400));
}

fn ca_params(name: &str) -> Result<CertificateParams, DevCaError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "fedq");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, 5 * 365);
    Ok(params)
}

/// Creates a CA named `name` in `dir` (`ca.pem`, `ca.key`), or keeps the one already there.
pub fn create_ca(dir: &Path, name: &str) -> Result<CaFiles, DevCaError> {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert.exists() && key.exists() {
        return Ok(CaFiles { cert, key, created: false });
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key_pair = KeyPair::generate()?;
    let ca = ca_params(name)?.self_signed(&key_pair)?;
    write(&key, &key_pair.serialize_pem(), 0o600)?;
    write(&cert, &ca.pem(), 0o644)?;
    Ok(CaFiles { cert, key, created: true })
}

/// Issues a certificate for `hosts` (DNS names or IP addresses), usable by a server and as a
/// client identity, signed by the CA in `ca_dir`; writes `NAME.pem` and `NAME.key` to `out_dir`.
pub fn issue(ca_dir: &Path, name: &str, hosts: &[String], out_dir: &Path) -> Result<Issued, DevCaError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(DevCaError::Name(name.to_owned()));
    }
    let (ca_cert, ca_key) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
    if !ca_cert.exists() || !ca_key.exists() {
        return Err(DevCaError::NoCa(ca_dir.to_owned()));
    }
    let ca_pem = std::fs::read_to_string(&ca_cert).map_err(io(&ca_cert))?;
    let ca_key_pair = KeyPair::from_pem(&std::fs::read_to_string(&ca_key).map_err(io(&ca_key))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key_pair)?;

    let mut params = CertificateParams::new(hosts.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, 365);
    let key_pair = KeyPair::generate()?;
    let cert = params.signed_by(&key_pair, &issuer)?;

    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let issued =
        Issued { cert: out_dir.join(format!("{name}.pem")), key: out_dir.join(format!("{name}.key")) };
    write(&issued.key, &key_pair.serialize_pem(), 0o600)?;
    write(&issued.cert, &cert.pem(), 0o644)?;
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_certs, load_key};
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_ca_issues_certificates_that_load_and_keys_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = create_ca(dir.path(), "test CA").unwrap();
        assert!(ca.created);
        assert!(!create_ca(dir.path(), "test CA").unwrap().created, "an existing CA is kept");
        let mode = std::fs::metadata(&ca.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let out = dir.path().join("certs");
        let issued = issue(dir.path(), "server", &["localhost".into(), "192.0.2.7".into()], &out).unwrap();
        assert_eq!(load_certs(&issued.cert).unwrap().len(), 1);
        load_key(&issued.key).unwrap();
        assert!(matches!(issue(dir.path(), "../x", &[], &out), Err(DevCaError::Name(_))));
        assert!(matches!(issue(&out, "s", &[], &out), Err(DevCaError::NoCa(_))));
    }
}
