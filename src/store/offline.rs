//! What is done to a stopped store, through its data directory: rebuild, check, disk
//! usage, and direct access to its tables for tools and tests.

use std::path::Path;

use crate::db::keys;
pub use crate::db::usage::TableUsage;
use crate::domain::Error;
use crate::log::rebuild::CheckReport;
use crate::pb;
use crate::projection;

use super::{REBUILD_FLUSH_LIMIT, StoreConfig};

/// What `rebuild` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Events replayed (the log is checked gap-free on the way).
    pub events: u64,
    /// Projected keys before and after.
    pub keys_before: usize,
    pub keys_after: usize,
    /// Keys whose presence or value changed; 0 when the projections were right.
    pub keys_changed: usize,
}

/// Whether `dir` holds a store (its database), without opening it.
pub fn exists(dir: &Path) -> bool {
    crate::db::db_path(dir).exists()
}

/// Runs `f` on the tree of a stopped store in `dir`, opened directly, for tools and
/// tests that read or damage its tables on purpose (the server and every command go
/// through [`Store`]); then flushes, closes, and waits until sled has let go of the
/// database's lock, so that the store opens at once afterwards, in this process or
/// another.
pub fn with_database<T>(dir: &Path, f: impl FnOnce(&sled::Tree) -> T) -> Result<T, Error> {
    let db = crate::db::config(&crate::db::db_path(dir)).open()?;
    let out = f(&db.open_tree(crate::db::TREE)?);
    db.flush()?;
    drop(db);
    if !crate::db::wait_released(&crate::db::lock_file(dir)) {
        return Err(Error::Unavailable("the database is still locked".into()));
    }
    Ok(out)
}

/// Re-derives every projection of the store in `dir` from its log (the store must not
/// be open elsewhere), checking the log is gap-free, and reports what changed. Never in
/// place: the new database is built beside the old one (after checking that the disk
/// has room for it and the reserve), flushed, and swapped in only when complete; a
/// rebuild that fails or is interrupted leaves the old store as it was.
pub fn rebuild(dir: &Path, config: &StoreConfig) -> Result<RebuildReport, Error> {
    let (db, tree) = crate::db::open(dir, config.cache_bytes)?;
    let size = crate::db::space::tree_size(&crate::db::db_path(dir))
        .map_err(|e| Error::Storage(sled::Error::Io(e)))?;
    let free = crate::db::space::available(dir).map_err(|e| Error::Storage(sled::Error::Io(e)))?;
    let need = size.saturating_add(config.min_free_bytes);
    if free < need {
        const MIB: u64 = 1024 * 1024;
        return Err(Error::Unavailable(format!(
            "a rebuild writes a new copy of the store beside the old one and needs {} MiB free (the store's {} MiB and the {} MiB reserve); the disk holding {} has {} MiB. Free space and try again; the store is unchanged.",
            need.div_ceil(MIB),
            size.div_ceil(MIB),
            config.min_free_bytes.div_ceil(MIB),
            dir.display(),
            free / MIB
        )));
    }
    let staging = crate::db::staging_path(dir);
    let built = (|| {
        let (new_db, new_tree) = crate::db::open_at(&staging, config.cache_bytes)?;
        let events = crate::log::rebuild::replay_into(&tree, &new_tree)?;
        crate::db::flush_bounded(&new_db, "the rebuilt store", REBUILD_FLUSH_LIMIT)?;
        let diff = crate::log::rebuild::compare(&tree, &new_tree)?;
        Ok::<_, Error>((events, diff))
    })();
    drop((db, tree));
    let (events, diff) = match built {
        Ok(built) => built,
        Err(e) => {
            // The unfinished copy goes now (the next open would remove it anyway).
            if crate::db::wait_released(&staging.join("db")) {
                let _ = std::fs::remove_dir_all(&staging);
            }
            return Err(e);
        }
    };
    for lock in [crate::db::lock_file(dir), staging.join("db")] {
        if !crate::db::wait_released(&lock) {
            return Err(Error::Unavailable(format!(
                "{} is still locked after the rebuild; the store is unchanged",
                lock.display()
            )));
        }
    }
    crate::db::swap_in(dir).map_err(|e| Error::Storage(sled::Error::Io(e)))?;
    Ok(RebuildReport {
        events,
        keys_before: usize::try_from(diff.keys_first).unwrap_or(usize::MAX),
        keys_after: usize::try_from(diff.keys_second).unwrap_or(usize::MAX),
        keys_changed: usize::try_from(diff.wrong + diff.extra).unwrap_or(usize::MAX),
    })
}

/// Verifies the store in `dir` (which must not be open elsewhere) without changing it:
/// the log gap-free and decodable, the projections equal to what the log implies.
pub fn check(dir: &Path, config: &StoreConfig) -> Result<CheckReport, Error> {
    let (_db, tree) = crate::db::open(dir, config.cache_bytes)?;
    crate::log::rebuild::check(&tree)
}

/// Where a stopped store's bytes go (`arbor disk-usage`).
#[derive(Debug, Clone, Default)]
pub struct DiskUsage {
    /// The database's files on disk.
    pub disk_bytes: u64,
    /// Keys and values of each table as stored.
    pub tables: Vec<TableUsage>,
    /// Metric points in the history chunks (each point is also in its log event).
    pub points: u64,
    /// Bytes of the log's `MetricsLogged` events: the points' first copy.
    pub metric_event_bytes: u64,
    /// Keys and values of the history chunks: the points' second copy.
    pub history_bytes: u64,
    pub runs: u64,
    /// Keys and values of run records and the indexes of runs.
    pub run_bytes: u64,
}

/// Measures a stopped store: every key by table, the metric events of the log, and
/// the files on disk.
pub fn disk_usage(dir: &Path, config: &StoreConfig) -> Result<DiskUsage, Error> {
    let (db, tree) = crate::db::open(dir, config.cache_bytes)?;
    let tables = crate::db::usage::tables(&tree)?;
    let mut metric_event_bytes = 0;
    for kv in tree.scan_prefix([keys::LOG]) {
        let (_, v) = kv?;
        let ev = <pb::Event as prost::Message>::decode(v.as_ref())?;
        if matches!(ev.payload, Some(pb::event::Payload::MetricsLogged(_))) {
            metric_event_bytes += v.len() as u64;
        }
    }
    let of = |prefix: u8| tables.iter().find(|t| t.prefix == prefix);
    let points =
        of(keys::HISTORY).map_or(0, |t| t.value_bytes) / projection::history::POINT_BYTES as u64;
    let history_bytes = of(keys::HISTORY).map_or(0, |t| t.key_bytes + t.value_bytes);
    let runs = of(keys::RUN).map_or(0, |t| t.keys);
    let run_bytes = tables
        .iter()
        .filter(|t| crate::db::usage::RUN_TABLES.contains(&t.prefix))
        .map(|t| t.key_bytes + t.value_bytes)
        .sum();
    drop(tree);
    drop(db);
    let disk_bytes = crate::db::space::tree_size(&crate::db::db_path(dir))
        .map_err(|e| Error::Storage(sled::Error::Io(e)))?;
    Ok(DiskUsage {
        disk_bytes,
        tables,
        points,
        metric_event_bytes,
        history_bytes,
        runs,
        run_bytes,
    })
}
