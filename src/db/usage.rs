//! Where a store's bytes go: every table of the keyspace (keys and values as stored),
//! against the size of the database on disk, whose difference is sled's own layout,
//! overhead and fragmentation. Read by `arbor disk-usage` on a stopped store.

use super::keys;

/// One table of the keyspace (one key prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableUsage {
    pub prefix: u8,
    pub name: &'static str,
    pub keys: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

/// The tables, by prefix, with what each holds.
pub(crate) const TABLES: &[(u8, &str)] = &[
    (keys::LOG, "event log"),
    (keys::HISTORY, "metric history chunks"),
    (keys::RUN, "run records"),
    (keys::EXPERIMENT_RUN, "runs by experiment"),
    (keys::RUN_BY_START, "runs by start time"),
    (keys::RUN_BY_NAME, "runs by name"),
    (keys::CHILD, "children by parent"),
    (keys::DESCENDANT, "runs by root"),
    (keys::PARAM_VALUE, "runs by param value"),
    (keys::METRIC_VALUE, "runs by latest metric value"),
    (keys::EXPERIMENT, "experiment records"),
    (keys::EXPERIMENT_NAME, "experiments by name"),
    (keys::EXPERIMENT_DATASET, "datasets"),
    (keys::LOGGED_MODEL, "logged models"),
    (keys::USER, "users"),
    (keys::TOKEN, "tokens"),
    (keys::GRANT, "permissions"),
    (b'M', "bookkeeping"),
];

/// The tables that grow with the runs: their records and every index of runs.
pub(crate) const RUN_TABLES: &[u8] = &[
    keys::RUN,
    keys::EXPERIMENT_RUN,
    keys::RUN_BY_START,
    keys::RUN_BY_NAME,
    keys::CHILD,
    keys::DESCENDANT,
    keys::PARAM_VALUE,
    keys::METRIC_VALUE,
];

/// Sums every key of `tree` into its table (unknown prefixes under "other", shown as `?`).
pub(crate) fn tables(tree: &sled::Tree) -> Result<Vec<TableUsage>, sled::Error> {
    let mut rows: Vec<TableUsage> = TABLES
        .iter()
        .map(|&(prefix, name)| TableUsage {
            prefix,
            name,
            ..TableUsage::default()
        })
        .collect();
    let mut other = TableUsage {
        prefix: b'?',
        name: "other",
        ..TableUsage::default()
    };
    for kv in tree.iter() {
        let (k, v) = kv?;
        let row = match rows.iter_mut().find(|r| k.first() == Some(&r.prefix)) {
            Some(row) => row,
            None => &mut other,
        };
        row.keys += 1;
        row.key_bytes += k.len() as u64;
        row.value_bytes += v.len() as u64;
    }
    if other.keys > 0 {
        rows.push(other);
    }
    Ok(rows)
}
