//! The database under a data directory: one sled tree holding the event log and every
//! projection (`keys` says which table a key belongs to), read and written through `kv`.
//! Only the store, the log and the projections touch it; everything above goes through
//! `Store`.

pub(crate) mod keys;
pub(crate) mod kv;

use std::path::{Path, PathBuf};

use crate::domain::Error;

/// How long closing waits for sled to let go of its files after the last handle is
/// dropped. sled finishes writes on its own thread pool, and the last of those threads
/// to drop its reference closes the file and releases the lock; on a busy machine that
/// can come a little after `close` has dropped everything of ours. Past this, closing
/// logs a warning and returns (a reopen would then fail with sled's lock error).
const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens (or creates) the database under `dir` with a page cache of `cache_bytes`.
pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<(sled::Db, sled::Tree), Error> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Storage(sled::Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot create data directory {}: {e}", dir.display()),
        )))
    })?;
    let db = sled::Config::new()
        .path(db_path(dir))
        .cache_capacity(cache_bytes)
        // Every commit flushes before it answers; sled's timer would only add work.
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("arbor")?;
    Ok((db, tree))
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("db")
}

/// The file sled locks while the database is open.
pub(crate) fn lock_file(dir: &Path) -> PathBuf {
    db_path(dir).join("db")
}

/// Waits until no one holds sled's lock on `lock_file`, so that a closed store can be
/// opened again at once (by a restart in the same process, `arbor rebuild`, a test).
/// sled offers no signal for this, so it polls, backing off from 1 ms to 50 ms.
pub(crate) async fn wait_released(lock_file: &Path) {
    let grace = RELEASE_GRACE;
    let deadline = tokio::time::Instant::now() + grace;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match std::fs::File::open(lock_file).map(|f| f.try_lock()) {
            // Got it (dropping the file releases it again), or there is no file at all.
            Ok(Ok(())) | Err(_) => return,
            Ok(Err(std::fs::TryLockError::Error(e))) => {
                tracing::warn!(error = %e, "cannot check that the database is released");
                return;
            }
            Ok(Err(std::fs::TryLockError::WouldBlock)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "the database is still locked {grace:?} after closing; a reopen may fail"
            );
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}
