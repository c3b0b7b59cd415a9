//! A run's disk: a file of `limits.run_volume_mib` under the run's state directory, allocated in
//! full when the run's first job here starts, formatted ext4 once and attached to a loop device,
//! which the run's Docker volume mounts. A container that fills its run volume fills that file
//! system only: the node's state directory keeps its space, so the node goes on recording jobs,
//! messages and results; and a run for which the disk has no room is refused before its
//! container starts, with an error that names the setting, instead of finding out mid-run.
//!
//! Loop devices outlive the node's process (they are the kernel's) but not a reboot: a volume
//! is used again only while its device is still backed by this run's file
//! ([`backing_file`]), so a device number reused by another run after a reboot never mounts
//! another run's data.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// A run's disk could not be prepared or released.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// No room for the run's file under the state directory.
    #[error(
        "no room for a run volume of {mib} MiB at {}: free space there, or lower limits.run_volume_mib ({detail})",
        .path.display()
    )]
    NoRoom {
        /// The file.
        path: PathBuf,
        /// Its size.
        mib: u64,
        /// What `fallocate` said.
        detail: String,
    },
    /// A tool failed.
    #[error("run volume: `{command}` failed: {detail}")]
    Tool {
        /// The command.
        command: String,
        /// Its error output.
        detail: String,
    },
}

/// Makes the run's file at `image` if it is missing (allocated in full, ext4 with its root
/// owned by `owner`), attaches it to a loop device if it is not attached, and returns the
/// device.
pub async fn attach(image: &Path, mib: u64, owner: (u32, u32)) -> Result<PathBuf, DiskError> {
    if !image.exists() {
        // Made under another name and renamed, so that a half-made file is never attached.
        // Unique, so that two attempts at once never share a half-made file (the caller also
        // holds the run's lock).
        let making = image.with_extension(format!("making-{}", std::process::id() ^ rand_suffix()));
        let size = format!("{mib}MiB");
        if let Err(e) = tool("fallocate", &[OsStr::new("-l"), OsStr::new(&size), making.as_os_str()]).await {
            let _ = std::fs::remove_file(&making);
            let detail = match e {
                DiskError::Tool { detail, .. } => detail,
                other => other.to_string(),
            };
            return Err(DiskError::NoRoom { path: image.to_owned(), mib, detail });
        }
        let root = format!("root_owner={}:{}", owner.0, owner.1);
        let mut args: Vec<&OsStr> =
            ["-q", "-F", "-m", "0", "-O", "^has_journal", "-E", &root].into_iter().map(OsStr::new).collect();
        args.push(making.as_os_str());
        let formatted = tool("mkfs.ext4", &args).await;
        if let Err(e) = formatted {
            let _ = std::fs::remove_file(&making);
            return Err(e);
        }
        std::fs::rename(&making, image).map_err(|e| DiskError::Tool {
            command: format!("rename {}", making.display()),
            detail: e.to_string(),
        })?;
    }
    // `--nooverlap`: the device already backed by this file, if there is one.
    let args = [OsStr::new("--find"), OsStr::new("--show"), OsStr::new("--nooverlap"), image.as_os_str()];
    let device = PathBuf::from(tool("losetup", &args).await?.trim());
    let expected = std::fs::canonicalize(image).ok();
    if backing_file(&device).is_none_or(|b| Some(b) != expected) {
        return Err(DiskError::Tool {
            command: format!("losetup --find --show --nooverlap {}", image.display()),
            detail: format!("{} is not backed by the run's file", device.display()),
        });
    }
    Ok(device)
}

/// Detaches every loop device backed by `image`. Idempotent; a device still mounted is freed
/// by the kernel when it is unmounted.
pub async fn detach(image: &Path) {
    let Ok(listed) = tool("losetup", &[OsStr::new("--associated"), image.as_os_str()]).await else {
        return;
    };
    for device in listed.lines().filter_map(|l| l.split(':').next()).filter(|d| d.starts_with("/dev/")) {
        if let Err(e) = tool("losetup", &[OsStr::new("--detach"), OsStr::new(device)]).await {
            tracing::warn!(device, error = %e, "could not detach a run volume's loop device");
        }
    }
}

/// A number that differs between calls (for a temporary file's name).
fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(2_654_435_761)
}

/// The file backing loop device `device`, if it is one and is attached.
fn backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim()))
}

/// Runs `program args`; its standard output.
async fn tool(program: &str, args: &[&OsStr]) -> Result<String, DiskError> {
    let command =
        || format!("{program} {}", args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| DiskError::Tool { command: command(), detail: e.to_string() })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(DiskError::Tool {
            command: command(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
