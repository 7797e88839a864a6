//! The database under a data directory: one sled tree holding the event log and every
//! projection (`keys` says which table a key belongs to), read and written through `kv`;
//! opening it, a rebuild's copy swapped in beside it, its lock; `health` (whether the
//! store takes writes), `space` (the disk reserve) and `usage` (where the bytes go).
//! Only the committer writes it; search, the hierarchy, artifacts and backups read it
//! through `kv`; the surfaces above go through `Store`.

pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod kv;
pub(crate) mod space;
pub mod usage;

use std::path::{Path, PathBuf};

use crate::domain::Error;

/// How long closing waits for sled to let go of its files after the last handle is
/// dropped. sled finishes writes on its own thread pool, and the last of those threads
/// to drop its reference closes the file and releases the lock; on a busy machine that
/// can come a little after `close` has dropped everything of ours. Past this, closing
/// logs a warning and returns (a reopen would then fail with sled's lock error).
const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// An open database: the handles every reader and the committer clone.
#[derive(Clone)]
pub(crate) struct Handles {
    pub(crate) db: sled::Db,
    pub(crate) tree: sled::Tree,
}

/// Opens (or creates) the database under `dir` with a page cache of `cache_bytes`.
/// First finishes or undoes a rebuild that was interrupted (see `swap_in`).
pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<(sled::Db, sled::Tree), Error> {
    prepare(dir)?;
    open_at(&db_path(dir), cache_bytes)
}

/// Opens (or creates) a replica's cache of a shared log under `dir`. Commits do not
/// flush it (they are durable in the shared log): sled flushes it every second, and
/// whatever a crash loses is read from the log again.
pub(crate) fn open_cache(dir: &Path, cache_bytes: u64) -> Result<(sled::Db, sled::Tree), Error> {
    prepare(dir)?;
    let db = config(&db_path(dir))
        .cache_capacity(cache_bytes)
        .flush_every_ms(Some(1000))
        .open()?;
    let tree = db.open_tree(TREE)?;
    Ok((db, tree))
}

fn prepare(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Storage(sled::Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot create data directory {}: {e}", dir.display()),
        )))
    })?;
    settle_swap(dir).map_err(|e| Error::Storage(sled::Error::Io(e)))
}

/// The one sled tree of a database: the log and every projection, by key prefix.
pub(crate) const TREE: &str = "arbor";

/// Opens (or creates) a database at exactly `path`.
pub(crate) fn open_at(path: &Path, cache_bytes: u64) -> Result<(sled::Db, sled::Tree), Error> {
    let db = config(path)
        .cache_capacity(cache_bytes)
        // Every commit flushes before it answers; sled's timer would only add work.
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree(TREE)?;
    Ok((db, tree))
}

/// sled's settings for the database at `path`: what anything that opens it must use.
pub(crate) fn config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .segment_size(segment_size(path))
}

/// sled's segment size for new databases. With sled's default (512 KiB) every tree node
/// over 128 KiB goes to a file of its own, and more stale space stays behind: the REST
/// benchmark's store (31.6 MiB of tables) took 125 MiB on disk with 512 KiB or 1 MiB
/// segments, 108 with 2 MiB, 89 with 4 MiB, 91 with 8 MiB, at the same write rates.
/// sled holds write buffers of this size, so memory rises with it: the server's RSS
/// after that run was 59, 61, 61 and 74 MiB.
const SEGMENT_SIZE: usize = 4 * 1024 * 1024;

/// The segment size a database was created with (sled refuses to open it with another),
/// or [`SEGMENT_SIZE`] for a new one. A rebuild or a restore writes a new database, so
/// it moves an older store to the current size.
fn segment_size(path: &Path) -> usize {
    // Text lines, then a binary checksum.
    let Ok(conf) = std::fs::read(path.join("conf")) else {
        return SEGMENT_SIZE;
    };
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(SEGMENT_SIZE)
}

pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join("db")
}

/// Where a rebuild builds the new database, beside the old one.
pub(crate) fn staging_path(dir: &Path) -> PathBuf {
    dir.join("db.rebuild")
}

/// Where the old database waits during the swap.
fn retired_path(dir: &Path) -> PathBuf {
    dir.join("db.old")
}

/// Puts a complete, flushed and closed database at `staging_path` in the place of the
/// old one. Two renames; `db.old` exists only between them and after, so whatever
/// moment a crash comes, `settle_swap` at the next open knows what to do.
pub(crate) fn swap_in(dir: &Path) -> std::io::Result<()> {
    let (live, staged, retired) = (db_path(dir), staging_path(dir), retired_path(dir));
    sync_dir(&staged)?;
    std::fs::rename(&live, &retired)?;
    std::fs::rename(&staged, &live)?;
    sync_dir(dir)?;
    std::fs::remove_dir_all(&retired)
}

/// After a crash: a staging database next to a live one is an unfinished rebuild
/// (dropped, the old store is as it was); a retired database without a live one means
/// the swap stopped between its renames (the staged one is complete: finish it); a
/// retired one beside a live one is a finished swap's leftover.
pub(crate) fn settle_swap(dir: &Path) -> std::io::Result<()> {
    let (live, staged, retired) = (db_path(dir), staging_path(dir), retired_path(dir));
    match (live.exists(), staged.exists(), retired.exists()) {
        (false, true, true) => {
            tracing::warn!("finishing a rebuild that was interrupted while swapping in");
            std::fs::rename(&staged, &live)?;
            sync_dir(dir)?;
            std::fs::remove_dir_all(&retired)
        }
        (false, false, true) => {
            tracing::warn!("restoring the database a rebuild had set aside");
            std::fs::rename(&retired, &live)?;
            sync_dir(dir)
        }
        (true, staged_exists, retired_exists) => {
            if staged_exists {
                tracing::warn!("removing an unfinished rebuild; the store is as it was");
                std::fs::remove_dir_all(&staged)?;
            }
            if retired_exists {
                std::fs::remove_dir_all(&retired)?;
            }
            Ok(())
        }
        (false, _, false) => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Flushes `db`, but never waits silently: a flush the disk does not finish is reported
/// every `FLUSH_REPORT_EVERY`, and given up (with an error) after `limit`. A thread
/// left behind then is stuck in the kernel; the caller exits.
pub(crate) fn flush_bounded(
    db: &sled::Db,
    what: &str,
    limit: std::time::Duration,
) -> Result<(), Error> {
    const FLUSH_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    let (tx, rx) = std::sync::mpsc::channel();
    let db = db.clone();
    std::thread::Builder::new()
        .name("arbor-flush".into())
        .spawn(move || {
            let _ = tx.send(db.flush());
        })
        .map_err(|e| Error::Storage(sled::Error::Io(e)))?;
    let started = std::time::Instant::now();
    loop {
        match rx.recv_timeout(FLUSH_REPORT_EVERY.min(limit)) {
            Ok(result) => return result.map(|_| ()).map_err(Error::from),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Unavailable(format!("flushing {what} failed")));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let waited = started.elapsed();
                if waited >= limit {
                    return Err(Error::Unavailable(format!(
                        "flushing {what} did not finish in {} s: the disk is not taking writes (full, or failing)",
                        waited.as_secs()
                    )));
                }
                tracing::warn!(
                    "flushing {what} has taken {} s so far; is the disk full or failing?",
                    waited.as_secs()
                );
            }
        }
    }
}

/// The file sled locks while the database is open.
pub(crate) fn lock_file(dir: &Path) -> PathBuf {
    db_path(dir).join("db")
}

/// Waits until no one holds sled's lock on `lock_file`, so that a closed store can be
/// opened again at once (by a restart in the same process, `arbor rebuild`, a swap, a
/// test); returns whether it was released. sled offers no signal for this, so it polls,
/// backing off from 1 ms to 50 ms, for at most `RELEASE_GRACE`. Blocking: call it from
/// async code through `spawn_blocking`.
pub(crate) fn wait_released(lock_file: &Path) -> bool {
    let deadline = std::time::Instant::now() + RELEASE_GRACE;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match std::fs::File::open(lock_file).map(|f| f.try_lock()) {
            // Got it (dropping the file releases it again), or there is no file at all.
            Ok(Ok(())) | Err(_) => return true,
            Ok(Err(std::fs::TryLockError::Error(e))) => {
                tracing::warn!(error = %e, "cannot check that the database is released");
                return true;
            }
            Ok(Err(std::fs::TryLockError::WouldBlock)) => {}
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                "the database is still locked {RELEASE_GRACE:?} after closing; a reopen may fail"
            );
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store made with sled's old default segment size opens with it (sled refuses any
    /// other), keeps its data, and a new store gets the current size.
    #[test]
    fn existing_databases_keep_their_segment_size() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        {
            let db = sled::Config::new()
                .path(&old)
                .segment_size(512 * 1024)
                .open()
                .unwrap();
            db.open_tree("arbor").unwrap().insert(b"k", b"v").unwrap();
            db.flush().unwrap();
        }
        // sled's threads let go of the lock a moment after the last handle is dropped.
        assert!(
            wait_released(&old.join("db")),
            "sled released the old store"
        );
        assert_eq!(segment_size(&old), 512 * 1024);
        let (db, tree) = open_at(&old, 1 << 20).unwrap();
        assert_eq!(tree.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        drop((db, tree));

        let new = dir.path().join("new");
        assert_eq!(segment_size(&new), SEGMENT_SIZE);
        let (db, _) = open_at(&new, 1 << 20).unwrap();
        db.flush().unwrap();
        drop(db);
        assert_eq!(segment_size(&new), SEGMENT_SIZE);
    }
}
