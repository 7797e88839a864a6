//! `arbor migrate-store`: a store's log moved between the embedded store and
//! PostgreSQL, either way. The log is the truth, so the log is what moves: into
//! PostgreSQL as rows (each replica builds its projections from them), out of it into a
//! new data directory whose projections are derived as it is written. Artifacts follow
//! when asked.

use std::path::Path;

use crate::db::keys;
use crate::domain::Error;
use crate::log::postgres::{Postgres, Stored};

/// Events appended per PostgreSQL transaction while moving a log in; a copy that stops
/// halfway resumes where the database's log ends.
const APPEND_CHUNK: usize = 2000;

/// What a migration moved.
#[derive(Debug, Clone, Default)]
pub struct MigrateReport {
    /// Events copied now (a resumed copy counts only the rest).
    pub events: u64,
    /// Events that were already there from an earlier, interrupted run.
    pub already: u64,
    pub artifact_files: u64,
    pub artifact_bytes: u64,
}

/// Copies the log of the stopped store in `dir` into the PostgreSQL database `url`,
/// whose log must be empty or a prefix of it (an earlier run that stopped): the copy
/// resumes after it. With `artifacts_to`, copies the store's artifact files there (the
/// shared directory the replicas will name with --artifacts-dir).
pub fn to_postgres(
    dir: &Path,
    url: &str,
    artifacts_to: Option<&Path>,
    config: &super::StoreConfig,
) -> Result<MigrateReport, Error> {
    if !crate::db::db_path(dir).exists() {
        return Err(Error::invalid(format!("{} holds no store", dir.display())));
    }
    let (_db, tree) = crate::db::open(dir, config.cache_bytes)?;
    let pg = Postgres::connect(url)?;
    let mut writer = pg.writer();
    let local_head = crate::log::last_seq(&tree)?;
    let mut head = writer.fetch_head()?;
    if head > local_head {
        return Err(Error::invalid(format!(
            "the database's log has {head} events, more than the {local_head} of {}: it holds another store",
            dir.display()
        )));
    }
    if head > 0 {
        let ours = tree.get(keys::log(head))?.map(|v| v.to_vec());
        if pg.event(head)? != ours {
            return Err(Error::invalid(format!(
                "the database's log ({head} events) is not the beginning of {}'s: it holds another store",
                dir.display()
            )));
        }
        tracing::info!(
            events = head,
            "resuming: the database holds the log's first events"
        );
    }
    let mut report = MigrateReport {
        already: head,
        ..MigrateReport::default()
    };
    let progress = crate::log::rebuild::Progress::start("migrate-store");
    let mut chunk: Vec<Stored> = Vec::with_capacity(APPEND_CHUNK);
    let mut flush = |chunk: &mut Vec<Stored>, head: &mut u64| -> Result<(), Error> {
        let Some(&(last, _)) = chunk.last() else {
            return Ok(());
        };
        let theirs = writer.begin(*head)?;
        if !theirs.is_empty() {
            writer.abort();
            return Err(Error::invalid(
                "another writer appended to the database's log meanwhile (is a replica running on it?); stop it and run this again to resume",
            ));
        }
        writer.append(std::mem::take(chunk))?;
        *head = last;
        progress.set(last);
        Ok(())
    };
    for kv in tree.range(keys::log(head + 1)..keys::log(u64::MAX)) {
        let (k, v) = kv?;
        let seq = keys::seq_of_log_key(&k).ok_or_else(|| Error::Corrupt("log key".into()))?;
        if seq != head + 1 + chunk.len() as u64 {
            return Err(Error::Corrupt(format!(
                "the log of {} has a gap before event {seq}",
                dir.display()
            )));
        }
        chunk.push((seq, v.to_vec()));
        report.events += 1;
        if chunk.len() == APPEND_CHUNK {
            flush(&mut chunk, &mut head)?;
        }
    }
    flush(&mut chunk, &mut head)?;
    if let Some(to) = artifacts_to {
        let from = config
            .artifacts_dir
            .clone()
            .unwrap_or_else(|| dir.join("artifacts"));
        (report.artifact_files, report.artifact_bytes) = copy_tree(&from, to)?;
    }
    Ok(report)
}

/// Builds a new store in `dir` (which must not hold one) from the log in the PostgreSQL
/// database `url`, projections derived on the way. With `artifacts_from`, copies the
/// artifact files from there (the replicas' shared --artifacts-dir) into the store's.
pub fn from_postgres(
    url: &str,
    dir: &Path,
    artifacts_from: Option<&Path>,
    config: &super::StoreConfig,
) -> Result<MigrateReport, Error> {
    if crate::db::db_path(dir).exists() {
        return Err(Error::invalid(format!(
            "{} holds a store already; name a new directory",
            dir.display()
        )));
    }
    let pg = Postgres::connect(url)?;
    let mut writer = pg.writer();
    let mut report = MigrateReport::default();
    {
        let (db, tree) = crate::db::open(dir, config.cache_bytes)?;
        report.events = crate::log::committer::bulk_catch_up(&tree, &mut writer)?;
        crate::db::flush_bounded(&db, "the new store", super::REBUILD_FLUSH_LIMIT)?;
    }
    if !crate::db::wait_released(&crate::db::lock_file(dir)) {
        return Err(Error::Unavailable("the new store is still locked".into()));
    }
    if let Some(from) = artifacts_from {
        let to = config
            .artifacts_dir
            .clone()
            .unwrap_or_else(|| dir.join("artifacts"));
        (report.artifact_files, report.artifact_bytes) = copy_tree(from, &to)?;
    }
    Ok(report)
}

/// Copies every file under `from` to the same path under `to` (files there already are
/// replaced); returns the files and bytes copied. A missing `from` copies nothing.
fn copy_tree(from: &Path, to: &Path) -> Result<(u64, u64), Error> {
    let io = |e: std::io::Error| Error::Storage(sled::Error::Io(e));
    let (mut files, mut bytes) = (0, 0);
    if !from.exists() {
        return Ok((0, 0));
    }
    let mut todo = vec![from.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let rel = path
                .strip_prefix(from)
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            if entry.file_type().map_err(io)?.is_dir() {
                todo.push(path);
            } else {
                let target = to.join(rel);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                bytes += std::fs::copy(&path, &target).map_err(io)?;
                files += 1;
            }
        }
    }
    Ok((files, bytes))
}
