//! Free space on the disk under the store. sled cannot recover in-process from a write
//! the disk refused (its error is sticky until the database is reopened), and a store
//! opened on a full disk can be left unreadable; so the store keeps a reserve: writes
//! are refused while less than the reserve is free, and resume by themselves once it is.

use std::path::Path;

const MIB: u64 = 1024 * 1024;

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub(crate) fn available(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// `Err` with a message for people when less than `reserve` bytes are free under `dir`.
/// A filesystem that cannot be asked counts as having room: the write itself will say.
pub(crate) fn check_reserve(dir: &Path, reserve: u64) -> Result<(), String> {
    if reserve == 0 {
        return Ok(());
    }
    match available(dir) {
        Ok(free) if free < reserve => Err(format!(
            "the disk holding {} has {} MiB free, below the {} MiB Arbor keeps free (--min-free-space-mb); writes are refused until space is freed, then resume by themselves",
            dir.display(),
            free / MIB,
            reserve.div_ceil(MIB),
        )),
        _ => Ok(()),
    }
}

/// Disk usage of everything under `path` (apparent sizes), for checking that a copy fits.
pub(crate) fn tree_size(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += tree_size(&entry?.path())?;
    }
    Ok(total)
}

/// What a storage error means, for people: the operating system's words for an I/O
/// error (`No space left on device`), never Rust's debug text.
pub(crate) fn describe(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            "the disk is full (no space left on device)".to_string()
        }
        sled::Error::Io(io) => format!("the disk refused a write: {io}"),
        sled::Error::Corruption { .. } => "the store's files are damaged".to_string(),
        other => other.to_string(),
    }
}
