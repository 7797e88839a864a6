//! Reading and writing the tree. `Kv` is what projections and validation read through;
//! `Pending` is a group's uncommitted writes layered over the tree, so that each
//! command of a group sees the effects of the ones before it, and the whole group
//! becomes one atomic `sled::Batch`.

use std::collections::BTreeMap;

use crate::domain::Error;

pub(crate) trait Kv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Every key under `prefix`, in order.
    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, Error>;
}

impl Kv for sled::Tree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(sled::Tree::get(self, key)?.map(|v| v.to_vec()))
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        self.scan_prefix(prefix)
            .keys()
            .map(|k| Ok(k?.to_vec()))
            .collect()
    }
}

/// Writes not yet applied, read through to the tree beneath.
pub(crate) struct Pending<'a> {
    tree: &'a sled::Tree,
    /// `None` marks a removal.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Pending<'a> {
    pub(crate) fn new(tree: &'a sled::Tree) -> Self {
        Self {
            tree,
            writes: BTreeMap::new(),
        }
    }

    pub(crate) fn put(&mut self, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.writes.insert(key.into(), Some(value));
    }

    pub(crate) fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub(crate) fn into_batch(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch
    }
}

impl Kv for Pending<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => Kv::get(self.tree, key),
        }
    }

    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let mut keys: BTreeMap<Vec<u8>, bool> = self
            .tree
            .keys_with_prefix(prefix)?
            .into_iter()
            .map(|k| (k, true))
            .collect();
        let pending = self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        for (k, v) in pending {
            keys.insert(k.clone(), v.is_some());
        }
        Ok(keys
            .into_iter()
            .filter_map(|(k, live)| live.then_some(k))
            .collect())
    }
}
