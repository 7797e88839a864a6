//! `Store`: the storage boundary. Everything that reads or writes tracking data goes
//! through this cheap, cloneable handle: writes become commands for the committer
//! thread and return once their events are on disk; reads go straight to the
//! projections and never wait for the writer. A second implementation (a distributed
//! database) would take its place behind this same surface.

mod history;
pub mod migrate;
mod offline;
mod reads;

pub use offline::{
    DiskUsage, RebuildReport, TableUsage, check, disk_usage, exists, rebuild, with_database,
};

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::db::health::StoreState;
use crate::db::{Handles, keys};
use crate::domain::commands::CreateExperiment;
use crate::domain::{DEFAULT_EXPERIMENT_NAME, Error};
use crate::hierarchy;
pub use crate::log::command::Command;
use crate::log::committer::{Committer, Request};
use crate::log::postgres::Postgres;
pub use crate::log::postgres::is_postgres_url;
pub use crate::log::rebuild::CheckReport;
use crate::pb;
use crate::projection;
use crate::stream::Hub;

/// Requests waiting for the committer. When full, writers wait: back-pressure on the
/// clients instead of memory growth.
const COMMAND_QUEUE_CAPACITY: usize = 1024;
/// How long closing waits for watch sessions to deliver their last events and status.
const SESSION_DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
/// Default and largest page of `SearchRuns` and `SearchExperiments`, as in MLflow.
pub const SEARCH_MAX_RESULTS_DEFAULT: i64 = 1000;
pub const SEARCH_MAX_RESULTS_THRESHOLD: i64 = 50_000;

/// sled's page cache, MiB. Small, so that a server stays small: after the REST
/// benchmark's run (10,000 runs, ~1.1M points) it holds 53–56 MiB, 65–68 with 16 and
/// 79–83 with 64, at the same throughput. Large stores want more (`--cache-mb`).
pub const DEFAULT_CACHE_MB: u64 = 8;
/// The default disk reserve: room for the largest commit group many times over, and
/// for sled's own segment and snapshot writes.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// How long a rebuild's final flush may take before it is given up.
const REBUILD_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);
/// How long closing waits for the committer's last group and flush.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
/// How often the server looks at the store's health for gRPC health.
pub const HEALTH_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// sled's page cache. sled defaults to 1 GiB; a tracking server should idle small.
    pub cache_bytes: u64,
    /// Where artifact files go; absent: `<dir>/artifacts`.
    pub artifacts_dir: Option<PathBuf>,
    /// Bytes kept free on the data directory's disk: writes are refused below it (and
    /// resume by themselves above it), a store does not open below half of it.
    pub min_free_bytes: u64,
    /// A PostgreSQL URL (`--store`): the log lives there, shared by every replica
    /// started with it, and the data directory holds this replica's cache of it.
    pub shared_log: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_MB * 1024 * 1024,
            artifacts_dir: None,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            shared_log: None,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Who the writes through this handle are recorded as made by (`acting_as`);
    /// `None`: nobody in particular (auth off, or the server itself).
    actor: Option<Arc<str>>,
}

struct Inner {
    hub: Hub,
    artifacts: crate::artifacts::ArtifactStore,
    /// Taken out by `close`, so that the database (and its file lock) is released even
    /// while stray handles of the `Store` live on, such as a client connection that
    /// outlives the server; reads after that get `Closed`.
    handles: RwLock<Option<Handles>>,
    state: Arc<StoreState>,
    /// The file sled locks; `close` returns once nobody holds that lock.
    lock_file: PathBuf,
    tx: mpsc::Sender<Request>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The shared log, when there is one: its listener and head reader.
    shared: Option<Postgres>,
}

impl Store {
    /// Opens (or creates) the store in `dir`. A new store gets the Default experiment;
    /// a store whose projections are from another layout version is rebuilt from its log.
    /// With `config.shared_log` the log is in PostgreSQL and `dir` holds this replica's
    /// cache of it (and artifacts), caught up before this returns.
    pub fn open(dir: &Path, config: &StoreConfig) -> Result<Store, Error> {
        // Opening writes (sled recovers and may snapshot); on a nearly full disk that
        // can leave a store that no longer opens, so it is refused while there is room.
        if dir.exists() {
            crate::db::space::check_reserve(dir, config.min_free_bytes / 2)
                .map_err(|why| Error::Unavailable(format!("not opening the store: {why}")))?;
        }
        let mut shared = match config.shared_log.as_deref() {
            Some(url) => Some(Postgres::connect(url)?),
            None => None,
        };
        let (db, tree) = match &shared {
            None => open_local(dir, config)?,
            Some(pg) => open_cache(dir, config, pg)?,
        };
        let mut writer = shared.as_ref().map(Postgres::writer);
        if let Some(writer) = writer.as_mut() {
            let started = std::time::Instant::now();
            let events = crate::log::committer::bulk_catch_up(&tree, writer)?;
            if events > 0 {
                crate::db::flush_bounded(&db, "the caught-up cache", REBUILD_FLUSH_LIMIT)?;
                tracing::info!(
                    events,
                    seconds = started.elapsed().as_secs_f64(),
                    "caught up from the shared log"
                );
            }
        }
        let (hub, publisher) = crate::stream::hub(crate::log::last_seq(&tree)?);
        let handles = Handles { db, tree };
        let state = Arc::new(StoreState::new(dir.to_path_buf(), config.min_free_bytes));
        let mut committer = Committer::new(handles.clone(), state.clone(), publisher, writer)?;
        if crate::log::last_seq(&handles.tree)? == 0 {
            let (job, mut answer) = crate::log::command::job(CreateExperiment {
                name: DEFAULT_EXPERIMENT_NAME.into(),
                artifact_location: String::new(),
                tags: vec![],
            });
            let signed = crate::log::committer::Signed { job, actor: None };
            let _ = committer.commit_group(vec![signed]);
            match answer.try_recv().map_err(|_| Error::Closed)? {
                Ok(_) => {}
                // Another replica of the shared log made it first.
                Err(Error::AlreadyExists(_)) if shared.is_some() => {}
                Err(e) => return Err(e),
            }
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
        let handle = std::thread::Builder::new()
            .name("arbor-committer".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| Error::Storage(sled::Error::Io(e)))?;
        if let Some(pg) = shared.as_mut() {
            // Each commit elsewhere wakes the committer to take it in (this replica's own
            // commits are in already); a full queue means it is busy with writes, each of
            // which takes in the log's head anyway.
            let wake = tx.clone();
            let local = hub.clone();
            pg.start(
                move |head| {
                    if head.is_none_or(|h| h > local.committed()) {
                        let _ = wake.try_send(Request::CatchUp(None));
                    }
                },
                state.clone(),
            )?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                hub,
                artifacts: crate::artifacts::ArtifactStore::new(
                    config
                        .artifacts_dir
                        .clone()
                        .unwrap_or_else(|| dir.join("artifacts")),
                )
                .with_reserve(config.min_free_bytes),
                handles: RwLock::new(Some(handles)),
                state,
                lock_file: crate::db::lock_file(dir),
                tx,
                committer: Mutex::new(Some(handle)),
                shared,
            }),
            actor: None,
        })
    }

    /// Brings this replica's copy of a shared log up to the log's head as of now, so
    /// that what it answers next includes every write any replica acknowledged before
    /// this call (read-your-writes across replicas). Immediate for a store of its own.
    pub async fn current(&self) -> Result<(), Error> {
        let Some(pg) = &self.inner.shared else {
            return Ok(());
        };
        let head = pg.head().await?;
        if self.inner.hub.committed() >= head {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Request::CatchUp(Some(reply)))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Whether the log is shared with other replicas (in PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// `Ok` while the store takes writes; otherwise why not (the disk below its reserve,
    /// a refused write not yet recovered from, a commit stuck on the disk, closing).
    pub fn health(&self) -> Result<(), String> {
        self.inner.state.health()
    }

    /// This store, recording `actor` as the maker of every write through the handle
    /// returned (the audit trail in the log; the creator of an experiment manages it).
    pub fn acting_as(&self, actor: Option<&str>) -> Store {
        Store {
            inner: self.inner.clone(),
            actor: actor.map(Arc::from),
        }
    }

    /// Applies a write (one of `domain::commands`); returns its answer once its events
    /// are durable. Every surface writes through here.
    pub async fn submit<C: Command>(&self, command: C) -> Result<C::Output, Error> {
        self.enqueue(command).await?.await
    }

    /// Queues a write for the committer and returns at once with a future of its
    /// answer, so that a caller can keep several writes in flight (in order).
    pub async fn enqueue<C: Command>(
        &self,
        command: C,
    ) -> Result<impl std::future::Future<Output = Result<C::Output, Error>> + Send + use<C>, Error>
    {
        let (job, answer) = crate::log::command::job(command);
        self.inner
            .tx
            .send(Request::Write {
                job,
                actor: self.actor.clone(),
            })
            .await
            .map_err(|_| Error::Closed)?;
        Ok(async move { answer.await.map_err(|_| Error::Closed)? })
    }

    /// Commits every write already submitted, flushes, and stops the committer; later
    /// writes fail with `Closed`. Waits for the committer thread to end.
    /// Every wait here is bounded: a committer stuck on a disk that takes no writes
    /// does not keep the process from exiting (acknowledged writes were flushed before
    /// they were acknowledged, so nothing acknowledged is lost by not waiting).
    pub async fn close(&self) {
        self.inner.state.closed.store(true, Ordering::Release);
        if let Some(why) = self.inner.state.failure() {
            // After a refused write sled's handles wait forever when dropped (they flush
            // what can no longer be written). Everything acknowledged is on disk; leave
            // them to the process's exit.
            tracing::error!("closing a store that stopped taking writes ({why}); not flushing");
            self.inner.hub.close();
            if let Ok(mut h) = self.inner.handles.write() {
                std::mem::forget(h.take());
            }
            return;
        }
        let (done, finished) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        let closed = tokio::time::timeout_at(deadline, async {
            if self.inner.tx.send(Request::Close(done)).await.is_ok() {
                let _ = finished.await;
            }
            let handle = self.inner.committer.lock().ok().and_then(|mut h| h.take());
            if let Some(h) = handle {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
        })
        .await;
        if closed.is_err() {
            tracing::error!(
                "the committer did not finish within {CLOSE_GRACE:?} (the disk is not taking writes); closing without it"
            );
        }
        if let Some(pg) = &self.inner.shared {
            pg.stop();
        }
        // Open watch sessions drain what was committed, send their final status, and end.
        self.inner.hub.close();
        if tokio::time::timeout(SESSION_DRAIN_GRACE, self.inner.hub.sessions_ended())
            .await
            .is_err()
        {
            tracing::warn!(
                "watch sessions still open after {SESSION_DRAIN_GRACE:?}; closing anyway"
            );
        }
        let handles = self.inner.handles.write().ok().and_then(|mut h| h.take());
        if let Some(h) = handles {
            let flushed = tokio::time::timeout(
                CLOSE_GRACE,
                tokio::task::spawn_blocking(move || {
                    let result = h.db.flush();
                    drop(h);
                    result
                }),
            )
            .await;
            match flushed {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "final flush failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "final flush panicked"),
                Err(_) => tracing::error!("the final flush did not finish within {CLOSE_GRACE:?}"),
            }
            let lock = self.inner.lock_file.clone();
            let _ = tokio::task::spawn_blocking(move || crate::db::wait_released(&lock)).await;
        }
    }

    /// The sequence number of the last durable event: a backup taken now covers the
    /// log up to here.
    pub fn committed_seq(&self) -> u64 {
        self.inner.hub.committed()
    }

    /// Watch streams open now.
    /// The gauges `/metrics` reports of this store, read now.
    pub fn gauges(&self) -> crate::metrics::StoreGauges {
        crate::metrics::StoreGauges {
            watch_sessions: self.watch_sessions(),
            watch_lag: self.watch_lag(),
            committed_seq: self.committed_seq(),
            disk_bytes: self.disk_usage(),
            disk_free_bytes: self.disk_free(),
            healthy: self.health().is_ok(),
        }
    }

    pub fn watch_sessions(&self) -> usize {
        self.inner.hub.sessions()
    }

    /// Committed events the furthest-behind watch session has yet to hand on.
    pub fn watch_lag(&self) -> u64 {
        self.inner.hub.max_lag()
    }

    /// Bytes the database takes on disk (0 when it cannot be read).
    pub fn disk_usage(&self) -> u64 {
        crate::db::space::tree_size(&crate::db::db_path(&self.inner.state.data_dir)).unwrap_or(0)
    }

    /// Free bytes on the data directory's disk (0 when it cannot be read).
    pub fn disk_free(&self) -> u64 {
        crate::db::space::available(&self.inner.state.data_dir).unwrap_or(0)
    }

    /// The artifact files' store.
    pub fn artifacts(&self) -> &crate::artifacts::ArtifactStore {
        &self.inner.artifacts
    }
}

/// Opens the database of a store of its own, rebuilding projections of another layout
/// version from the log.
fn open_local(dir: &Path, config: &StoreConfig) -> Result<(sled::Db, sled::Tree), Error> {
    let (db, tree) = crate::db::open(dir, config.cache_bytes)?;
    if let Some(id) = tree.get(keys::META_SHARED_LOG)? {
        return Err(Error::invalid(format!(
            "{} is a replica's cache of the shared store {} (in PostgreSQL): start with --store postgres://..., or make a store of its own from the shared one with `arbor migrate-store --from postgres://... --to DIR`",
            dir.display(),
            String::from_utf8_lossy(&id)
        )));
    }
    let version = tree.get(keys::META_PROJECTION_VERSION)?;
    let current = projection::PROJECTION_VERSION.to_be_bytes();
    if crate::log::last_seq(&tree)? == 0 {
        tree.insert(keys::META_PROJECTION_VERSION, &current)?;
    } else if version.as_deref() != Some(&current[..]) {
        tracing::info!("projections are missing or from another version; rebuilding from the log");
        drop((db, tree));
        if !crate::db::wait_released(&crate::db::lock_file(dir)) {
            return Err(Error::Unavailable("the database is still locked".into()));
        }
        let report = rebuild(dir, config)?;
        tracing::info!(events = report.events, "rebuilt projections");
        return crate::db::open(dir, config.cache_bytes);
    }
    Ok((db, tree))
}

/// Opens this replica's cache of the shared log `pg`: kept when it is a copy of a prefix
/// of that log with projections of this version; otherwise emptied (it is only a cache)
/// and filled again from the log. A store of its own is never emptied: it is refused.
fn open_cache(
    dir: &Path,
    config: &StoreConfig,
    pg: &Postgres,
) -> Result<(sled::Db, sled::Tree), Error> {
    let (db, tree) = crate::db::open_cache(dir, config.cache_bytes)?;
    let local_head = crate::log::last_seq(&tree)?;
    let marker = tree.get(keys::META_SHARED_LOG)?;
    let current = projection::PROJECTION_VERSION.to_be_bytes();
    let keep = match marker {
        None if local_head == 0 => true,
        None => {
            return Err(Error::invalid(format!(
                "{} holds a store of its own ({local_head} events), not a cache of the shared store: move its log into PostgreSQL with `arbor migrate-store --from {} --to postgres://...`, or give this replica another --data-dir",
                dir.display(),
                dir.display()
            )));
        }
        Some(id) if id.as_ref() != pg.store_id.as_bytes() => {
            tracing::warn!("the data directory caches another shared store; emptying it");
            false
        }
        Some(_) if tree.get(keys::META_PROJECTION_VERSION)?.as_deref() != Some(&current[..]) => {
            tracing::info!("the cache's projections are from another version; emptying it");
            false
        }
        Some(_) if local_head > 0 => {
            let ours = tree.get(keys::log(local_head))?.map(|v| v.to_vec());
            let same = pg.event(local_head)? == ours;
            if !same {
                tracing::warn!(
                    local_head,
                    "the cache holds events the shared log does not (was the database restored to an earlier point?); emptying it"
                );
            }
            same
        }
        Some(_) => true,
    };
    let (db, tree) = if keep {
        (db, tree)
    } else {
        drop((db, tree));
        if !crate::db::wait_released(&crate::db::lock_file(dir)) {
            return Err(Error::Unavailable("the database is still locked".into()));
        }
        std::fs::remove_dir_all(crate::db::db_path(dir))
            .map_err(|e| Error::Storage(sled::Error::Io(e)))?;
        crate::db::open_cache(dir, config.cache_bytes)?
    };
    tree.insert(keys::META_SHARED_LOG, pg.store_id.as_bytes())?;
    tree.insert(keys::META_PROJECTION_VERSION, &current)?;
    Ok((db, tree))
}

impl crate::stream::EventSource for Store {
    fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    fn head(&self) -> Result<u64, Error> {
        crate::log::last_seq(&self.tree()?)
    }

    fn read_log(&self, from: u64, upto: u64, max: usize) -> Result<Vec<pb::Event>, Error> {
        let tree = self.tree()?;
        crate::log::replay(&tree, from)
            .take_while(|ev| ev.as_ref().map_or(true, |e| e.seq <= upto))
            .take(max)
            .collect()
    }

    fn experiment_of_run(&self, run_id: &str) -> Result<u64, Error> {
        Ok(self.get_run(run_id)?.experiment_id)
    }

    fn subtree(&self, run_id: &str) -> Result<Vec<String>, Error> {
        let tree = self.tree()?;
        projection::find_run(&tree, run_id)?;
        hierarchy::subtree(&tree, run_id)
    }

    fn check_experiment(&self, experiment_id: &str) -> Result<(), Error> {
        self.get_experiment(experiment_id).map(|_| ())
    }

    fn experiment_of_model(&self, model_id: &str) -> Result<u64, Error> {
        Ok(self.get_logged_model(model_id, true)?.experiment_id)
    }
}
