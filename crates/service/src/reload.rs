//! Files a long-running process takes up again without a restart: on SIGHUP, and when one of
//! them changes (checked every two seconds). The server's TLS certificate and the node's policy
//! are reloaded this way.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// How often the files are looked at for a change.
pub const POLL: Duration = Duration::from_secs(2);

/// What identifies a version of a file: its inode (an editor or `fedq node policy` replaces the
/// file by a rename), modification time and size. `None` while the file cannot be read.
type Stamp = Option<(u64, SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.modified().ok()?, meta.len()))
}

/// The files' versions as last loaded. Taken before the files are read, so that a change made
/// while they were being read is seen at the next look.
#[derive(Debug, Clone)]
pub struct Stamps {
    paths: Vec<PathBuf>,
    seen: Vec<Stamp>,
}

impl Stamps {
    /// The current versions of `paths`.
    pub fn take(paths: Vec<PathBuf>) -> Self {
        let seen = paths.iter().map(|p| stamp(p)).collect();
        Self { paths, seen }
    }

    /// Whether any file differs from the version last seen; remembers the new versions, so that
    /// a broken file is reported once per change and not every two seconds.
    fn changed(&mut self) -> bool {
        let now: Vec<Stamp> = self.paths.iter().map(|p| stamp(p)).collect();
        // A file that is gone (mid-rename, or deleted) is no new version to load.
        if now.iter().any(Option::is_none) || now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

/// Calls `reload` with the reason ("SIGHUP", "the file changed") whenever the process gets a
/// SIGHUP or one of the files changes, until `stop` turns true. `reload` logs its own outcome.
pub async fn watch(
    mut stamps: Stamps,
    mut stop: watch::Receiver<bool>,
    mut reload: impl FnMut(&'static str),
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let why = tokio::select! {
            _ = hup => {
                stamps.changed();
                "SIGHUP"
            }
            _ = tokio::time::sleep(POLL) => if stamps.changed() { "the file changed" } else { continue },
            _ = stop.wait_for(|s| *s) => return,
        };
        reload(why);
    }
}

#[cfg(test)]
mod tests {
    use super::Stamps;

    #[test]
    fn a_replaced_file_is_a_change_once_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let mut stamps = Stamps::take(vec![path.clone()]);
        assert!(!stamps.changed());
        // Same size, replaced by a rename: a new inode.
        let next = dir.path().join("next");
        std::fs::write(&next, "a = 2\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(stamps.changed());
        assert!(!stamps.changed(), "seen once, then remembered");
        std::fs::remove_file(&path).unwrap();
        assert!(!stamps.changed(), "a missing file is nothing to load");
    }
}
