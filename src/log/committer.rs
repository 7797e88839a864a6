//! The committer: the one writer. Requests arrive over a bounded channel; the committer
//! takes whatever is waiting (group commit), validates each command against the current
//! state including the commands before it in the group, turns it into events with the
//! next sequence numbers, projects them, writes log and projections with one atomic
//! `apply_batch`, flushes once, and only then answers every request in the group. A
//! command that fails validation writes nothing and does not disturb its neighbours.

use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::db::health::StoreState;
use crate::db::kv::Pending;
use crate::db::{Handles, keys};
use crate::domain::{Command, Error};
use crate::pb;
use crate::projection::{self, RunRecord};
use crate::stream::Publisher;

use super::decide::{Answer, decide};

/// Most requests committed as one group. Bounds the size of one sled batch (a group of
/// full `LogBatch` requests is about 40 KB a request) and the latency of the first
/// request in a group; the channel holds the rest.
const MAX_GROUP: usize = 256;

/// What a successful write returns.
#[derive(Debug)]
pub enum Outcome {
    ExperimentCreated(String),
    Run(Box<RunRecord>),
    /// `GetOrCreateChildRun`: the child, and whether this call created it.
    ChildRun(Box<RunRecord>, bool),
    LoggedModel(Box<crate::projection::LoggedModelRecord>),
    Done,
}

pub(crate) enum Request {
    Write {
        /// Boxed: commands differ much in size, and the channel holds 1,024 requests.
        command: Box<Command>,
        /// Who asked; recorded on every event the command makes.
        actor: Option<Arc<str>>,
        reply: oneshot::Sender<Result<Outcome, Error>>,
    },
    /// Commit what came before, flush, answer, and stop.
    Close(oneshot::Sender<()>),
}

pub(crate) struct Committer {
    db: Handles,
    state: Arc<StoreState>,
    next_seq: u64,
    /// Where committed events go once they are on disk.
    publisher: Publisher,
}

type Reply = oneshot::Sender<Result<Outcome, Error>>;

/// A command and who asked for it.
pub(crate) struct Signed {
    pub(crate) command: Command,
    pub(crate) actor: Option<Arc<str>>,
}

impl Committer {
    pub(crate) fn new(
        db: Handles,
        state: Arc<StoreState>,
        publisher: Publisher,
    ) -> Result<Self, Error> {
        let next_seq = crate::log::last_seq(&db.tree)? + 1;
        Ok(Self {
            db,
            state,
            next_seq,
            publisher,
        })
    }

    /// The committer's loop, run on its own thread until `Close` or until every sender
    /// is gone.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Request::Write {
                        command,
                        actor,
                        reply,
                    } => group.push((
                        Signed {
                            command: *command,
                            actor,
                        },
                        reply,
                    )),
                    Request::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
                if group.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            self.commit_group(group);
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
    pub(crate) fn commit_group(&mut self, group: Vec<(Signed, Reply)>) {
        if group.is_empty() {
            return;
        }
        let metrics = crate::metrics::global();
        if let Some(why) = self.state.failure() {
            metrics.writes_refused.inc_by(group.len() as u64);
            refuse(group, &why);
            return;
        }
        if let Err(why) = self.state.check_space() {
            metrics.writes_refused.inc_by(group.len() as u64);
            refuse(group, &why);
            return;
        }
        metrics.commit_group_size.observe(group.len() as f64);
        let own = self.db.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let first_seq = self.next_seq;
        let mut pending = Pending::new(&own.tree);
        let mut answers: Vec<(Reply, Result<Outcome, Error>)> = Vec::with_capacity(group.len());
        let mut events = Vec::new();
        for (signed, reply) in group {
            let result = self.decide_and_project(&signed, &mut pending, now, &mut events);
            match result {
                Ok(outcome) => answers.push((reply, Ok(outcome))),
                Err(e @ (Error::Storage(_) | Error::Corrupt(_))) => {
                    // The group's pending state may be half-applied: drop all of it.
                    tracing::error!(error = %e, "projection failed; the group is abandoned");
                    self.next_seq = first_seq;
                    let why = e.to_string();
                    let _ = reply.send(Err(e));
                    for (reply, _) in answers {
                        let _ = reply.send(Err(Error::Unavailable(why.clone())));
                    }
                    return;
                }
                Err(e) => answers.push((reply, Err(e))),
            }
        }
        if !pending.is_empty() {
            self.state.commit_starts();
            let started = std::time::Instant::now();
            let written = own.tree.apply_batch(pending.into_batch()).and_then(|()| {
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
                self.next_seq = first_seq;
                for (reply, _) in answers {
                    let _ = reply.send(Err(Error::Unavailable(why.clone())));
                }
                return;
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
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
    }

    fn decide_and_project(
        &mut self,
        signed: &Signed,
        pending: &mut Pending,
        now: i64,
        events: &mut Vec<pb::Event>,
    ) -> Result<Outcome, Error> {
        let actor = signed.actor.as_deref().unwrap_or_default();
        let (payloads, answer) = decide(&signed.command, pending, now, actor)?;
        for payload in payloads {
            let ev = pb::Event {
                seq: self.next_seq,
                timestamp: now,
                actor: actor.to_string(),
                payload: Some(payload),
            };
            self.next_seq += 1;
            projection::apply(&ev, pending)?;
            pending.put(keys::log(ev.seq), ev.encode_to_vec());
            events.push(ev);
        }
        Ok(match answer {
            Answer::Experiment(id) => Outcome::ExperimentCreated(id.to_string()),
            Answer::Run(id) => Outcome::Run(Box::new(
                projection::load_run(pending, &id)?
                    .ok_or_else(|| Error::Corrupt(format!("run {id} vanished")))?,
            )),
            Answer::ChildRun(id, created) => Outcome::ChildRun(
                Box::new(
                    projection::load_run(pending, &id)?
                        .ok_or_else(|| Error::Corrupt(format!("run {id} vanished")))?,
                ),
                created,
            ),
            Answer::LoggedModel(id) => Outcome::LoggedModel(Box::new(
                projection::load_logged_model(pending, &id)?
                    .ok_or_else(|| Error::Corrupt(format!("logged model {id} vanished")))?,
            )),
            Answer::Done => Outcome::Done,
        })
    }
}

/// Answers every request of a group with 503 and `why`.
fn refuse(group: Vec<(Signed, Reply)>, why: &str) {
    for (_, reply) in group {
        let _ = reply.send(Err(Error::Unavailable(why.to_string())));
    }
}
