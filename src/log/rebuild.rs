//! Re-deriving every projection from the log: `arbor rebuild`, the automatic rebuild
//! when the projection layout version changes, and the check in tests that live state
//! equals rebuilt state.

use crate::db::keys;
use crate::db::kv::Pending;
use crate::domain::Error;

/// Events applied per atomic batch while rebuilding; bounds the memory a rebuild uses.
const REBUILD_BATCH_EVENTS: usize = 1024;
/// Stored event bytes per batch: a log of full `LogBatch` events (20 KB each) would
/// otherwise make batches of 20 MB and more in memory at once.
const REBUILD_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Writes events, in order from a given sequence number, into a tree that holds the
/// log before them (or nothing): each event is projected and (given its stored bytes)
/// stored, in atomic batches, checking that the sequence has no gap. `finish` writes the projection
/// version last, so a tree whose import stopped halfway is never taken for complete.
pub(crate) struct Importer<'a> {
    into: &'a sled::Tree,
    pending: Pending<'a>,
    in_pending: usize,
    bytes_pending: usize,
    next_seq: u64,
    count: u64,
    /// Events added so far, for a watchdog on another thread (`Progress`).
    progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl<'a> Importer<'a> {
    pub(crate) fn new(into: &'a sled::Tree, first_seq: u64) -> Self {
        Self {
            into,
            pending: Pending::new(into),
            in_pending: 0,
            bytes_pending: 0,
            next_seq: first_seq,
            count: 0,
            progress: None,
        }
    }

    /// Reports each event added to `progress`.
    pub(crate) fn reporting(mut self, progress: &Progress) -> Self {
        self.progress = Some(progress.events.clone());
        self
    }

    /// Adds one event; `raw` is its stored encoding, to copy it into the log as well
    /// (`None`: projections only, as `check` derives them).
    pub(crate) fn push(
        &mut self,
        ev: &crate::pb::Event,
        raw: Option<Vec<u8>>,
    ) -> Result<(), Error> {
        if ev.seq != self.next_seq {
            return Err(Error::Corrupt(format!(
                "the log has a gap: expected event {}, found {}",
                self.next_seq, ev.seq
            )));
        }
        crate::projection::apply(ev, &mut self.pending)?;
        if let Some(raw) = raw {
            self.bytes_pending += raw.len();
            self.pending.put(keys::log(ev.seq), raw);
        }
        self.next_seq += 1;
        self.count += 1;
        if let Some(p) = &self.progress {
            p.store(self.count, std::sync::atomic::Ordering::Relaxed);
        }
        self.in_pending += 1;
        if self.in_pending == REBUILD_BATCH_EVENTS || self.bytes_pending >= REBUILD_BATCH_BYTES {
            let batch = std::mem::replace(&mut self.pending, Pending::new(self.into));
            self.into.apply_batch(batch.into_batch())?;
            self.in_pending = 0;
            self.bytes_pending = 0;
        }
        Ok(())
    }

    /// Applies what is left with the projection version; returns the events added.
    pub(crate) fn finish(mut self) -> Result<u64, Error> {
        self.pending.put(
            keys::META_PROJECTION_VERSION,
            crate::projection::PROJECTION_VERSION.to_be_bytes().to_vec(),
        );
        self.into.apply_batch(self.pending.into_batch())?;
        Ok(self.count)
    }
}

/// A long job's progress, logged every `PROGRESS_EVERY` from a thread of its own, so
/// that a job stuck on the disk never waits silently: it says how far it got and, when
/// nothing moved, that the disk may be full or failing.
pub(crate) struct Progress {
    events: std::sync::Arc<std::sync::atomic::AtomicU64>,
    done: std::sync::mpsc::Sender<()>,
}

const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Progress {
    /// Reports `n` events done (for jobs that count on their own).
    pub(crate) fn set(&self, n: u64) {
        self.events.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn start(what: &'static str) -> Self {
        let events = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let seen = events.clone();
        let _ = std::thread::Builder::new()
            .name("arbor-progress".into())
            .spawn(move || {
                let mut last = 0;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    finished.recv_timeout(PROGRESS_EVERY)
                {
                    let now = seen.load(std::sync::atomic::Ordering::Relaxed);
                    if now == last {
                        tracing::warn!(
                            events = now,
                            "{what}: no progress for {} s; is the disk full or failing?",
                            PROGRESS_EVERY.as_secs()
                        );
                    } else {
                        tracing::info!(events = now, "{what}: in progress");
                    }
                    last = now;
                }
            });
        Self { events, done }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let _ = self.done.send(());
    }
}

/// Replays the log of `from` into `into`, an empty tree: the log is copied as it is and
/// every projection derived from it, checking on the way that the log is gap-free and
/// that each event decodes. Returns the number of events. `from` is only read.
pub(crate) fn replay_into(from: &sled::Tree, into: &sled::Tree) -> Result<u64, Error> {
    let progress = Progress::start("rebuild");
    let mut importer = Importer::new(into, 1).reporting(&progress);
    for kv in from.range(keys::log(0)..keys::log(u64::MAX)) {
        let (_, value) = kv?;
        let ev = <crate::pb::Event as prost::Message>::decode(value.as_ref())?;
        importer.push(&ev, Some(value.to_vec()))?;
    }
    // A replica's cache stays one: the marker says which shared log it copies.
    if let Some(marker) = from.get(keys::META_SHARED_LOG)? {
        into.insert(keys::META_SHARED_LOG, marker)?;
    }
    importer.finish()
}

/// How two trees' projections (everything but the log) differ, compared key by key in
/// order with nothing held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Diff {
    /// Projected keys in the first tree and in the second.
    pub(crate) keys_first: u64,
    pub(crate) keys_second: u64,
    /// Keys of the second that the first lacks or holds with another value.
    pub(crate) wrong: u64,
    /// Keys of the first that the second lacks.
    pub(crate) extra: u64,
}

pub(crate) fn compare(first: &sled::Tree, second: &sled::Tree) -> Result<Diff, Error> {
    let projected = |t: &sled::Tree| {
        t.iter().filter(|kv| {
            kv.as_ref().map_or(true, |(k, _)| {
                k.first() != Some(&keys::LOG) && k.as_ref() != keys::META_SHARED_LOG
            })
        })
    };
    let (mut first_iter, mut second_iter) = (projected(first), projected(second));
    let mut a = first_iter.next().transpose()?;
    let mut b = second_iter.next().transpose()?;
    let mut diff = Diff::default();
    loop {
        let order = match (&a, &b) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            std::cmp::Ordering::Less => {
                diff.keys_first += 1;
                diff.extra += 1;
                a = first_iter.next().transpose()?;
            }
            std::cmp::Ordering::Greater => {
                diff.keys_second += 1;
                diff.wrong += 1;
                b = second_iter.next().transpose()?;
            }
            std::cmp::Ordering::Equal => {
                diff.keys_first += 1;
                diff.keys_second += 1;
                if a.as_ref().map(|(_, v)| v) != b.as_ref().map(|(_, v)| v) {
                    diff.wrong += 1;
                }
                a = first_iter.next().transpose()?;
                b = second_iter.next().transpose()?;
            }
        }
    }
    Ok(diff)
}

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Events read from the log, in order, each decoded.
    pub events: u64,
    /// Why the log could not be read to its end: a gap or an event that does not decode.
    pub log_damage: Option<String>,
    /// Projected keys compared.
    pub keys: u64,
    /// Keys the log implies that are missing or hold another value.
    pub keys_wrong: u64,
    /// Keys present that the log does not imply.
    pub keys_extra: u64,
}

impl CheckReport {
    pub fn intact(&self) -> bool {
        self.log_damage.is_none() && self.keys_wrong == 0 && self.keys_extra == 0
    }
}

/// Verifies the store without changing it: the log is read from the start (gap-free,
/// every event decodes), the projections it implies are derived into a temporary
/// database, and the two are compared key by key in order (nothing is held in memory
/// but a batch).
pub(crate) fn check(tree: &sled::Tree) -> Result<CheckReport, Error> {
    let scratch = sled::Config::new().temporary(true).open()?;
    let derived = scratch.open_tree("arbor")?;
    let mut report = CheckReport::default();
    let progress = Progress::start("check");
    let mut importer = Importer::new(&derived, 1).reporting(&progress);
    for ev in super::replay(tree, 1) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                report.log_damage =
                    Some(format!("event {} does not decode: {e}", report.events + 1));
                break;
            }
        };
        if ev.seq != report.events + 1 {
            report.log_damage = Some(format!(
                "the log has a gap: expected event {}, found {}",
                report.events + 1,
                ev.seq
            ));
            break;
        }
        report.events += 1;
        importer.push(&ev, None)?;
    }
    importer.finish()?;
    if report.log_damage.is_some() {
        return Ok(report);
    }
    let diff = compare(tree, &derived)?;
    report.keys = diff.keys_first.max(diff.keys_second);
    report.keys_wrong = diff.wrong;
    report.keys_extra = diff.extra;
    Ok(report)
}
