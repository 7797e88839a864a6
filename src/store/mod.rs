//! `Store`: the storage boundary. Everything that reads or writes tracking data goes
//! through this cheap, cloneable handle: writes become commands for the committer
//! thread and return once their events are on disk; reads go straight to the
//! projections and never wait for the writer. A second implementation (a distributed
//! database) would take its place behind this same surface.

mod history;
pub mod migrate;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot};

use crate::db::health::StoreState;
use crate::db::{Handles, keys};
use crate::domain::commands::CreateExperiment;
use crate::domain::{DEFAULT_EXPERIMENT_NAME, Error, MetricPoint, ViewType, validation};
use crate::hierarchy::{self, TreeNode};
pub use crate::log::command::Command;
use crate::log::committer::{Committer, Request};
use crate::log::postgres::Postgres;
pub use crate::log::postgres::is_postgres_url;
pub use crate::log::rebuild::CheckReport;
use crate::pb;
use crate::projection::{self, ExperimentRecord, LoggedModelRecord, RunRecord};
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

    /// A run and its subtree, `max_depth` levels down (absent: all, up to
    /// `hierarchy::MAX_TREE_DEPTH`), children in start-time order. Runs the view
    /// excludes are left out with their subtrees; the requested run itself is always there.
    /// Only `visible` runs are shown (`hierarchy::Visible`).
    pub fn run_tree(
        &self,
        run_id: &str,
        max_depth: Option<u32>,
        view: ViewType,
        visible: hierarchy::Visible,
    ) -> Result<TreeNode, Error> {
        hierarchy::run_tree(&self.tree()?, run_id, max_depth, view, visible)
    }

    /// A page of a run's visible children in start-time order.
    pub fn children(
        &self,
        run_id: &str,
        view: ViewType,
        visible: hierarchy::Visible,
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<RunRecord>, Option<String>), Error> {
        let limit = page_limit(max_results)?;
        hierarchy::children(&self.tree()?, run_id, view, visible, limit, page_token)
    }

    /// The run's parent, its parent, and so on up to the root or the first run that is
    /// not `visible`.
    pub fn ancestors(
        &self,
        run_id: &str,
        visible: hierarchy::Visible,
    ) -> Result<Vec<RunRecord>, Error> {
        hierarchy::ancestors(&self.tree()?, run_id, visible)
    }

    /// A logged model; deleted ones only with `allow_deleted`.
    pub fn get_logged_model(
        &self,
        model_id: &str,
        allow_deleted: bool,
    ) -> Result<LoggedModelRecord, Error> {
        match projection::load_logged_model(&self.tree()?, model_id)? {
            Some(m) if allow_deleted || !m.deleted => Ok(m),
            _ => Err(Error::NotFound(format!(
                "Logged model with ID '{model_id}' not found."
            ))),
        }
    }

    /// Logged models of the given experiments (all, when none is named) that pass an
    /// MLflow filter, newest first, a page at a time.
    pub fn search_logged_models(
        &self,
        experiment_ids: &[String],
        filter: &str,
        datasets: &[crate::search::DatasetFilter],
        order_by: &[crate::search::ModelOrder],
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<LoggedModelRecord>, Option<String>), Error> {
        crate::search::search_logged_models(
            self.logged_models()?,
            experiment_ids,
            filter,
            datasets,
            order_by,
            max_results,
            page_token,
        )
    }

    /// Every logged model, deleted ones included.
    fn logged_models(&self) -> Result<Vec<LoggedModelRecord>, Error> {
        let mut out = Vec::new();
        for kv in self.tree()?.scan_prefix([keys::LOGGED_MODEL]) {
            let (_, v) = kv?;
            out.push(<LoggedModelRecord as prost::Message>::decode(v.as_ref())?);
        }
        Ok(out)
    }

    /// The tree to read from; `Closed` once the store is closed.
    fn tree(&self) -> Result<sled::Tree, Error> {
        let handles = self.inner.handles.read().map_err(|_| Error::Closed)?;
        handles
            .as_ref()
            .map(|h| h.tree.clone())
            .ok_or(Error::Closed)
    }

    /// A user (`--auth`), if there is one by that name.
    pub fn user(&self, name: &str) -> Result<Option<projection::access::UserRecord>, Error> {
        projection::access::load_user(&self.tree()?, name)
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<projection::access::UserRecord>, Error> {
        projection::access::users(&self.tree()?)
    }

    /// An API token by its id, if it exists (revoked tokens do not).
    pub fn token(&self, token_id: &str) -> Result<Option<projection::access::TokenRecord>, Error> {
        projection::access::load_token(&self.tree()?, token_id)
    }

    /// Every token, by id.
    pub fn tokens(&self) -> Result<Vec<projection::access::TokenRecord>, Error> {
        projection::access::tokens(&self.tree()?)
    }

    /// The permission granted to `name` on an experiment, if one was.
    pub fn grant(
        &self,
        experiment_id: u64,
        name: &str,
    ) -> Result<Option<crate::domain::access::Permission>, Error> {
        projection::access::grant(&self.tree()?, experiment_id, name)
    }

    pub fn get_experiment(&self, experiment_id: &str) -> Result<ExperimentRecord, Error> {
        let id = validation::experiment_id(experiment_id)?;
        projection::load_experiment(&self.tree()?, id)?
            .ok_or_else(|| Error::NotFound(format!("No Experiment with id={experiment_id} exists")))
    }

    pub fn get_experiment_by_name(&self, name: &str) -> Result<ExperimentRecord, Error> {
        validation::require("experiment_name", name)?;
        let not_found = || Error::NotFound(format!("Could not find experiment with name '{name}'"));
        let tree = self.tree()?;
        let id = projection::experiment_id_by_name(&tree, name)?.ok_or_else(not_found)?;
        projection::load_experiment(&tree, id)?.ok_or_else(not_found)
    }

    /// Experiments matching an MLflow filter, in the given order (default
    /// `creation_time DESC, experiment_id ASC`).
    pub fn search_experiments(
        &self,
        view: ViewType,
        filter: &str,
        order_by: &[String],
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<ExperimentRecord>, Option<String>), Error> {
        self.search_experiments_where(view, filter, order_by, max_results, page_token, &|_| true)
    }

    /// `search_experiments` over the experiments `visible` admits (those a caller may
    /// read).
    pub fn search_experiments_where(
        &self,
        view: ViewType,
        filter: &str,
        order_by: &[String],
        max_results: Option<i64>,
        page_token: &str,
        visible: &dyn Fn(u64) -> bool,
    ) -> Result<(Vec<ExperimentRecord>, Option<String>), Error> {
        let limit = page_limit(max_results)?;
        crate::search::search_experiments(
            &self.tree()?,
            view,
            filter,
            order_by,
            limit,
            page_token,
            visible,
        )
    }

    pub fn get_run(&self, run_id: &str) -> Result<RunRecord, Error> {
        projection::find_run(&self.tree()?, run_id)
    }

    /// Runs of the given experiments matching an MLflow filter, in the given order
    /// (default `start_time DESC, run_id ASC`). No experiment ids, no runs.
    pub fn search_runs(
        &self,
        experiment_ids: &[String],
        view: ViewType,
        filter: &str,
        order_by: &[String],
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<RunRecord>, Option<String>), Error> {
        let limit = page_limit(max_results)?;
        let ids = experiment_ids
            .iter()
            .map(|id| validation::experiment_id(id))
            .collect::<Result<Vec<u64>, Error>>()?;
        crate::search::search_runs(
            &self.tree()?,
            &crate::search::RunQuery {
                experiment_ids: &ids,
                view,
                filter,
                order_by,
                limit,
                page_token,
            },
        )
    }

    /// A metric's history ordered by (timestamp, step, value), exact duplicates
    /// dropped. `max_results` absent means all of it.
    pub fn metric_history(
        &self,
        run_id: &str,
        key: &str,
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<(Vec<MetricPoint>, Option<String>), Error> {
        validation::require("metric_key", key)?;
        let limit = match max_results {
            None => usize::MAX,
            Some(n) if n < 1 => {
                return Err(Error::invalid(format!(
                    "Invalid value {n} for parameter 'max_results' supplied: it must be a positive integer"
                )));
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let (page, next) = history::page(&self.tree()?, run_id, key, limit, page_token)?;
        Ok((page.into_iter().map(|p| p.with_key(key)).collect(), next))
    }

    /// A metric's whole history as of one sequence number: exactly the points of the
    /// events up to the returned `seq` (in MLflow's order, exact duplicates dropped), so
    /// that a watch from `seq + 1` continues it with no gap and no repeat.
    pub fn metric_history_at(
        &self,
        run_id: &str,
        key: &str,
    ) -> Result<(Vec<projection::history::Point>, u64), Error> {
        validation::require("metric_key", key)?;
        let tree = self.tree()?;
        let before = self.committed_seq();
        let points = history::points(&tree, run_id, key)?;
        // Events written after `before` may or may not be in the read (each is written
        // with its history in one batch): the log says which points they hold.
        let mut seq = before;
        let mut recent = Vec::new();
        for ev in crate::log::replay(&tree, before + 1) {
            let ev = ev?;
            seq = ev.seq;
            if let Some(pb::event::Payload::MetricsLogged(m)) = &ev.payload
                && m.run_id == run_id
            {
                for s in m.series.iter().filter(|s| s.key == key) {
                    for ((&timestamp, &step), &value) in
                        s.timestamps.iter().zip(&s.steps).zip(&s.values)
                    {
                        recent.push(projection::history::Point {
                            timestamp,
                            step,
                            value,
                        });
                    }
                }
            }
        }
        let points = projection::history::with_recent(points, recent);
        Ok((points, seq))
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

/// Runs `f` on the tree of a stopped store in `dir`, opened directly, for tools and
/// tests that read or damage its tables on purpose (the server and every command go
/// through [`Store`]); then flushes, closes, and waits until sled has let go of the
/// database's lock, so that the store opens at once afterwards, in this process or
/// another.
/// Whether `dir` holds a store (its database), without opening it.
pub fn exists(dir: &Path) -> bool {
    crate::db::db_path(dir).exists()
}

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

fn page_limit(max_results: Option<i64>) -> Result<usize, Error> {
    let n = max_results.unwrap_or(SEARCH_MAX_RESULTS_DEFAULT);
    if n > SEARCH_MAX_RESULTS_THRESHOLD {
        return Err(Error::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied: it must be at most {SEARCH_MAX_RESULTS_THRESHOLD}"
        )));
    }
    if n < 1 {
        return Err(Error::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied: it must be a positive integer"
        )));
    }
    usize::try_from(n).map_err(|_| Error::invalid("max_results out of range"))
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

pub use crate::db::usage::TableUsage;

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
