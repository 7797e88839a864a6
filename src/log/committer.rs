//! The committer: the one writer. Requests arrive over a bounded channel; the committer
//! takes whatever is waiting (group commit), validates each command against the current
//! state including the commands before it in the group, turns it into events with the
//! next sequence numbers, projects them, writes log and projections with one atomic
//! `apply_batch`, flushes once, and only then answers every request in the group. A
//! command that fails validation writes nothing and does not disturb its neighbours.

use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::db::health::{Remote, StoreState};
use crate::db::kv::Pending;
use crate::db::{Handles, keys};
use crate::domain::Error;
use crate::pb;
use crate::projection;
use crate::stream::Publisher;

use super::command::{At, Job};
use super::postgres::{FETCH_CHUNK, Stored, Writer};

/// Most requests committed as one group. Bounds the size of one sled batch (a group of
/// full `LogBatch` requests is about 40 KB a request) and the latency of the first
/// request in a group; the channel holds the rest.
const MAX_GROUP: usize = 256;

pub(crate) enum Request {
    Write {
        /// The command, with the channel its writer waits on.
        job: Box<dyn Job>,
        /// Who asked; recorded on every event the command makes.
        actor: Option<Arc<str>>,
    },
    /// With a shared log: take in what other replicas appended (up to the head at the
    /// time this is handled), then answer, if anyone waits.
    CatchUp(Option<oneshot::Sender<Result<(), Error>>>),
    /// Commit what came before, flush, answer, and stop.
    Close(oneshot::Sender<()>),
}

pub(crate) struct Committer {
    db: Handles,
    state: Arc<StoreState>,
    next_seq: u64,
    /// Where committed events go once they are on disk.
    publisher: Publisher,
    /// The shared log, when the store is one (`--store postgres://...`): events are
    /// durable once it commits them, and the local tree is a cache of it.
    shared: Option<Writer>,
}

/// A command and who asked for it.
pub(crate) struct Signed {
    pub(crate) job: Box<dyn Job>,
    pub(crate) actor: Option<Arc<str>>,
}

impl Committer {
    pub(crate) fn new(
        db: Handles,
        state: Arc<StoreState>,
        publisher: Publisher,
        shared: Option<Writer>,
    ) -> Result<Self, Error> {
        let next_seq = crate::log::last_seq(&db.tree)? + 1;
        Ok(Self {
            db,
            state,
            next_seq,
            publisher,
            shared,
        })
    }

    /// The committer's loop, run on its own thread until `Close` or until every sender
    /// is gone.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = Vec::new();
            let mut waiters = Vec::new();
            let mut woken = false;
            let mut close = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Request::Write { job, actor } => group.push(Signed { job, actor }),
                    Request::CatchUp(waiter) => {
                        woken = true;
                        waiters.extend(waiter);
                    }
                    Request::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if group.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            if group.is_empty() {
                if woken {
                    let caught_up = self.catch_up();
                    for w in waiters {
                        let _ = w.send(caught_up.as_ref().map(|_| ()).map_err(again));
                    }
                }
            } else {
                // A write group takes in everything before it: the waiters are current after it.
                let written = self.commit_group(group);
                for w in waiters {
                    let _ = w.send(written.clone().map_err(Error::Unavailable));
                }
            }
            if let Some(done) = close {
                let _ = done.send(());
                return;
            }
        }
    }

    /// Validates, commits and answers one group of commands. Refuses the whole group,
    /// writing nothing, while the disk is below its reserve (writes resume by themselves
    /// above it) or after the disk refused a write (until a restart: sled cannot
    /// recover from that in-process, and even closing its handles then waits forever,
    /// which is why the reserve keeps the disk from filling under it).
    /// Returns whether the group was committed (whatever each command's answer), or why
    /// not.
    pub(crate) fn commit_group(&mut self, group: Vec<Signed>) -> Result<(), String> {
        if group.is_empty() {
            return Ok(());
        }
        let metrics = crate::metrics::global();
        if let Some(why) = self.state.failure() {
            metrics.writes_refused.inc_by(group.len() as u64);
            refuse(group, &why);
            return Err(why);
        }
        if let Err(why) = self.state.check_space() {
            metrics.writes_refused.inc_by(group.len() as u64);
            refuse(group, &why);
            return Err(why);
        }
        metrics.commit_group_size.observe(group.len() as f64);
        let own = self.db.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let first_seq = self.next_seq;
        let mut pending = Pending::new(&own.tree);
        // Every job, decided (its answer kept in it) or refused.
        let mut answers: Vec<Box<dyn Job>> = Vec::with_capacity(group.len());
        let mut events = Vec::new();
        // With a shared log: lock it, and take in what other replicas appended, so that
        // the group is decided on the whole log and appended at its head.
        let mut ours = self.shared.as_ref().map(|_| Vec::new());
        if let Some(writer) = self.shared.as_mut() {
            let began = writer
                .begin(first_seq - 1)
                .and_then(|theirs| take_in(&mut self.next_seq, theirs, &mut pending, &mut events));
            if let Err(e) = began {
                self.next_seq = first_seq;
                return Err(self.remote_failed(e, group));
            }
        }
        for Signed { mut job, actor } in group {
            let actor = actor.as_deref().unwrap_or_default();
            let result = self.decide_and_project(
                job.as_mut(),
                actor,
                &mut pending,
                now,
                &mut events,
                ours.as_mut(),
            );
            match result {
                Ok(()) => answers.push(job),
                Err(e @ (Error::Storage(_) | Error::Corrupt(_))) => {
                    // The group's pending state may be half-applied: drop all of it.
                    tracing::error!(error = %e, "projection failed; the group is abandoned");
                    if let Some(writer) = self.shared.as_mut() {
                        writer.abort();
                    }
                    self.next_seq = first_seq;
                    let why = e.to_string();
                    job.fail(e);
                    for job in answers {
                        job.fail(Error::Unavailable(why.clone()));
                    }
                    return Err(why);
                }
                Err(e) => {
                    job.refuse(e);
                    answers.push(job);
                }
            }
        }
        if let (Some(writer), Some(ours)) = (self.shared.as_mut(), ours) {
            // Durable once PostgreSQL commits: that is this store's flush.
            let started = std::time::Instant::now();
            let appended = writer.append(ours);
            metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = appended {
                // Whether PostgreSQL committed is unknown: the next group reads the log
                // again from here and takes in whatever it holds.
                self.next_seq = first_seq;
                return Err(self.remote_failed_jobs(e, answers));
            }
            self.state.set_remote(Remote::Writer, None);
        }
        if !pending.is_empty() {
            self.state.commit_starts();
            let started = std::time::Instant::now();
            let shared = self.shared.is_some();
            let written = own.tree.apply_batch(pending.into_batch()).and_then(|()| {
                if shared {
                    // Durable in PostgreSQL already; the local cache is flushed in the
                    // background and caught up from the log after a crash.
                    return Ok(());
                }
                let flush_started = std::time::Instant::now();
                let flushed = own.db.flush().map(|_| ());
                metrics
                    .flush_seconds
                    .observe(flush_started.elapsed().as_secs_f64());
                flushed
            });
            metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.state.commit_ends();
            if let Err(e) = written {
                let why = format!(
                    "{}; the store stopped taking writes to keep what it has intact: restart the server once the disk is writable again (acknowledged writes are safe)",
                    crate::db::space::describe(&e)
                );
                tracing::error!(error = %e, "commit failed; refusing writes until a restart");
                self.state.set_failure(Some(why.clone()));
                if shared {
                    // The shared log has the group: its answers stand; this replica
                    // stops, and its cache catches up after the restart.
                    for job in answers {
                        job.answer();
                    }
                    return Err(why);
                }
                self.next_seq = first_seq;
                for job in answers {
                    job.fail(Error::Unavailable(why.clone()));
                }
                return Err(why);
            }
        }
        metrics.events_committed.inc_by(events.len() as u64);
        let points: usize = events
            .iter()
            .map(|ev| match &ev.payload {
                Some(pb::event::Payload::MetricsLogged(m)) => {
                    m.series.iter().map(|s| s.values.len()).sum()
                }
                _ => 0,
            })
            .sum();
        metrics.points_committed.inc_by(points as u64);
        // Watchers hear of the events before the writers: both after the flush.
        self.publisher.publish(events);
        for job in answers {
            job.answer();
        }
        Ok(())
    }

    /// With a shared log: takes in, in chunks, whatever other replicas appended since
    /// this one last looked, and publishes it to this replica's watchers.
    pub(crate) fn catch_up(&mut self) -> Result<(), Error> {
        if let Some(why) = self.state.failure() {
            return Err(Error::Unavailable(why));
        }
        loop {
            let Some(writer) = self.shared.as_mut() else {
                return Ok(());
            };
            let theirs = match writer.fetch(self.next_seq - 1, FETCH_CHUNK) {
                Ok(theirs) => theirs,
                Err(e) => {
                    self.state.set_remote(Remote::Writer, Some(e.to_string()));
                    return Err(e);
                }
            };
            self.state.set_remote(Remote::Writer, None);
            if theirs.is_empty() {
                return Ok(());
            }
            let full = theirs.len() >= usize::try_from(FETCH_CHUNK).unwrap_or(usize::MAX);
            let own = self.db.clone();
            let first_seq = self.next_seq;
            let mut pending = Pending::new(&own.tree);
            let mut events = Vec::new();
            let taken = take_in(&mut self.next_seq, theirs, &mut pending, &mut events)
                .and_then(|()| Ok(own.tree.apply_batch(pending.into_batch())?));
            if let Err(e) = taken {
                self.next_seq = first_seq;
                tracing::error!(error = %e, "taking in the shared log failed");
                return Err(e);
            }
            crate::metrics::global()
                .events_committed
                .inc_by(events.len() as u64);
            self.publisher.publish(events);
            if !full {
                return Ok(());
            }
        }
    }

    /// PostgreSQL failed the group before anything was committed: every request hears
    /// so (UNAVAILABLE), and health says PostgreSQL is out of reach until it answers.
    fn remote_failed(&mut self, e: Error, group: Vec<Signed>) -> String {
        self.remote_failed_jobs(e, group.into_iter().map(|s| s.job).collect())
    }

    fn remote_failed_jobs(&mut self, e: Error, jobs: Vec<Box<dyn Job>>) -> String {
        let why = e.to_string();
        tracing::warn!(error = %why, "the shared log refused a commit group");
        self.state.set_remote(Remote::Writer, Some(why.clone()));
        let mut refused = 0;
        for job in jobs {
            refused += 1;
            job.fail(Error::Unavailable(why.clone()));
        }
        crate::metrics::global().writes_refused.inc_by(refused);
        why
    }

    /// Decides one command, projects its events into `pending`, and lets the job read
    /// its answer from the result.
    fn decide_and_project(
        &mut self,
        job: &mut dyn Job,
        actor: &str,
        pending: &mut Pending,
        now: i64,
        events: &mut Vec<pb::Event>,
        mut ours: Option<&mut Vec<Stored>>,
    ) -> Result<(), Error> {
        let payloads = job.decide(&At {
            kv: pending,
            now,
            actor,
        })?;
        for payload in payloads {
            let ev = pb::Event {
                seq: self.next_seq,
                timestamp: now,
                actor: actor.to_string(),
                payload: Some(payload),
            };
            self.next_seq += 1;
            projection::apply(&ev, pending)?;
            let body = ev.encode_to_vec();
            if let Some(ours) = ours.as_deref_mut() {
                ours.push((ev.seq, body.clone()));
            }
            pending.put(keys::log(ev.seq), body);
            events.push(ev);
        }
        job.settle(pending)
    }
}

/// Takes in everything the shared log holds after the local copy's head, before the
/// store serves (a replica starting on an empty or old cache, `migrate-store` out of
/// PostgreSQL). Two passes: the events are copied into the local log, then projected
/// from it as `rebuild` does (projecting straight from the fetched rows held sled's
/// nodes in memory: 5 GB for 1,000,000 events, against 0.2 GB this way). The projection
/// version is removed first and written last, so a cache whose catch-up stopped halfway
/// is emptied and filled again at the next start. Returns the events taken in.
pub(crate) fn bulk_catch_up(tree: &sled::Tree, writer: &mut Writer) -> Result<u64, Error> {
    let first = super::last_seq(tree)? + 1;
    let mut next_seq = first;
    let progress = super::rebuild::Progress::start("catching up from the shared log");
    loop {
        let theirs = writer.fetch(next_seq - 1, FETCH_CHUNK)?;
        let full = theirs.len() >= usize::try_from(FETCH_CHUNK).unwrap_or(usize::MAX);
        if next_seq == first && !theirs.is_empty() {
            tree.remove(keys::META_PROJECTION_VERSION)?;
            tree.flush()?;
        }
        for (seq, body) in theirs {
            if seq != next_seq {
                return Err(Error::Corrupt(format!(
                    "the shared log skips from event {} to {seq}",
                    next_seq - 1
                )));
            }
            // One at a time (the version key is out until the end, so atomicity does
            // not matter here): sled frees replaced nodes as its threads move on, and
            // a large batch per chunk kept hundreds of MB of them.
            tree.insert(keys::log(seq), body)?;
            next_seq += 1;
        }
        progress.set(next_seq - first);
        if !full {
            break;
        }
    }
    if next_seq == first {
        return Ok(0);
    }
    drop(progress);
    let progress = super::rebuild::Progress::start("projecting the caught-up log");
    let mut importer = super::rebuild::Importer::new(tree, first).reporting(&progress);
    for ev in super::replay(tree, first) {
        importer.push(&ev?, None)?;
    }
    importer.finish()
}

/// Projects events another replica appended to the shared log into `pending` (with
/// their stored bytes, so the local log stays an exact copy), checking they continue the
/// local log without a gap.
fn take_in(
    next_seq: &mut u64,
    theirs: Vec<Stored>,
    pending: &mut Pending,
    events: &mut Vec<pb::Event>,
) -> Result<(), Error> {
    for (seq, body) in theirs {
        let ev = pb::Event::decode(body.as_slice())?;
        if seq != *next_seq || ev.seq != seq {
            return Err(Error::Corrupt(format!(
                "the shared log does not continue this replica's copy: expected event {}, found {seq} (stored as {})",
                *next_seq, ev.seq
            )));
        }
        projection::apply(&ev, pending)?;
        pending.put(keys::log(seq), body);
        *next_seq += 1;
        events.push(ev);
    }
    Ok(())
}

/// The same failure for another waiter.
fn again(e: &Error) -> Error {
    Error::Unavailable(e.to_string())
}

/// Answers every request of a group with 503 and `why`.
fn refuse(group: Vec<Signed>, why: &str) {
    for signed in group {
        signed.job.fail(Error::Unavailable(why.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::commands::{CreateExperiment, SetExperimentTag};

    /// A database and its state in a temporary directory (kept while the first lives).
    fn scratch() -> (tempfile::TempDir, Handles, Arc<StoreState>) {
        let dir = tempfile::tempdir().expect("a dir");
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("db");
        let tree = db.open_tree("t").expect("tree");
        let state = Arc::new(StoreState::new(dir.path().to_path_buf(), 0));
        (dir, Handles { db, tree }, state)
    }

    fn experiment(name: &str) -> CreateExperiment {
        CreateExperiment {
            name: name.into(),
            ..Default::default()
        }
    }

    /// One group: each command sees the ones before it, a refused command writes
    /// nothing and leaves its neighbours alone, every writer gets its own typed answer,
    /// and the events reach the hub with gap-free sequence numbers.
    #[test]
    fn a_group_is_decided_in_order_and_refusals_write_nothing() {
        let (_dir, handles, state) = scratch();
        let (hub, publisher) = crate::stream::hub(0);
        let mut committer =
            Committer::new(handles.clone(), state, publisher, None).expect("a committer");
        let (first, first_answer) = super::super::command::job(experiment("a"));
        let (again, again_answer) = super::super::command::job(experiment("a"));
        let (other, other_answer) = super::super::command::job(experiment("b"));
        let group = [first, again, other]
            .into_iter()
            .map(|job| Signed { job, actor: None })
            .collect();
        committer.commit_group(group).expect("the group commits");
        let a = first_answer.blocking_recv().expect("an answer").expect("a");
        let refused = again_answer.blocking_recv().expect("an answer");
        let b = other_answer.blocking_recv().expect("an answer").expect("b");
        assert!(
            matches!(refused, Err(Error::AlreadyExists(_))),
            "{refused:?}"
        );
        assert_ne!(a, b);
        // Two experiments, one event each; the refusal made none.
        assert_eq!(crate::log::last_seq(&handles.tree).expect("read"), 2);
        assert_eq!(hub.committed(), 2);

        // The next group continues the sequence, and sees the first.
        let (tag, tag_answer) = super::super::command::job(SetExperimentTag {
            experiment_id: b.clone(),
            key: "k".into(),
            value: "v".into(),
        });
        committer
            .commit_group(vec![Signed {
                job: tag,
                actor: None,
            }])
            .expect("commits");
        let () = tag_answer
            .blocking_recv()
            .expect("an answer")
            .expect("tagged");
        assert_eq!(crate::log::last_seq(&handles.tree).expect("read"), 3);
    }

    /// A group refused whole (the store stopped taking writes): every writer hears
    /// UNAVAILABLE and nothing is written.
    #[test]
    fn a_store_that_stopped_taking_writes_refuses_the_whole_group() {
        let (_dir, handles, state) = scratch();
        state.set_failure(Some("the disk refused a write".into()));
        let (_hub, publisher) = crate::stream::hub(0);
        let mut committer =
            Committer::new(handles.clone(), state, publisher, None).expect("a committer");
        let (job, answer) = super::super::command::job(experiment("a"));
        let why = committer
            .commit_group(vec![Signed { job, actor: None }])
            .expect_err("refused");
        assert!(why.contains("disk"), "{why}");
        assert!(matches!(
            answer.blocking_recv().expect("an answer"),
            Err(Error::Unavailable(_))
        ));
        assert_eq!(crate::log::last_seq(&handles.tree).expect("read"), 0);
    }
}
