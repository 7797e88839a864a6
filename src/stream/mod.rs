//! Live streams. The committer publishes every committed group of events to the `Hub`
//! (a `tokio::sync::broadcast` of `Arc`'d batches) after the flush; a watch session
//! subscribes, replays the log from its starting sequence number, then follows the
//! live events, dropping what it has already seen by sequence number: no gap, no
//! repeat. A session that falls behind the hub's buffer catches up from the log, so a
//! slow client costs disk reads, never memory and never writer latency.

pub mod scope;
pub(crate) mod session;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};

use crate::domain::Error;
use crate::pb;

/// What streams read, and nothing more: the durable log by sequence number, the hub's
/// live batches, and the run tree (for scopes that follow a subtree or an experiment).
/// `Store` implements it; sessions and scopes never see the rest of the store.
pub(crate) trait EventSource: Send + Sync + 'static {
    fn hub(&self) -> &Hub;
    /// The last event in the log, durable or about to be: a read of the projections
    /// can already see it while the hub's committed mark has not reached it.
    fn head(&self) -> Result<u64, Error>;
    /// Up to `max` events from `from` to `upto` (inclusive), in order.
    fn read_log(&self, from: u64, upto: u64, max: usize) -> Result<Vec<pb::Event>, Error>;
    /// The experiment of a run; `NotFound` if there is no such run.
    fn experiment_of_run(&self, run_id: &str) -> Result<u64, Error>;
    /// The run and every run below it; `NotFound` if there is no such run.
    fn subtree(&self, run_id: &str) -> Result<Vec<String>, Error>;
    /// `NotFound` unless the experiment exists.
    fn check_experiment(&self, experiment_id: &str) -> Result<(), Error>;
    /// The experiment of a logged model; `NotFound` if there is no such model.
    fn experiment_of_model(&self, model_id: &str) -> Result<u64, Error>;
}

/// Committed batches the hub keeps for sessions that are a little behind. A session
/// further behind reads the log instead; this bounds the hub's memory whatever the
/// clients do. A batch is one commit group (a few requests when busy).
const HUB_CAPACITY: usize = 256;

pub(crate) type Batch = Arc<[pb::Event]>;

/// The publishing side, owned by the committer.
pub(crate) struct Publisher {
    tx: broadcast::Sender<Batch>,
    committed: Arc<AtomicU64>,
}

impl Publisher {
    /// Announces events that are on disk. The committed mark moves first, so that a
    /// session reading the log up to the mark never reads past what is durable.
    pub(crate) fn publish(&self, events: Vec<pb::Event>) {
        if let Some(last) = events.last() {
            self.committed.store(last.seq, Ordering::Release);
            // No subscribers is not an error.
            let _ = self.tx.send(Arc::from(events));
        }
    }
}

/// The subscribing side, held by the store.
#[derive(Clone)]
pub(crate) struct Hub {
    /// Taken when the store closes, so that sessions see the channel end.
    tx: Arc<Mutex<Option<broadcast::Sender<Batch>>>>,
    committed: Arc<AtomicU64>,
    sessions: Arc<Sessions>,
}

#[derive(Default)]
struct Sessions {
    count: AtomicUsize,
    ended: Notify,
    /// Each open session's last delivered sequence number, for the lag metric.
    positions: Mutex<Vec<std::sync::Weak<AtomicU64>>>,
}

/// Keeps a session counted until it ends, so that shutdown can wait for sessions to
/// send their final status; carries the session's position for the lag metric.
pub(crate) struct SessionGuard(Arc<Sessions>, Arc<AtomicU64>);

impl SessionGuard {
    /// The session has handed on every event up to `seq`.
    pub(crate) fn delivered(&self, seq: u64) {
        self.1.store(seq, Ordering::Release);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

pub(crate) fn hub(committed: u64) -> (Hub, Publisher) {
    let (tx, _) = broadcast::channel(HUB_CAPACITY);
    let committed = Arc::new(AtomicU64::new(committed));
    (
        Hub {
            tx: Arc::new(Mutex::new(Some(tx.clone()))),
            committed: committed.clone(),
            sessions: Arc::default(),
        },
        Publisher { tx, committed },
    )
}

impl Hub {
    /// A receiver of batches committed from now on, or `None` once the store is closing.
    pub(crate) fn subscribe(&self) -> Option<(broadcast::Receiver<Batch>, SessionGuard)> {
        let tx = self.tx.lock().ok()?;
        let rx = tx.as_ref()?.subscribe();
        self.sessions.count.fetch_add(1, Ordering::AcqRel);
        let position = Arc::new(AtomicU64::new(self.committed()));
        if let Ok(mut positions) = self.sessions.positions.lock() {
            positions.push(Arc::downgrade(&position));
        }
        Some((rx, SessionGuard(self.sessions.clone(), position)))
    }

    /// The sequence number of the last durable event.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Ends the hub: sessions drain what was published, then end.
    pub(crate) fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }

    /// Watch sessions open now.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.count.load(Ordering::Acquire)
    }

    /// How many committed events the furthest-behind open session has yet to hand on
    /// (0 with no session).
    pub(crate) fn max_lag(&self) -> u64 {
        let committed = self.committed();
        let Ok(mut positions) = self.sessions.positions.lock() else {
            return 0;
        };
        positions.retain(|p| p.strong_count() > 0);
        positions
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|p| committed.saturating_sub(p.load(Ordering::Acquire)))
            .max()
            .unwrap_or(0)
    }

    /// Completes when no session is open.
    pub(crate) async fn sessions_ended(&self) {
        loop {
            let ended = self.sessions.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.sessions.count.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    /// The lag is the furthest-behind open session's distance from the committed head;
    /// a session that ended no longer counts.
    #[test]
    fn lag_follows_the_slowest_open_session() {
        let (hub, _publisher) = super::hub(10);
        assert_eq!(hub.max_lag(), 0);
        let (_rx1, fast) = hub.subscribe().expect("open");
        let (_rx2, slow) = hub.subscribe().expect("open");
        fast.delivered(10);
        slow.delivered(4);
        assert_eq!(hub.max_lag(), 6);
        assert_eq!(hub.sessions(), 2);
        drop(slow);
        assert_eq!(hub.max_lag(), 0);
        assert_eq!(hub.sessions(), 1);
        drop(fast);
    }
}
