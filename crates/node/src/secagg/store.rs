//! What a node keeps of a run's secure aggregation, in the run's directory of the state
//! directory (`runs/<run>/secure-sum/`), removed with the run:
//!
//! - `own.key`: this node's X25519 secret for the run (mode 0600, like the rest of the state);
//! - `key-<org>`: each peer's public key for the run, the first one it sent;
//! - `key-sent-<org>`: that this node's own key went to that peer;
//! - `part-<round>-<org>`: the masked contribution a participant sent this node, as aggregator;
//! - `sent-<round>`: the masked part this node contributes to the round and the aggregator it
//!   goes to, kept before it is sent and never given back. A call made again (after a crash, a
//!   timeout, a publish the broker may or may not have taken) sends these same bytes again; a
//!   call with other values is refused, for two different vectors under the same masks would
//!   tell the aggregator their difference.
//!
//! Each file is written once (`write_once`): a redelivered message finds its file and changes
//! nothing; a different second key or part from the same sender is told apart and refused.

use std::fs;
use std::io;
use std::path::PathBuf;

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use super::mask::Round;
use crate::ids::{OrgId, RunId};
use crate::state::{InboxQuota, StateDir, read_optional, write_once};

/// What keeping a peer's key or part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Kept now.
    New,
    /// The same bytes were kept before: a redelivery.
    Again,
    /// The sender sent something else before, which stays.
    Conflict,
    /// The run's quota of secure-sum state is full.
    Full,
}

/// One run's secure-aggregation files at this node.
pub struct RunSums {
    dir: PathBuf,
}

impl RunSums {
    /// The files of `run` (the directory is made on first write).
    pub fn of(state: &StateDir, run: RunId) -> Self {
        Self { dir: state.root().join("runs").join(run.to_string()).join("secure-sum") }
    }

    fn ensure(&self) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir)
    }

    /// This node's secret for the run, made on first use.
    pub fn own_secret(&self) -> io::Result<StaticSecret> {
        self.ensure()?;
        let path = self.dir.join("own.key");
        let mut fresh = Zeroizing::new([0u8; 32]);
        getrandom::fill(fresh.as_mut()).map_err(|e| io::Error::other(format!("no random source: {e}")))?;
        // Two contributions at once both try; the first write stays and both read it.
        write_once(&path, fresh.as_ref())?;
        let bytes = Zeroizing::new(fs::read(&path)?);
        let secret = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{} is damaged", path.display()))
        })?;
        Ok(StaticSecret::from(secret))
    }

    /// Keeps `org`'s public key for the run.
    pub fn put_key(&self, org: OrgId, public: [u8; 32]) -> io::Result<Kept> {
        self.put(&format!("key-{org}"), &public, None)
    }

    /// `org`'s public key, if it sent one.
    pub fn key(&self, org: OrgId) -> io::Result<Option<[u8; 32]>> {
        Ok(read_optional(&self.dir.join(format!("key-{org}")))?.and_then(|b| <[u8; 32]>::try_from(b).ok()))
    }

    /// Whether this node's key went to `org`.
    pub fn key_sent(&self, org: OrgId) -> bool {
        self.dir.join(format!("key-sent-{org}")).exists()
    }

    /// Records that this node's key went to `org`.
    pub fn mark_key_sent(&self, org: OrgId) -> io::Result<()> {
        self.ensure()?;
        write_once(&self.dir.join(format!("key-sent-{org}")), b"").map(drop)
    }

    /// Keeps the part `org` sent for `round`, within `quota` (the run inbox's, per sender).
    pub fn put_part(&self, round: &Round, org: OrgId, bytes: &[u8], quota: InboxQuota) -> io::Result<Kept> {
        self.put(&format!("part-{round}-{org}"), bytes, Some((org, quota)))
    }

    /// The part `org` sent for `round`, as it arrived.
    pub fn part(&self, round: &Round, org: OrgId) -> io::Result<Option<Vec<u8>>> {
        read_optional(&self.dir.join(format!("part-{round}-{org}")))
    }

    /// Keeps `part` as this node's contribution to `round`, going to `aggregator`: `New` the
    /// first time, `Again` when the same was kept before (send it again), `Conflict` when
    /// another part or aggregator was (refuse). Written before the part leaves.
    pub fn keep_sent(&self, round: &Round, aggregator: OrgId, part: &[u8]) -> io::Result<Kept> {
        let mut record = aggregator.as_uuid().as_bytes().to_vec();
        record.extend_from_slice(part);
        self.put(&format!("sent-{round}"), &record, None)
    }

    /// Whether `org` may keep another part here under `quota`: each sender has the run inbox's
    /// quota to itself, so that no partner can fill a run's rounds for the others.
    fn room_for(&self, org: OrgId, incoming: usize, quota: InboxQuota) -> io::Result<bool> {
        let suffix = format!("-{org}");
        let (mut files, mut total) = (0usize, incoming as u64);
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("part-") && name.ends_with(&suffix) {
                files += 1;
                total += entry.metadata()?.len();
            }
        }
        Ok(files < quota.messages && total <= quota.bytes)
    }

    fn put(&self, name: &str, bytes: &[u8], quota: Option<(OrgId, InboxQuota)>) -> io::Result<Kept> {
        self.ensure()?;
        let path = self.dir.join(name);
        if let Some(kept) = read_optional(&path)? {
            return Ok(if kept == bytes { Kept::Again } else { Kept::Conflict });
        }
        if let Some((org, quota)) = quota
            && !self.room_for(org, bytes.len(), quota)?
        {
            return Ok(Kept::Full);
        }
        if write_once(&path, bytes)? {
            return Ok(Kept::New);
        }
        // Written by a delivery handled at the same moment.
        let kept = fs::read(&path)?;
        Ok(if kept == bytes { Kept::Again } else { Kept::Conflict })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn org(n: u8) -> OrgId {
        format!("00000000-0000-4000-8000-0000000000{n:02x}").parse().unwrap()
    }

    #[test]
    fn keys_and_parts_are_kept_once_and_a_different_second_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Timestamp::now()).unwrap();
        let sums = RunSums::of(&state, RunId::new());
        let quota = InboxQuota { messages: 2, bytes: 1 << 20 };
        assert_eq!(sums.put_key(org(1), [1; 32]).unwrap(), Kept::New);
        assert_eq!(sums.put_key(org(1), [1; 32]).unwrap(), Kept::Again);
        assert_eq!(sums.put_key(org(1), [2; 32]).unwrap(), Kept::Conflict);
        assert_eq!(sums.key(org(1)).unwrap(), Some([1; 32]));
        let (r1, r2, r3) =
            (Round::parse("r1").unwrap(), Round::parse("r2").unwrap(), Round::parse("r3").unwrap());
        assert_eq!(sums.put_part(&r1, org(1), b"a", quota).unwrap(), Kept::New);
        assert_eq!(sums.put_part(&r1, org(1), b"b", quota).unwrap(), Kept::Conflict);
        assert_eq!(sums.put_part(&r2, org(1), b"c", quota).unwrap(), Kept::New);
        assert_eq!(sums.put_part(&r3, org(1), b"d", quota).unwrap(), Kept::Full);
        assert_eq!(
            sums.put_part(&r3, org(2), b"d", quota).unwrap(),
            Kept::New,
            "each sender has its own quota"
        );
        assert_eq!(sums.part(&r1, org(1)).unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(sums.keep_sent(&r1, org(2), b"masked").unwrap(), Kept::New);
        assert_eq!(sums.keep_sent(&r1, org(2), b"masked").unwrap(), Kept::Again);
        assert_eq!(sums.keep_sent(&r1, org(2), b"other").unwrap(), Kept::Conflict);
        assert_eq!(sums.keep_sent(&r1, org(3), b"masked").unwrap(), Kept::Conflict);
        assert_eq!(sums.own_secret().unwrap().to_bytes(), sums.own_secret().unwrap().to_bytes());
    }
}
