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
