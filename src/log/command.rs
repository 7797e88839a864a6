//! What makes a type a write: `Command`, sealed so that only the crate's own commands
//! (`domain::commands`) are writes, each decided in one place (`impl Decide` in
//! `log/decide/`). The committer takes any of them through one erased `Job`, and the
//! writer gets back the command's own `Output`, so the compiler checks every answer's
//! type.

use tokio::sync::oneshot;

use crate::db::kv::Pending;
use crate::domain::Error;
use crate::pb::event::Payload;

/// A write `Store::submit` takes: one of `domain::commands`. Its answer is
/// `Self::Output` (`()` for most; the run for `CreateRun`, say).
pub trait Command: sealed::Decide {}

impl<T: sealed::Decide> Command for T {}

/// Where a command is decided: the group's pending state (which sees the commands
/// decided before it in the same group), the group's commit time (epoch milliseconds)
/// and who asked (empty: nobody in particular, auth off). Whether the actor may ask was
/// checked before (`auth::Access`); here the actor only shapes what is recorded.
pub(crate) struct At<'a> {
    pub kv: &'a Pending<'a>,
    pub now: i64,
    pub actor: &'a str,
}

// `Decide` is sealed: outside the crate it is reachable only as `Command`'s bound, and
// none of its methods can be called there, so its crate-private argument types are no
// interface (hence the allowance, here and in `log/decide`).
#[allow(private_interfaces)]
pub(crate) mod sealed {
    use super::{At, Error, Payload, Pending};

    /// How a command is decided and answered.
    pub trait Decide: std::fmt::Debug + Send + 'static {
        /// What the writer gets once the command's events are durable.
        type Output: Send + 'static;
        /// What `decide` hands to `output` (an id to read back, say).
        type Key: Send;
        /// Validates the command against the state: the events that record it, or why
        /// it is refused (then it writes nothing). Pure: reads through `at.kv` only.
        fn decide(&self, at: &At<'_>) -> Result<(Vec<Payload>, Self::Key), Error>;
        /// The answer, read from the state once the events are projected into it.
        fn output(key: Self::Key, kv: &Pending<'_>) -> Result<Self::Output, Error>;
    }
}

/// A command on its way through the committer, with the channel its writer waits on:
/// the committer handles every command as one of these.
pub(crate) trait Job: Send {
    /// Decides the command; on success its events, and the job keeps the key.
    fn decide(&mut self, at: &At<'_>) -> Result<Vec<Payload>, Error>;
    /// Once the events are projected: reads the answer and keeps it (or the error).
    fn settle(&mut self, kv: &Pending<'_>) -> Result<(), Error>;
    /// Keeps `e` as the answer (the command was refused).
    fn refuse(&mut self, e: Error);
    /// Sends what was kept.
    fn answer(self: Box<Self>);
    /// Sends `e` instead of whatever was kept (the group did not commit).
    fn fail(self: Box<Self>, e: Error);
}

enum Progress<C: sealed::Decide> {
    Waiting,
    Decided(C::Key),
    Answered(Result<C::Output, Error>),
}

/// Where the answer to a command `C` arrives.
pub(crate) type Answer<C> = oneshot::Receiver<Result<<C as sealed::Decide>::Output, Error>>;

/// A job for the command `C`, and where its answer arrives.
pub(crate) fn job<C: Command>(command: C) -> (Box<dyn Job>, Answer<C>) {
    let (reply, receiver) = oneshot::channel();
    let job = Typed {
        command,
        progress: Progress::Waiting,
        reply,
    };
    (Box::new(job), receiver)
}

struct Typed<C: sealed::Decide> {
    command: C,
    progress: Progress<C>,
    reply: oneshot::Sender<Result<C::Output, Error>>,
}

impl<C: sealed::Decide> Job for Typed<C> {
    fn decide(&mut self, at: &At<'_>) -> Result<Vec<Payload>, Error> {
        let (events, key) = self.command.decide(at)?;
        self.progress = Progress::Decided(key);
        Ok(events)
    }

    fn settle(&mut self, kv: &Pending<'_>) -> Result<(), Error> {
        let Progress::Decided(key) = std::mem::replace(&mut self.progress, Progress::Waiting)
        else {
            return Err(Error::Corrupt(format!(
                "{:?} was settled before it was decided",
                self.command
            )));
        };
        self.progress = Progress::Answered(Ok(C::output(key, kv)?));
        Ok(())
    }

    fn refuse(&mut self, e: Error) {
        self.progress = Progress::Answered(Err(e));
    }

    fn answer(self: Box<Self>) {
        let answer = match self.progress {
            Progress::Answered(answer) => answer,
            _ => Err(Error::Corrupt(format!(
                "{:?} was answered before it was decided",
                self.command
            ))),
        };
        let _ = self.reply.send(answer);
    }

    fn fail(self: Box<Self>, e: Error) {
        let _ = self.reply.send(Err(e));
    }
}
