//! The private key file: one line of text, readable by its owner only.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use super::OrgKey;

const SECRET_PREFIX: &str = "fedq-sk1:";
const HEADER: &str = "# fedq organization private key. Keep it secret: anyone holding it reads \
                      what is sealed for the organization and can sign as it.\n";

/// Why a key file could not be written or read. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists; keys are never overwritten.
    #[error("{path}: already exists; refusing to overwrite a key (move it away first)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may read or write the file.
    #[error(
        "{path}: permissions {mode:04o} let other users access the private key; \
         run `chmod 600 {path}` if it is yours, or generate a new key if it may have leaked"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a fedq private key.
    #[error("{path}: not a fedq private key ({reason})")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, without any of the file's content.
        reason: &'static str,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

/// A file that holds one 32-byte secret seed: a comment line saying what it is, then
/// `<prefix><base64url seed>`. Organization keys and the server's transparency log key use it.
#[derive(Debug, Clone, Copy)]
pub struct SeedFile {
    /// The comment written above the key line (ends with a newline).
    pub header: &'static str,
    /// What starts the key line, naming the kind of key.
    pub prefix: &'static str,
}

/// An organization's private key file.
pub const ORG_KEY_FILE: SeedFile = SeedFile { header: HEADER, prefix: SECRET_PREFIX };

impl SeedFile {
    /// Writes `seed` to a new file `path` with mode 0600. Fails if the file exists.
    pub fn write_new(&self, path: &Path, seed: &[u8; 32]) -> Result<(), KeyFileError> {
        let io = |source| KeyFileError::Io { path: path.to_owned(), source };
        // `create_new` makes the existence check and the creation one atomic step, and the mode
        // is set at creation, so there is no moment when the file is readable by others.
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
                match e.kind() {
                    io::ErrorKind::AlreadyExists => KeyFileError::Exists { path: path.to_owned() },
                    _ => io(e),
                }
            })?;
        let line =
            Zeroizing::new(format!("{}{}{}\n", self.header, self.prefix, URL_SAFE_NO_PAD.encode(seed)));
        file.write_all(line.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Reads a seed file, refusing one that group or others can access.
    pub fn load(&self, path: &Path) -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
        let io = |source| KeyFileError::Io { path: path.to_owned(), source };
        let malformed = |reason| KeyFileError::Malformed { path: path.to_owned(), reason };
        let mut file = File::open(path).map_err(io)?;
        // Check the open file rather than the path, so the check and the read see the same file.
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen { path: path.to_owned(), mode });
        }
        let mut text = Zeroizing::new(String::new());
        // A key file is a few hundred bytes; reading at most 4 KiB keeps a wrong path (a disk
        // image, say) from being read into memory whole.
        std::io::Read::by_ref(&mut file).take(4096).read_to_string(&mut text).map_err(|e| {
            match e.kind() {
                io::ErrorKind::InvalidData => malformed("not text"),
                _ => io(e),
            }
        })?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| malformed("no key line"))?;
        let encoded = line.strip_prefix(self.prefix).ok_or_else(|| {
            malformed("the key line does not start with this kind of key's prefix (fedq-sk1: for an organization key, fedq-log1: for a log key)")
        })?;
        let bytes = Zeroizing::new(
            URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed("the key is not base64url"))?,
        );
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed("the key is not 32 bytes"))?;
        Ok(Zeroizing::new(seed))
    }
}

impl OrgKey {
    /// Writes the key to a new file `path` with mode 0600. Fails if the file exists.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyFileError> {
        ORG_KEY_FILE.write_new(path, self.seed())
    }

    /// Reads a key file, refusing one that group or others can access.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        ORG_KEY_FILE.load(path).map(OrgKey::from_seed)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn write_then_load_gives_the_same_key_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("org.key");
        let key = OrgKey::generate();
        key.write_new(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(OrgKey::load(&path).unwrap().public(), key.public());
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("org.key");
        OrgKey::generate().write_new(&path).unwrap();
        let before = fs::read(&path).unwrap();
        let err = OrgKey::generate().write_new(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn refuses_a_key_others_can_read_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("org.key");
        let key = OrgKey::generate();
        key.write_new(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = OrgKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::TooOpen { mode: 0o644, .. }), "{err}");
        let shown = format!("{err} {err:?}");
        assert!(shown.contains("chmod 600"));
        assert!(!shown.contains(&URL_SAFE_NO_PAD.encode(key.seed())));
    }

    #[test]
    fn malformed_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("empty", "".as_bytes()),
            ("comment", b"# nothing\n"),
            ("prefix", b"ssh-ed25519 AAAA\n"),
            ("base64", b"fedq-sk1:!!!\n"),
            ("short", b"fedq-sk1:AAAA\n"),
            ("binary", &[0xff, 0xfe, 0x00]),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let err = OrgKey::load(&path).unwrap_err();
            assert!(matches!(err, KeyFileError::Malformed { .. }), "{name}: {err}");
        }
    }
}
