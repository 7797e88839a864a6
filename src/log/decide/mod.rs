//! Deciding what a command means: each command (`domain::commands`) is validated against
//! the current state (the pending state of its group, so it sees the commands before
//! it) and becomes the events that record it, or an error that writes nothing. Deciding
//! is pure: it reads through `Kv` and returns events; the committer assigns sequence
//! numbers, projects and writes. One file per kind of thing a command changes; each
//! command's `impl Decide` sits in its file, beside the rules it follows, and names
//! what the command answers.

// The `impl Decide`s take crate-private types: see `log::command::sealed`.
#![allow(private_interfaces)]

use crate::db::kv::Pending;
use crate::domain::Error;
use crate::pb::event::Payload;
use crate::projection::{self, LoggedModelRecord, RunRecord};

/// `impl Decide` for a command that answers nothing but success: `$decide` is a
/// function of the command and the `At` that returns its events.
macro_rules! decide_done {
    ($command:ty, |$c:ident, $at:ident| $decide:expr) => {
        impl $crate::log::command::sealed::Decide for $command {
            type Output = ();
            type Key = ();
            fn decide(
                &self,
                $at: &$crate::log::command::At<'_>,
            ) -> Result<(Vec<$crate::pb::event::Payload>, ()), $crate::domain::Error> {
                let $c = self;
                $decide
            }
            fn output(
                (): (),
                _: &$crate::db::kv::Pending<'_>,
            ) -> Result<(), $crate::domain::Error> {
                Ok(())
            }
        }
    };
}

/// `impl Decide` for a command that answers with a record read back by its id once the
/// events are projected: `$decide` returns the events and the id, `$read` reads it.
macro_rules! decide_read_back {
    ($command:ty => $output:ty, $read:path, |$c:ident, $at:ident| $decide:expr) => {
        impl $crate::log::command::sealed::Decide for $command {
            type Output = $output;
            type Key = String;
            fn decide(
                &self,
                $at: &$crate::log::command::At<'_>,
            ) -> Result<(Vec<$crate::pb::event::Payload>, String), $crate::domain::Error> {
                let $c = self;
                $decide
            }
            fn output(
                id: String,
                kv: &$crate::db::kv::Pending<'_>,
            ) -> Result<$output, $crate::domain::Error> {
                $read(kv, &id)
            }
        }
    };
}

mod access;
mod artifacts;
mod batch;
mod experiments;
mod inputs;
mod models;
mod runs;

/// A command's events and the key of its answer, or why it is refused.
pub(crate) type Decision<K = ()> = Result<(Vec<Payload>, K), Error>;

/// Events that answer nothing but success.
fn done(events: Vec<Payload>) -> Decision {
    Ok((events, ()))
}

/// The run `id` as projected, for commands that answer with it.
fn projected_run(kv: &Pending, id: &str) -> Result<RunRecord, Error> {
    projection::load_run(kv, id)?.ok_or_else(|| Error::Corrupt(format!("run {id} vanished")))
}

/// The logged model `id` as projected, for commands that answer with it.
fn projected_model(kv: &Pending, id: &str) -> Result<LoggedModelRecord, Error> {
    projection::load_logged_model(kv, id)?
        .ok_or_else(|| Error::Corrupt(format!("logged model {id} vanished")))
}

#[cfg(test)]
mod tests;
