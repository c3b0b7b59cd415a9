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
    /// As many run disks as `limits.max_run_disks` are kept already.
    #[error(
        "{count} runs hold a run volume here already, limits.max_run_disks ({max}): this run is refused \
         (it does not wait); send it again once one of them ends, or raise the limit if the disk has room"
    )]
    TooMany {
        /// Run disks kept now.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Allocating the run's disk would leave less than `limits.state_reserve_mib` free.
    #[error(
        "a run volume of {mib} MiB at {} would leave {left} MiB free, less than limits.state_reserve_mib \
         ({reserve}) the node keeps for its own records: free space there, or lower limits.run_volume_mib",
        .path.display()
    )]
    Reserve {
        /// The file.
        path: PathBuf,
        /// Its size.
        mib: u64,
        /// What would be left.
        left: u64,
        /// The reserve.
        reserve: u64,
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

/// What a run's disk may take: its size, how many run disks may exist at once, and the space
/// the state directory keeps free.
#[derive(Debug, Clone, Copy)]
pub struct DiskLimits {
    /// Each run disk's size, in MiB.
    pub mib: u64,
    /// Run disks at once.
    pub max_disks: usize,
    /// MiB left free after allocating one.
    pub reserve_mib: u64,
}

/// Makes the run's file at `image` if it is missing (allocated in full, ext4 with its root
/// owned by `owner`), attaches it to a loop device if it is not attached, and returns the
/// device. A new file is made only within `limits` ([`room_for`]).
pub async fn attach(image: &Path, limits: DiskLimits, owner: (u32, u32)) -> Result<PathBuf, DiskError> {
    let mib = limits.mib;
    if !image.exists() {
        room_for(image, limits).await?;
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

/// Whether a new run disk at `image` (`<runs>/<run>/volume.img`) fits `limits`: fewer run
/// disks than `max_disks` under `<runs>` (the caller holds the lock under which disks are made
/// and removed), and `reserve_mib` still free once it is allocated.
pub async fn room_for(image: &Path, limits: DiskLimits) -> Result<(), DiskError> {
    let runs = image.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
    let name = image.file_name().unwrap_or_default();
    let count = std::fs::read_dir(runs)
        .map(|dirs| dirs.filter_map(Result::ok).filter(|d| d.path().join(name).exists()).count())
        .unwrap_or(0);
    if count >= limits.max_disks {
        return Err(DiskError::TooMany { count, max: limits.max_disks });
    }
    let free = free_mib(runs).await.map_err(|detail| DiskError::Tool { command: "df".into(), detail })?;
    if free < limits.mib {
        let detail = format!("{free} MiB free");
        return Err(DiskError::NoRoom { path: image.to_owned(), mib: limits.mib, detail });
    }
    let left = free - limits.mib;
    if left < limits.reserve_mib {
        return Err(DiskError::Reserve {
            path: image.to_owned(),
            mib: limits.mib,
            left,
            reserve: limits.reserve_mib,
        });
    }
    Ok(())
}

/// Free MiB on the file system that holds, or will hold, `path` (the nearest directory of it
/// that exists: the state directory is made at the first start), as `df` reports it.
pub async fn free_mib(path: &Path) -> Result<u64, String> {
    let existing = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    let out = Command::new("df")
        .args(["--output=avail", "-B1M"])
        .arg(existing)
        .output()
        .await
        .map_err(|e| format!("df: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("`df` said {}", String::from_utf8_lossy(&out.stderr).trim()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_disks: usize, reserve_mib: u64) -> DiskLimits {
        DiskLimits { mib: 16, max_disks, reserve_mib }
    }

    #[tokio::test]
    async fn a_new_disk_needs_a_free_place_among_the_run_disks_and_the_reserve() {
        let runs = tempfile::tempdir().unwrap();
        let image = |run: &str| {
            let dir = runs.path().join(run);
            std::fs::create_dir_all(&dir).unwrap();
            dir.join("volume.img")
        };
        room_for(&image("one"), limits(1, 0)).await.unwrap();
        std::fs::write(image("one"), b"").unwrap();
        // A run directory without a disk (an inbox only) does not count.
        image("inbox-only");
        let err = room_for(&image("two"), limits(1, 0)).await.unwrap_err();
        assert!(matches!(err, DiskError::TooMany { count: 1, max: 1 }), "{err}");
        assert!(err.to_string().contains("limits.max_run_disks"), "{err}");
        room_for(&image("two"), limits(2, 0)).await.unwrap();
        // More reserve than the file system has: refused, naming the setting.
        let err = room_for(&image("two"), limits(2, u64::MAX / 2)).await.unwrap_err();
        assert!(matches!(err, DiskError::Reserve { .. }), "{err}");
        assert!(err.to_string().contains("limits.state_reserve_mib"), "{err}");
        // A disk larger than the file system: no room, whatever the reserve.
        let huge = DiskLimits { mib: u64::MAX / 2, max_disks: 2, reserve_mib: 0 };
        let err = room_for(&image("two"), huge).await.unwrap_err();
        assert!(matches!(err, DiskError::NoRoom { .. }), "{err}");
    }
}
