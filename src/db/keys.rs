//! The keyspace. Arbor keeps everything in one sled tree, so that an event and every
//! projection it touches are written by one atomic `apply_batch`; a one-byte prefix
//! says which table a key belongs to. Integers are big-endian so that keys sort
//! numerically.

/// The event log: `L | seq` → `arbor.v1.Event`.
pub(crate) const LOG: u8 = b'L';
/// Experiments: `E | id` → `ExperimentRecord`.
pub(crate) const EXPERIMENT: u8 = b'E';
/// Experiment names, active and deleted: `N | name` → id.
pub(crate) const EXPERIMENT_NAME: u8 = b'N';
/// Runs: `R | run_id` → `RunRecord`.
pub(crate) const RUN: u8 = b'R';
/// Runs of an experiment: `X | experiment id | run_id` → ().
pub(crate) const EXPERIMENT_RUN: u8 = b'X';
/// Children of a run: `C | parent | 0 | child` → ().
pub(crate) const CHILD: u8 = b'C';
/// Every run of a tree, the root included: `D | root | 0 | run` → ().
pub(crate) const DESCENDANT: u8 = b'D';
/// Runs by start time, for MLflow's default order: `S | experiment | !start_time | run_id`
/// → (), where `!start_time` is the bitwise complement, so newer runs sort first.
pub(crate) const RUN_BY_START: u8 = b'S';
/// Runs by param value: `P | experiment | key | 0 | value | 0 | run_id` → (). Params are
/// immutable, so entries are never removed.
pub(crate) const PARAM_VALUE: u8 = b'P';
/// Runs by latest metric value: `Q | experiment | key | 0 | rank | value | run_id` → (),
/// where rank is 0 for numbers and 1 for NaN, and the value is encoded so that bytes
/// sort as numbers do. Ordering by a metric walks this instead of sorting.
pub(crate) const METRIC_VALUE: u8 = b'Q';
/// Runs by name: `A | experiment | name length (u32) | name | run_id` → (). A name filter
/// (`LIKE '%x%'` included) is tested on these keys, so only matching runs are loaded.
pub(crate) const RUN_BY_NAME: u8 = b'A';
/// Logged models: `O | model_id` → `LoggedModelRecord`.
pub(crate) const LOGGED_MODEL: u8 = b'O';
/// Metric history chunks: `H | run | 0 | key | 0 | seq` → packed points.
pub(crate) const HISTORY: u8 = b'H';
/// Datasets of an experiment, one record per (name, digest), the first logged:
/// `Y | experiment | name | 0 | digest` → `arbor.v1.Dataset`.
pub(crate) const EXPERIMENT_DATASET: u8 = b'Y';
/// Users (`--auth`): `U | name` → `UserRecord`.
pub(crate) const USER: u8 = b'U';
/// API tokens: `T | token_id` → `TokenRecord`.
pub(crate) const TOKEN: u8 = b'T';
/// Experiment permissions: `G | experiment id | name` → the permission's name.
pub(crate) const GRANT: u8 = b'G';

/// Bookkeeping under `M`: the projection layout version and the next experiment id.
pub(crate) const META_PROJECTION_VERSION: &[u8] = b"Mprojection_version";
pub(crate) const META_NEXT_EXPERIMENT_ID: &[u8] = b"Mnext_experiment_id";
/// In a replica's cache of a shared log (`--store postgres://...`): the store id of the
/// log it copies. Not derived from the log, so never compared by `check`.
pub(crate) const META_SHARED_LOG: &[u8] = b"Mshared_log";

pub(crate) fn log(seq: u64) -> [u8; 9] {
    let mut k = [LOG; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn seq_of_log_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub(crate) fn experiment(id: u64) -> Vec<u8> {
    let mut k = vec![EXPERIMENT];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn experiment_name(name: &str) -> Vec<u8> {
    let mut k = vec![EXPERIMENT_NAME];
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn run(run_id: &str) -> Vec<u8> {
    let mut k = vec![RUN];
    k.extend_from_slice(run_id.as_bytes());
    k
}

pub(crate) fn experiment_runs(experiment_id: u64) -> Vec<u8> {
    let mut k = vec![EXPERIMENT_RUN];
    k.extend_from_slice(&experiment_id.to_be_bytes());
    k
}

pub(crate) fn experiment_run(experiment_id: u64, run_id: &str) -> Vec<u8> {
    let mut k = experiment_runs(experiment_id);
    k.extend_from_slice(run_id.as_bytes());
    k
}

/// `prefix | owner | 0`: the prefix under which one run's members of a relation sit.
/// Run ids never contain a NUL byte (they are generated hex), so the separator is exact.
pub(crate) fn members(table: u8, owner: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(owner.len() + 2);
    k.push(table);
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    k
}

pub(crate) fn member(table: u8, owner: &str, member: &str) -> Vec<u8> {
    let mut k = members(table, owner);
    k.extend_from_slice(member.as_bytes());
    k
}

/// The part of a `members` key after its prefix.
pub(crate) fn member_of(key: &[u8], prefix_len: usize) -> String {
    String::from_utf8_lossy(&key[prefix_len..]).into_owned()
}

/// `H | run | 0 | key | 0`: all chunks of one metric of one run. Metric keys are
/// validated and never contain NUL.
pub(crate) fn history(run_id: &str, key: &str) -> Vec<u8> {
    let mut k = members(HISTORY, run_id);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k
}

pub(crate) fn history_chunk(run_id: &str, key: &str, seq: u64) -> Vec<u8> {
    let mut k = history(run_id, key);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn runs_by_start(experiment_id: u64) -> Vec<u8> {
    let mut k = vec![RUN_BY_START];
    k.extend_from_slice(&experiment_id.to_be_bytes());
    k
}

/// The first key after every `runs_by_start(experiment_id)` key: the next experiment's
/// prefix (complemented start times begin with 0xff bytes, so no suffix bound will do).
pub(crate) fn runs_by_start_end(experiment_id: u64) -> Vec<u8> {
    match experiment_id.checked_add(1) {
        Some(next) => runs_by_start(next),
        None => vec![RUN_BY_START + 1],
    }
}

pub(crate) fn run_by_start(experiment_id: u64, start_time: i64, run_id: &str) -> Vec<u8> {
    let mut k = runs_by_start(experiment_id);
    // Start times are validated nonnegative; the complement orders newest first.
    k.extend_from_slice(&(!start_time.cast_unsigned()).to_be_bytes());
    k.extend_from_slice(run_id.as_bytes());
    k
}

/// `P | experiment | key | 0 | value | 0`: the runs whose param `key` is `value`. A value
/// holding a NUL can make this prefix match other values; callers re-check every run.
pub(crate) fn param_value(experiment_id: u64, key: &str, value: &str) -> Vec<u8> {
    let mut k = vec![PARAM_VALUE];
    k.extend_from_slice(&experiment_id.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// `Q | experiment | key | 0`: every run of the experiment with a latest `key`.
pub(crate) fn metric_values(experiment_id: u64, key: &str) -> Vec<u8> {
    let mut k = vec![METRIC_VALUE];
    k.extend_from_slice(&experiment_id.to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k
}

/// An f64 as 8 bytes that sort like the numbers (for non-NaN values).
pub(crate) fn sortable_f64(v: f64) -> [u8; 8] {
    let bits = v.to_bits();
    let flipped = if bits >> 63 == 1 {
        !bits
    } else {
        bits ^ (1 << 63)
    };
    flipped.to_be_bytes()
}

/// A run's latest value of a metric, in the order search sorts it: NaN after every
/// number, and ±infinity where MLflow has it, at ±`f64::MAX`.
pub(crate) fn metric_value(experiment_id: u64, key: &str, value: f64, run_id: &str) -> Vec<u8> {
    let mut k = metric_values(experiment_id, key);
    if value.is_nan() {
        k.push(1);
        k.extend_from_slice(&[0; 8]);
    } else {
        k.push(0);
        k.extend_from_slice(&sortable_f64(crate::domain::mlflow_stored(value)));
    }
    k.extend_from_slice(run_id.as_bytes());
    k
}

pub(crate) fn experiment_dataset(experiment_id: u64, name: &str, digest: &str) -> Vec<u8> {
    let mut k = vec![EXPERIMENT_DATASET];
    k.extend_from_slice(&experiment_id.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(digest.as_bytes());
    k
}

pub(crate) fn logged_model(model_id: &str) -> Vec<u8> {
    let mut k = vec![LOGGED_MODEL];
    k.extend_from_slice(model_id.as_bytes());
    k
}

pub(crate) fn runs_by_name(experiment_id: u64) -> Vec<u8> {
    let mut k = vec![RUN_BY_NAME];
    k.extend_from_slice(&experiment_id.to_be_bytes());
    k
}

pub(crate) fn run_by_name(experiment_id: u64, name: &str, run_id: &str) -> Vec<u8> {
    let mut k = runs_named(experiment_id, name);
    k.extend_from_slice(run_id.as_bytes());
    k
}

/// The prefix of the name index keys of the runs of an experiment named exactly `name`
/// (the length comes first, so no other name's keys begin with it).
pub(crate) fn runs_named(experiment_id: u64, name: &str) -> Vec<u8> {
    let mut k = runs_by_name(experiment_id);
    let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// The (name, run id) of a `run_by_name` key, as bytes of the key.
pub(crate) fn name_and_run(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = key.get(9..)?;
    let len = usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
    Some((rest.get(4..4 + len)?, rest.get(4 + len..)?))
}

pub(crate) fn user(name: &str) -> Vec<u8> {
    let mut k = vec![USER];
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn token(token_id: &str) -> Vec<u8> {
    let mut k = vec![TOKEN];
    k.extend_from_slice(token_id.as_bytes());
    k
}

pub(crate) fn grant(experiment_id: u64, name: &str) -> Vec<u8> {
    let mut k = vec![GRANT];
    k.extend_from_slice(&experiment_id.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}
