//! The event log: the one source of truth. Events are `arbor.v1.Event` protobufs keyed
//! by a gap-free big-endian sequence number, appended only by the committer and never
//! rewritten. This module reads it; `committer` writes it, with what `decide` makes of each
//! command.

pub(crate) mod command;
pub(crate) mod committer;
mod decide;
pub(crate) mod postgres;
pub(crate) mod rebuild;

use prost::Message;

use crate::db::keys;
use crate::domain::Error;
use crate::pb;

/// The events from `from_seq` on, in order.
pub(crate) fn replay(
    tree: &sled::Tree,
    from_seq: u64,
) -> impl Iterator<Item = Result<pb::Event, Error>> + '_ {
    tree.range(keys::log(from_seq)..keys::log(u64::MAX))
        .map(|kv| {
            let (_, v) = kv?;
            Ok(pb::Event::decode(v.as_ref())?)
        })
}

/// The sequence number of the last event, 0 for an empty log.
pub(crate) fn last_seq(tree: &sled::Tree) -> Result<u64, Error> {
    let last = tree.range(keys::log(0)..keys::log(u64::MAX)).next_back();
    match last {
        Some(kv) => {
            let (k, _) = kv?;
            keys::seq_of_log_key(&k).ok_or_else(|| Error::Corrupt("log key".into()))
        }
        None => Ok(0),
    }
}
