//! Re-deriving every projection from the log: `arbor rebuild`, the automatic rebuild
//! when the projection layout version changes, and the check in tests that live state
//! equals rebuilt state.

use std::collections::BTreeMap;

use crate::db::keys;
use crate::db::kv::Pending;
use crate::domain::Error;

/// Events applied per atomic batch while rebuilding; bounds the memory a rebuild uses.
const REBUILD_BATCH_EVENTS: usize = 1024;
/// Keys removed per batch while clearing the old projections.
const CLEAR_BATCH_KEYS: usize = 10_000;

/// Drops every projection and replays the whole log into fresh ones. Returns the number
/// of events replayed. Crash-safe: the projection version is removed first and written
/// last, so an interrupted rebuild is redone when the store is next opened.
pub(crate) fn rebuild(db: &sled::Db, tree: &sled::Tree) -> Result<u64, Error> {
    tree.remove(keys::META_PROJECTION_VERSION)?;
    db.flush()?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for key in tree.iter().keys() {
        let key = key?;
        if key.first() == Some(&keys::LOG) {
            continue;
        }
        batch.remove(key);
        in_batch += 1;
        if in_batch == CLEAR_BATCH_KEYS {
            tree.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    tree.apply_batch(batch)?;

    let mut count = 0u64;
    let mut pending = Pending::new(tree);
    let mut in_pending = 0;
    for ev in super::replay(tree, 1) {
        let ev = ev?;
        count += 1;
        if ev.seq != count {
            return Err(Error::Corrupt(format!(
                "the log has a gap: expected event {count}, found {}",
                ev.seq
            )));
        }
        crate::projection::apply(&ev, &mut pending)?;
        in_pending += 1;
        if in_pending == REBUILD_BATCH_EVENTS {
            tree.apply_batch(std::mem::replace(&mut pending, Pending::new(tree)).into_batch())?;
            in_pending = 0;
        }
    }
    pending.put(
        keys::META_PROJECTION_VERSION,
        crate::projection::PROJECTION_VERSION.to_be_bytes().to_vec(),
    );
    tree.apply_batch(pending.into_batch())?;
    db.flush()?;
    Ok(count)
}

/// Every projected key and value (everything but the log), for comparing live state
/// with rebuilt state.
pub(crate) fn dump(tree: &sled::Tree) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
    let mut out = BTreeMap::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        if k.first() != Some(&keys::LOG) {
            out.insert(k.to_vec(), v.to_vec());
        }
    }
    Ok(out)
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
    let mut pending = Pending::new(&derived);
    let mut in_pending = 0;
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
        crate::projection::apply(&ev, &mut pending)?;
        in_pending += 1;
        if in_pending == REBUILD_BATCH_EVENTS {
            derived.apply_batch(
                std::mem::replace(&mut pending, Pending::new(&derived)).into_batch(),
            )?;
            in_pending = 0;
        }
    }
    pending.put(
        keys::META_PROJECTION_VERSION,
        crate::projection::PROJECTION_VERSION.to_be_bytes().to_vec(),
    );
    derived.apply_batch(pending.into_batch())?;
    if report.log_damage.is_some() {
        return Ok(report);
    }
    let mut live = tree
        .iter()
        .filter(|kv| {
            kv.as_ref()
                .map_or(true, |(k, _)| k.first() != Some(&keys::LOG))
        })
        .peekable();
    let mut want = derived.iter().peekable();
    loop {
        let order = match (live.peek(), want.peek()) {
            (None, None) => break,
            (Some(Err(_)), _) => {
                return Err(live
                    .next()
                    .and_then(Result::err)
                    .map_or(Error::Closed, Error::from));
            }
            (_, Some(Err(_))) => {
                return Err(want
                    .next()
                    .and_then(Result::err)
                    .map_or(Error::Closed, Error::from));
            }
            (Some(Ok((a, _))), Some(Ok((b, _)))) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        report.keys += 1;
        match order {
            std::cmp::Ordering::Less => {
                report.keys_extra += 1;
                live.next();
            }
            std::cmp::Ordering::Greater => {
                report.keys_wrong += 1;
                want.next();
            }
            std::cmp::Ordering::Equal => {
                let (Some(Ok((_, a))), Some(Ok((_, b)))) = (live.next(), want.next()) else {
                    continue;
                };
                if a != b {
                    report.keys_wrong += 1;
                }
            }
        }
    }
    Ok(report)
}
