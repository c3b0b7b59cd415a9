//! The log key: the Ed25519 key that signs tree heads. It lives in a file of its own (mode 0600),
//! created at the first start, and never in the database: a copy of the database (a backup, a
//! replica) gives no one the power to sign a head.

use std::path::Path;

use ed25519_dalek::SigningKey;

use crate::keys::{KeyFileError, SeedFile};

const LOG_KEY_FILE: SeedFile = SeedFile {
    header: "# fedq transparency log key. Keep it secret: anyone holding it can sign tree heads in \
             the log's name. Every replica of one server uses the same file.\n",
    prefix: "fedq-log1:",
};

/// Reads the log key at `path`, or creates it there when no file exists.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyFileError> {
    match LOG_KEY_FILE.load(path) {
        Ok(seed) => Ok(SigningKey::from_bytes(&seed)),
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(seed.as_mut_slice()).map_err(|e| KeyFileError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
            match LOG_KEY_FILE.write_new(path, &seed) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "transparency log key created");
                    Ok(SigningKey::from_bytes(&seed))
                }
                // Another replica created it first: use that one.
                Err(KeyFileError::Exists { .. }) => load_or_create(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let first = load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&path).unwrap().verifying_key(), first.verifying_key());
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyFileError::TooOpen { .. })));
    }

    #[test]
    fn an_organization_key_is_not_taken_for_a_log_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("org.key");
        crate::keys::OrgKey::generate().write_new(&path).unwrap();
        assert!(matches!(load_or_create(&path), Err(KeyFileError::Malformed { .. })));
    }
}
