//! What a node keeps on disk so that a restart (or `kill -9`) loses nothing and repeats nothing:
//!
//! - `seen.log`: the replay guard, one 24-byte record (message id, forget-after) per envelope
//!   handled, appended and synced before the delivery is acknowledged;
//! - `jobs/<job>/`: the job's record, its sealed result (written before it is published, so a
//!   redelivered `job_start` re-sends it instead of running again) and its container log;
//! - `runs/<run>/inbox/`: run messages that arrived before a container asked for them
//!   (`<id>.msg`), and those taken, marked with the job that took them (`<id>.taken-<job>`),
//!   so that a job that did not finish gives them back to its rerun;
//! - `runs/<run>/volume/`: the host side of the run's Docker volume;
//! - `subtasks/<task>/`: subtasks created by this node's jobs and the results that came back.
//!
//! Files are written to a temporary name, synced and renamed, so a crash leaves either the old
//! or the new content. The directory is mode 0700: it holds plaintext run messages and results.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::ids::{CollaborationId, JobId, MessageId, OrgId, RunId, TaskId};
use crate::time::Timestamp;

const SEEN_RECORD: usize = 24;

/// What storing a run message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Kept for the run's containers.
    New,
    /// Kept or taken before: a redelivery.
    Again,
    /// Refused: the run's inbox is at its quota.
    InboxFull,
}

/// How much a run's inbox may hold waiting.
#[derive(Debug, Clone, Copy)]
pub struct InboxQuota {
    /// Messages.
    pub messages: usize,
    /// Bytes.
    pub bytes: u64,
}

impl InboxQuota {
    /// No limit (tests of other rules).
    pub const NONE: Self = Self { messages: usize::MAX, bytes: u64::MAX };
}

/// The node's state directory.
#[derive(Debug)]
pub struct StateDir {
    root: PathBuf,
    seen: Mutex<SeenLog>,
    /// Held while a run message is checked against the inbox's quota and stored, so that
    /// messages handled at once cannot all pass the same count.
    inbox: Mutex<()>,
}

#[derive(Debug)]
struct SeenLog {
    file: File,
    ids: HashMap<MessageId, Timestamp>,
}

/// What the node remembers about a job it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub job: JobId,
    /// Its task.
    pub task: TaskId,
    /// Its run.
    pub run: RunId,
    /// Its collaboration.
    pub collaboration: CollaborationId,
    /// The organization results go to.
    pub requester: OrgId,
    /// When the `job_start` envelope expires: the record is kept that long.
    pub expires_at: Timestamp,
}

/// A run message waiting for a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The envelope's id (also the file name).
    pub id: MessageId,
    /// The sending organization.
    pub from: OrgId,
    /// The sending job.
    pub from_job: JobId,
    /// The topic.
    pub topic: String,
    /// The content.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Which waiting run messages a container asks for. A message another sender sent on the same
/// topic stays in the inbox: an algorithm that names the sender it expects cannot be handed a
/// value forged by another member of the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted<'a> {
    /// Only this topic.
    pub topic: Option<&'a str>,
    /// Only from this organization.
    pub from: Option<OrgId>,
}

impl Wanted<'_> {
    fn matches(&self, message: &StoredMessage) -> bool {
        self.topic.is_none_or(|t| t == message.topic) && self.from.is_none_or(|o| o == message.from)
    }
}

/// A subtask one of this node's jobs created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskRecord {
    /// The subtask.
    pub task: TaskId,
    /// Its run (the creating job's).
    pub run: RunId,
    /// Its jobs and where they run.
    pub jobs: Vec<(JobId, OrgId)>,
}

/// The opened result of one job of a subtask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskResult {
    /// The job.
    pub job: JobId,
    /// Where it ran.
    pub organization: OrgId,
    /// Its terminal status.
    pub status: crate::protocol::JobStatus,
    /// What it posted.
    #[serde(with = "serde_bytes")]
    pub output: Vec<u8>,
    /// Why it did not complete.
    pub reason: Option<String>,
}

impl StateDir {
    /// Opens (creating) the state directory and loads the replay guard, dropping ids whose time
    /// has passed.
    pub fn open(root: &Path, now: Timestamp) -> io::Result<Self> {
        for dir in ["", "jobs", "runs", "subtasks"] {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(root.join(dir))?;
        }
        let seen = SeenLog::open(&root.join("seen.log"), now)?;
        Ok(Self { root: root.to_owned(), seen: Mutex::new(seen), inbox: Mutex::new(()) })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether envelope `id` was handled before (and is still remembered).
    pub fn seen(&self, id: MessageId, now: Timestamp) -> bool {
        let seen = self.seen.lock().expect("not poisoned");
        seen.ids.get(&id).is_some_and(|&until| until >= now)
    }

    /// Remembers envelope `id` until `forget_after`, durably.
    pub fn record_seen(&self, id: MessageId, forget_after: Timestamp) -> io::Result<()> {
        let mut seen = self.seen.lock().expect("not poisoned");
        if seen.ids.contains_key(&id) {
            return Ok(());
        }
        let mut record = [0u8; SEEN_RECORD];
        record[..16].copy_from_slice(id.as_bytes());
        record[16..].copy_from_slice(&forget_after.as_millis().to_le_bytes());
        seen.file.write_all(&record)?;
        seen.file.sync_data()?;
        seen.ids.insert(id, forget_after);
        Ok(())
    }

    fn job_dir(&self, job: JobId) -> PathBuf {
        self.root.join("jobs").join(job.to_string())
    }

    /// Records that the node accepted `record.job`.
    pub fn save_job(&self, record: &JobRecord) -> io::Result<()> {
        let dir = self.job_dir(record.job);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        write_atomic(&dir.join("job.json"), &serde_json::to_vec(record).expect("records encode"))
    }

    /// The record of `job`, if the node accepted it before.
    pub fn job(&self, job: JobId) -> io::Result<Option<JobRecord>> {
        Ok(read_optional(&self.job_dir(job).join("job.json"))?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Stores the sealed result envelope of `job` before it is published.
    pub fn save_result(&self, job: JobId, envelope: &[u8]) -> io::Result<()> {
        write_atomic(&self.job_dir(job).join("result.env"), envelope)
    }

    /// The sealed result of `job`, if one was stored.
    pub fn result(&self, job: JobId) -> io::Result<Option<Vec<u8>>> {
        read_optional(&self.job_dir(job).join("result.env"))
    }

    /// Keeps the container log of `job` at the node.
    pub fn save_log(&self, job: JobId, log: &[u8]) -> io::Result<()> {
        write_atomic(&self.job_dir(job).join("container.log"), log)
    }

    /// Removes job records whose `job_start` has expired (a redelivery would be refused anyway).
    pub fn forget_expired_jobs(&self, now: Timestamp) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("jobs"))? {
            let dir = entry?.path();
            let record: Option<JobRecord> =
                read_optional(&dir.join("job.json"))?.and_then(|b| serde_json::from_slice(&b).ok());
            if record.is_none_or(|r| r.expires_at < now) {
                fs::remove_dir_all(&dir)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn inbox(&self, run: RunId) -> PathBuf {
        self.root.join("runs").join(run.to_string()).join("inbox")
    }

    /// Keeps a run message for the run's containers. Returns `Stored::Again` if it was kept (or
    /// taken) before: storing is idempotent, so a redelivery never duplicates a message; and
    /// `Stored::InboxFull` if the run already has `quota` waiting.
    pub fn put_message(&self, run: RunId, message: &StoredMessage, quota: InboxQuota) -> io::Result<Stored> {
        let dir = self.inbox(run);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let name = message.id.to_string();
        let _one_at_a_time = self.inbox.lock().expect("not poisoned");
        // One pass over the inbox: whether this message was kept or taken before, and how
        // much is waiting.
        let (waiting_name, taken_prefix) = (format!("{name}.msg"), format!("{name}.taken"));
        let bytes = rmp_serde::to_vec_named(message).expect("messages encode");
        let (mut waiting, mut waiting_bytes) = (0usize, bytes.len() as u64);
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let file = entry.file_name();
            let file = file.to_str().unwrap_or_default();
            if file == waiting_name || file.starts_with(&taken_prefix) {
                return Ok(Stored::Again);
            }
            if file.ends_with(".msg") {
                waiting += 1;
                waiting_bytes += entry.metadata()?.len();
            }
        }
        if waiting >= quota.messages || waiting_bytes > quota.bytes {
            return Ok(Stored::InboxFull);
        }
        write_atomic(&dir.join(format!("{name}.msg")), &bytes)?;
        Ok(Stored::New)
    }

    /// Takes the waiting messages of `run` (with `topic`, if given) for `job`, oldest first, at
    /// most `max`. A taken message is marked with its taker, not deleted, so that its
    /// redelivery is still recognised and a rerun of the job gets it again
    /// ([`StateDir::give_back_messages`]).
    pub fn take_messages(
        &self,
        run: RunId,
        job: JobId,
        wanted: Wanted<'_>,
        max: usize,
    ) -> io::Result<Vec<StoredMessage>> {
        let dir = self.inbox(run);
        let mut waiting = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "msg") {
                        let modified = entry.metadata()?.modified()?;
                        waiting.push((modified, path));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        waiting.sort();
        let mut taken = Vec::new();
        for (_, path) in waiting {
            if taken.len() >= max {
                break;
            }
            let Some(bytes) = read_optional(&path)? else { continue };
            let Ok(message) = rmp_serde::from_slice::<StoredMessage>(&bytes) else { continue };
            if !wanted.matches(&message) {
                continue;
            }
            fs::rename(&path, path.with_extension(format!("taken-{job}")))?;
            taken.push(message);
        }
        Ok(taken)
    }

    /// Gives back to `run`'s inbox the messages `job` took: it is about to run again after a
    /// restart, so it never finished with them. Returns how many. Their arrival order is kept
    /// (a rename keeps the modification time the inbox sorts by).
    pub fn give_back_messages(&self, run: RunId, job: JobId) -> io::Result<usize> {
        let dir = self.inbox(run);
        let suffix = format!(".taken-{job}");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut given = 0;
        for entry in entries {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some(id) = name.strip_suffix(&suffix) {
                fs::rename(&path, dir.join(format!("{id}.msg")))?;
                given += 1;
            }
        }
        if given > 0 {
            File::open(&dir)?.sync_all()?;
        }
        Ok(given)
    }

    /// Which organization's jobs `run`'s volume and messages belong to at this node: the
    /// requester of the first job of the run here, recorded once (a crash cannot change it).
    /// Claims it for `requester` if no one has; returns the owner.
    pub fn claim_run(&self, run: RunId, requester: OrgId) -> io::Result<OrgId> {
        let dir = self.root.join("runs").join(run.to_string());
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let path = dir.join("owner");
        write_once(&path, requester.to_string().as_bytes())?;
        let recorded = fs::read_to_string(&path)?;
        recorded
            .trim()
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{} is damaged", path.display())))
    }

    /// The file holding the run's disk (`containers/run_disk.rs`), in the run's directory,
    /// which is created (readable by the node alone) if need be.
    pub fn run_volume_image(&self, run: RunId) -> io::Result<PathBuf> {
        let dir = self.root.join("runs").join(run.to_string());
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        Ok(dir.join("volume.img"))
    }

    /// Where the run's disk file is or would be, without creating anything.
    pub fn run_volume_image_path(&self, run: RunId) -> PathBuf {
        self.root.join("runs").join(run.to_string()).join("volume.img")
    }

    /// Removes everything the node keeps for `run` (inbox and volume contents).
    pub fn remove_run(&self, run: RunId) -> io::Result<()> {
        match fs::remove_dir_all(self.root.join("runs").join(run.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn subtask_dir(&self, task: TaskId) -> PathBuf {
        self.root.join("subtasks").join(task.to_string())
    }

    /// Records a subtask created by one of this node's jobs.
    pub fn save_subtask(&self, record: &SubtaskRecord) -> io::Result<()> {
        let dir = self.subtask_dir(record.task);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        write_atomic(&dir.join("task.json"), &serde_json::to_vec(record).expect("records encode"))
    }

    /// A subtask this node created.
    pub fn subtask(&self, task: TaskId) -> io::Result<Option<SubtaskRecord>> {
        Ok(read_optional(&self.subtask_dir(task).join("task.json"))?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Stores the opened result of one job of a subtask, once: a later one for the same job
    /// (a redelivery, or another party's attempt to replace it) leaves the first. Returns whether
    /// it was stored.
    pub fn save_subtask_result(&self, task: TaskId, result: &SubtaskResult) -> io::Result<bool> {
        let dir = self.subtask_dir(task);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let bytes = rmp_serde::to_vec_named(result).expect("results encode");
        write_once(&dir.join(format!("{}.result", result.job)), &bytes)
    }

    /// The results of a subtask that arrived so far.
    pub fn subtask_results(&self, record: &SubtaskRecord) -> io::Result<Vec<SubtaskResult>> {
        let dir = self.subtask_dir(record.task);
        let mut results = Vec::new();
        for (job, _) in &record.jobs {
            if let Some(bytes) = read_optional(&dir.join(format!("{job}.result")))?
                && let Ok(result) = rmp_serde::from_slice(&bytes)
            {
                results.push(result);
            }
        }
        Ok(results)
    }
}

impl SeenLog {
    fn open(path: &Path, now: Timestamp) -> io::Result<Self> {
        let mut ids = HashMap::new();
        if let Some(bytes) = read_optional(path)? {
            // A torn last record (a crash mid-write) is ignored: its envelope was not acked.
            for record in bytes.chunks_exact(SEEN_RECORD) {
                let id = MessageId::from_bytes(record[..16].try_into().expect("16 bytes"));
                let until =
                    Timestamp::from_millis(i64::from_le_bytes(record[16..].try_into().expect("8 bytes")));
                if until >= now {
                    ids.insert(id, until);
                }
            }
        }
        // Rewrite without the forgotten ids, so the log does not grow forever.
        let mut compact = Vec::with_capacity(ids.len() * SEEN_RECORD);
        for (id, until) in &ids {
            compact.extend_from_slice(id.as_bytes());
            compact.extend_from_slice(&until.as_millis().to_le_bytes());
        }
        write_atomic(path, &compact)?;
        let file = OpenOptions::new().append(true).mode(0o600).open(path)?;
        Ok(Self { file, ids })
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::files::write_atomic(path, bytes, 0o600)
}

/// Writes `path` durably unless it exists: the new file is linked into place, which fails
/// atomically when the name is taken. Returns whether it was written.
pub(crate) fn write_once(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    // A name of its own per write: `with_extension` would give `part-a.1-x` and `part-a.2-x`
    // (rounds an algorithm names) the same one, and two writes at once would share the file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    let linked = fs::hard_link(&tmp, path);
    fs::remove_file(&tmp)?;
    match linked {
        Ok(()) => {
            if let Some(parent) = path.parent() {
                File::open(parent)?.sync_all()?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(mut file) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_that_differ_after_a_dot_are_written_at_once_each_with_its_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let path = dir.path().join(format!("part-a.{i}-org"));
                std::thread::spawn(move || {
                    let bytes = vec![i as u8; 1 << 16];
                    assert!(write_once(&path, &bytes).unwrap());
                    assert_eq!(fs::read(&path).unwrap(), bytes);
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 8, "no temporary file left: {left:?}");
    }

    #[test]
    fn a_subtask_result_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Timestamp::now()).unwrap();
        let (task, job, org) = (TaskId::new(), JobId::new(), OrgId::new());
        let record = SubtaskRecord { task, run: RunId::new(), jobs: vec![(job, org)] };
        let result = |output: &[u8]| SubtaskResult {
            job,
            organization: org,
            status: crate::protocol::JobStatus::Completed,
            output: output.to_vec(),
            reason: None,
        };
        assert!(state.save_subtask_result(task, &result(b"first")).unwrap());
        assert!(!state.save_subtask_result(task, &result(b"replaced")).unwrap());
        assert_eq!(state.subtask_results(&record).unwrap(), vec![result(b"first")]);
    }

    #[test]
    fn the_replay_guard_survives_a_restart_and_forgets_expired_ids() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let (kept, expired) = (MessageId::random(), MessageId::random());
        {
            let state = StateDir::open(dir.path(), now).unwrap();
            assert!(!state.seen(kept, now));
            state.record_seen(kept, now.saturating_add(Duration::from_secs(60))).unwrap();
            state.record_seen(expired, now.saturating_add(Duration::from_millis(1))).unwrap();
            assert!(state.seen(kept, now));
        }
        let later = now.saturating_add(Duration::from_secs(1));
        let state = StateDir::open(dir.path(), later).unwrap();
        assert!(state.seen(kept, later));
        assert!(!state.seen(expired, later));
        assert_eq!(fs::metadata(dir.path().join("seen.log")).unwrap().len(), SEEN_RECORD as u64);
    }

    #[test]
    fn a_torn_record_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let id = MessageId::random();
        {
            let state = StateDir::open(dir.path(), now).unwrap();
            state.record_seen(id, now.saturating_add(Duration::from_secs(60))).unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(dir.path().join("seen.log")).unwrap();
        file.write_all(&[7; 10]).unwrap();
        let state = StateDir::open(dir.path(), now).unwrap();
        assert!(state.seen(id, now));
    }

    #[test]
    fn run_messages_are_stored_once_and_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Timestamp::now()).unwrap();
        let run = RunId::new();
        let message = |topic: &str| StoredMessage {
            id: MessageId::random(),
            from: OrgId::new(),
            from_job: JobId::new(),
            topic: topic.into(),
            body: b"x".to_vec(),
        };
        let (x1, other) = (message("x1"), message("other"));
        let put = |m: &StoredMessage| state.put_message(run, m, InboxQuota::NONE).unwrap();
        assert_eq!(put(&x1), Stored::New);
        assert_eq!(put(&x1), Stored::Again, "a redelivery is not stored twice");
        assert_eq!(put(&other), Stored::New);
        let (job, rerun_of_other) = (JobId::new(), JobId::new());
        let topic = |t| Wanted { topic: Some(t), from: None };
        assert_eq!(state.take_messages(RunId::new(), job, Wanted::default(), 10).unwrap(), vec![]);
        assert_eq!(state.take_messages(run, job, topic("x1"), 10).unwrap(), vec![x1.clone()]);
        assert!(state.take_messages(run, job, topic("x1"), 10).unwrap().is_empty());
        assert_eq!(put(&x1), Stored::Again, "nor after it was taken");
        // Another job's rerun gives back nothing of this one's; this job's rerun gets x1 again,
        // once.
        assert_eq!(state.give_back_messages(run, rerun_of_other).unwrap(), 0);
        assert_eq!(state.give_back_messages(run, job).unwrap(), 1);
        assert_eq!(put(&x1), Stored::Again, "a redelivery is still recognised");
        assert_eq!(state.take_messages(run, job, topic("x1"), 10).unwrap(), vec![x1]);
        assert_eq!(state.take_messages(run, job, Wanted::default(), 10).unwrap(), vec![other]);
        assert_eq!(state.give_back_messages(RunId::new(), job).unwrap(), 0);
    }

    #[test]
    fn a_message_from_another_sender_is_left_for_whoever_expects_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Timestamp::now()).unwrap();
        let (run, job, honest, forger) = (RunId::new(), JobId::new(), OrgId::new(), OrgId::new());
        let message = |from| StoredMessage {
            id: MessageId::random(),
            from,
            from_job: JobId::new(),
            topic: "secure-sum/1".into(),
            body: b"x".to_vec(),
        };
        let (forged, genuine) = (message(forger), message(honest));
        // The forgery arrives first.
        state.put_message(run, &forged, InboxQuota::NONE).unwrap();
        state.put_message(run, &genuine, InboxQuota::NONE).unwrap();
        let from = |o| Wanted { topic: Some("secure-sum/1"), from: Some(o) };
        assert_eq!(state.take_messages(run, job, from(honest), 10).unwrap(), vec![genuine]);
        assert!(state.take_messages(run, job, from(honest), 10).unwrap().is_empty());
        assert_eq!(state.take_messages(run, job, from(forger), 10).unwrap(), vec![forged]);
    }

    #[test]
    fn a_run_inbox_refuses_messages_past_its_quota() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Timestamp::now()).unwrap();
        let (run, job) = (RunId::new(), JobId::new());
        let message = || StoredMessage {
            id: MessageId::random(),
            from: OrgId::new(),
            from_job: JobId::new(),
            topic: "flood".into(),
            body: vec![7; 100],
        };
        let quota = InboxQuota { messages: 3, bytes: 1 << 20 };
        for _ in 0..3 {
            assert_eq!(state.put_message(run, &message(), quota).unwrap(), Stored::New);
        }
        assert_eq!(state.put_message(run, &message(), quota).unwrap(), Stored::InboxFull);
        assert_eq!(
            state.put_message(RunId::new(), &message(), quota).unwrap(),
            Stored::New,
            "other runs are not affected"
        );
        // Taken messages no longer count.
        assert_eq!(state.take_messages(run, job, Wanted::default(), 1).unwrap().len(), 1);
        assert_eq!(state.put_message(run, &message(), quota).unwrap(), Stored::New);
        // Nor may one message pass the byte quota.
        let small = InboxQuota { messages: 100, bytes: 50 };
        assert_eq!(state.put_message(RunId::new(), &message(), small).unwrap(), Stored::InboxFull);
    }

    #[test]
    fn a_run_belongs_to_its_first_requester() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path(), Timestamp::now()).unwrap();
        let (run, first, second) = (RunId::new(), OrgId::new(), OrgId::new());
        assert_eq!(state.claim_run(run, first).unwrap(), first);
        assert_eq!(state.claim_run(run, second).unwrap(), first, "the first claim stays");
        let reopened = StateDir::open(dir.path(), Timestamp::now()).unwrap();
        assert_eq!(reopened.claim_run(run, second).unwrap(), first, "across a restart too");
        reopened.remove_run(run).unwrap();
        assert_eq!(reopened.claim_run(run, second).unwrap(), second, "a run removed is free again");
    }

    #[test]
    fn job_results_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        let state = StateDir::open(dir.path(), now).unwrap();
        let record = JobRecord {
            job: JobId::new(),
            task: TaskId::new(),
            run: RunId::new(),
            collaboration: CollaborationId::new(),
            requester: OrgId::new(),
            expires_at: now.saturating_add(Duration::from_secs(5)),
        };
        state.save_job(&record).unwrap();
        assert_eq!(state.result(record.job).unwrap(), None);
        state.save_result(record.job, b"sealed").unwrap();
        assert_eq!(state.job(record.job).unwrap(), Some(record.clone()));
        assert_eq!(state.result(record.job).unwrap().as_deref(), Some(&b"sealed"[..]));
        assert_eq!(state.forget_expired_jobs(now).unwrap(), 0);
        assert_eq!(state.forget_expired_jobs(now.saturating_add(Duration::from_secs(6))).unwrap(), 1);
        assert_eq!(state.job(record.job).unwrap(), None);
    }
}
