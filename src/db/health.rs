//! What the store knows about its own health, shared by the committer (which sets it)
//! and the readers, `/health` and gRPC health (which report it). A supervisor or load
//! balancer reads NOT_SERVING with the reason, and restarts or drains the server.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// A commit that has waited on the disk this long makes the store report NOT_SERVING.
const SLOW_COMMIT_MS: i64 = 10_000;

pub(crate) struct StoreState {
    /// The directory whose filesystem holds the database.
    pub(crate) data_dir: PathBuf,
    /// Bytes kept free on that filesystem: writes stop below it.
    pub(crate) min_free: u64,
    /// Why writes are refused after the disk refused one (until a restart).
    failure: Mutex<Option<String>>,
    /// When the commit now in progress started (ms after `epoch`, plus one), 0 when
    /// none is. Monotonic: a clock step never makes a commit look stuck.
    commit_started: AtomicI64,
    epoch: std::time::Instant,
    pub(crate) closed: AtomicBool,
    /// Why the shared log's PostgreSQL is out of reach, per connection that found out
    /// (the committer's, the listener's); `None` when it answers.
    remote: Mutex<[Option<String>; 2]>,
}

/// Who talks to a shared log's PostgreSQL, for `StoreState::set_remote`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Remote {
    Writer = 0,
    Listener = 1,
}

impl StoreState {
    pub(crate) fn new(data_dir: PathBuf, min_free: u64) -> Self {
        Self {
            data_dir,
            min_free,
            failure: Mutex::new(None),
            commit_started: AtomicI64::new(0),
            epoch: std::time::Instant::now(),
            closed: AtomicBool::new(false),
            remote: Mutex::default(),
        }
    }

    /// Records whether `who` reaches PostgreSQL (`None`: it does).
    pub(crate) fn set_remote(&self, who: Remote, why: Option<String>) {
        if let Ok(mut r) = self.remote.lock() {
            r[who as usize] = why;
        }
    }

    fn remote_failure(&self) -> Option<String> {
        let r = self.remote.lock().ok()?;
        r.iter().flatten().next().cloned()
    }

    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    pub(crate) fn set_failure(&self, why: Option<String>) {
        if let Ok(mut f) = self.failure.lock() {
            *f = why;
        }
    }

    /// Free space at or above the reserve, or why not.
    pub(crate) fn check_space(&self) -> Result<(), String> {
        crate::db::space::check_reserve(&self.data_dir, self.min_free)
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX - 1) + 1
    }

    pub(crate) fn commit_starts(&self) {
        self.commit_started.store(self.now_ms(), Ordering::Release);
    }

    pub(crate) fn commit_ends(&self) {
        self.commit_started.store(0, Ordering::Release);
    }

    /// `Ok` when the store takes writes; otherwise why not, in words for an operator.
    pub(crate) fn health(&self) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire) {
            return Err("the server is shutting down".into());
        }
        if let Some(why) = self.failure() {
            return Err(why);
        }
        if let Some(why) = self.remote_failure() {
            return Err(format!("the shared log is out of reach: {why}"));
        }
        let started = self.commit_started.load(Ordering::Acquire);
        if started != 0 {
            let waited = self.now_ms() - started;
            if waited >= SLOW_COMMIT_MS {
                return Err(format!(
                    "a commit has been waiting on the disk for {} s",
                    waited / 1000
                ));
            }
        }
        self.check_space()
    }
}
