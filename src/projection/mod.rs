//! Projections: the state derived from the event log. `apply` is the one function that
//! turns an event into writes; the committer calls it for new events and `rebuild`
//! calls it for the whole log, so live state and rebuilt state cannot drift apart.
//! It must stay a pure function of the event and the state before it.
//!
//! What is projected: experiments by id and by name, runs (info, params, tags, latest
//! metric per key, parent, root and depth), the runs of each experiment, the hierarchy
//! (children by parent, every run of a tree by root) and metric history chunks.

pub mod access;
pub mod history;
pub mod records;

use prost::Message;

pub use records::{
    ExperimentRecord, LatestMetric, LoggedModelRecord, ModelMetricRecord, RunRecord,
};

use crate::db::keys;
use crate::db::kv::{Kv, Pending};
use crate::domain::{
    Error, RunStatus, TAG_PARENT_RUN_ID, TAG_ROOT_RUN_ID, TAG_RUN_NAME, validation,
};
use crate::pb::{self, event::Payload};

/// Bump when the projected layout changes: a store whose projections carry another
/// version is rebuilt from its log when it is opened.
pub(crate) const PROJECTION_VERSION: u64 = 7;

pub(crate) fn load_experiment(kv: &impl Kv, id: u64) -> Result<Option<ExperimentRecord>, Error> {
    kv.get(&keys::experiment(id))?
        .map(|b| ExperimentRecord::decode(b.as_slice()).map_err(Error::from))
        .transpose()
}

pub(crate) fn load_run(kv: &impl Kv, run_id: &str) -> Result<Option<RunRecord>, Error> {
    kv.get(&keys::run(run_id))?
        .map(|b| RunRecord::decode(b.as_slice()).map_err(Error::from))
        .transpose()
}

pub(crate) fn experiment_not_found(id: &str) -> Error {
    Error::NotFound(format!("No Experiment with id={id} exists"))
}

/// An experiment named by a client; NotFound with MLflow's message if there is none.
pub(crate) fn find_experiment(kv: &impl Kv, id: &str) -> Result<ExperimentRecord, Error> {
    let n = validation::experiment_id(id)?;
    load_experiment(kv, n)?.ok_or_else(|| experiment_not_found(id))
}

/// An experiment that may be written to: it exists and is not deleted.
pub(crate) fn active_experiment(kv: &impl Kv, id: &str) -> Result<ExperimentRecord, Error> {
    let e = find_experiment(kv, id)?;
    if e.deleted {
        return Err(Error::FailedPrecondition(format!(
            "The experiment {id} must be in the 'active' state. Current state is deleted."
        )));
    }
    Ok(e)
}

/// A run named by a client; NotFound with MLflow's message if there is none.
pub(crate) fn find_run(kv: &impl Kv, run_id: &str) -> Result<RunRecord, Error> {
    validation::require("run_id", run_id)?;
    load_run(kv, run_id)?.ok_or_else(|| Error::NotFound(format!("Run with id={run_id} not found")))
}

/// A run that may be written to: it exists and is not deleted.
pub(crate) fn active_run(kv: &impl Kv, run_id: &str) -> Result<RunRecord, Error> {
    let r = find_run(kv, run_id)?;
    if r.deleted {
        return Err(Error::FailedPrecondition(format!(
            "The run {run_id} must be in the 'active' state. Current state is deleted."
        )));
    }
    Ok(r)
}

/// The experiment's record of a dataset (the first version logged), if any.
pub(crate) fn load_experiment_dataset(
    kv: &impl Kv,
    experiment_id: u64,
    name: &str,
    digest: &str,
) -> Result<Option<pb::Dataset>, Error> {
    kv.get(&keys::experiment_dataset(experiment_id, name, digest))?
        .map(|b| pb::Dataset::decode(b.as_slice()).map_err(Error::from))
        .transpose()
}

pub(crate) fn load_logged_model(
    kv: &impl Kv,
    model_id: &str,
) -> Result<Option<LoggedModelRecord>, Error> {
    kv.get(&keys::logged_model(model_id))?
        .map(|b| LoggedModelRecord::decode(b.as_slice()).map_err(Error::from))
        .transpose()
}

fn logged_model(w: &Pending, model_id: &str) -> Result<LoggedModelRecord, Error> {
    load_logged_model(w, model_id)?
        .ok_or_else(|| Error::Corrupt(format!("event names unknown logged model {model_id}")))
}

fn save_logged_model(w: &mut Pending, m: &LoggedModelRecord) {
    w.put(keys::logged_model(&m.model_id), m.encode_to_vec());
}

pub(crate) fn experiment_id_by_name(kv: &impl Kv, name: &str) -> Result<Option<u64>, Error> {
    match kv.get(&keys::experiment_name(name))? {
        Some(b) => Ok(Some(u64::from_be_bytes(b.as_slice().try_into().map_err(
            |_| Error::Corrupt(format!("experiment name index entry for {name:?}")),
        )?))),
        None => Ok(None),
    }
}

pub(crate) fn next_experiment_id(kv: &impl Kv) -> Result<u64, Error> {
    match kv.get(keys::META_NEXT_EXPERIMENT_ID)? {
        Some(b) => {
            Ok(u64::from_be_bytes(b.as_slice().try_into().map_err(
                |_| Error::Corrupt("next experiment id".into()),
            )?))
        }
        None => Ok(0),
    }
}

/// Ids of the runs that are direct children of `run_id`.
pub(crate) fn children(kv: &impl Kv, run_id: &str) -> Result<Vec<String>, Error> {
    let prefix = keys::members(keys::CHILD, run_id);
    Ok(kv
        .keys_with_prefix(&prefix)?
        .iter()
        .map(|k| keys::member_of(k, prefix.len()))
        .collect())
}

/// Ids of the runs of an experiment.
pub(crate) fn experiment_run_ids(kv: &impl Kv, experiment_id: u64) -> Result<Vec<String>, Error> {
    let prefix = keys::experiment_runs(experiment_id);
    Ok(kv
        .keys_with_prefix(&prefix)?
        .iter()
        .map(|k| keys::member_of(k, prefix.len()))
        .collect())
}

fn parse_experiment_id(id: &str) -> Result<u64, Error> {
    id.parse()
        .map_err(|_| Error::Corrupt(format!("event names experiment id {id:?}")))
}

fn experiment(w: &Pending, id: &str) -> Result<ExperimentRecord, Error> {
    let id = parse_experiment_id(id)?;
    load_experiment(w, id)?
        .ok_or_else(|| Error::Corrupt(format!("event names unknown experiment {id}")))
}

fn run(w: &Pending, run_id: &str) -> Result<RunRecord, Error> {
    load_run(w, run_id)?.ok_or_else(|| Error::Corrupt(format!("event names unknown run {run_id}")))
}

fn save_experiment(w: &mut Pending, e: &ExperimentRecord) {
    w.put(keys::experiment(e.id), e.encode_to_vec());
}

fn save_run(w: &mut Pending, r: &RunRecord) {
    w.put(keys::run(&r.run_id), r.encode_to_vec());
}

/// Applies one committed event to the projections.
pub(crate) fn apply(ev: &pb::Event, w: &mut Pending) -> Result<(), Error> {
    let now = ev.timestamp;
    let payload = ev
        .payload
        .as_ref()
        .ok_or_else(|| Error::Corrupt(format!("event {} has no payload", ev.seq)))?;
    match payload {
        Payload::ExperimentCreated(e) => {
            let id = parse_experiment_id(&e.experiment_id)?;
            let rec = ExperimentRecord {
                id,
                name: e.name.clone(),
                artifact_location: e.artifact_location.clone(),
                deleted: false,
                creation_time: if e.creation_time > 0 {
                    e.creation_time
                } else {
                    now
                },
                last_update_time: if e.last_update_time > 0 {
                    e.last_update_time
                } else {
                    now
                },
                tags: e
                    .tags
                    .iter()
                    .map(|t| (t.key.clone(), t.value.clone()))
                    .collect(),
            };
            save_experiment(w, &rec);
            w.put(keys::experiment_name(&e.name), id.to_be_bytes().to_vec());
            let next = next_experiment_id(w)?.max(id + 1);
            w.put(keys::META_NEXT_EXPERIMENT_ID, next.to_be_bytes().to_vec());
        }
        Payload::ExperimentRenamed(e) => {
            let mut rec = experiment(w, &e.experiment_id)?;
            w.remove(keys::experiment_name(&rec.name));
            w.put(
                keys::experiment_name(&e.new_name),
                rec.id.to_be_bytes().to_vec(),
            );
            rec.name = e.new_name.clone();
            rec.last_update_time = now;
            save_experiment(w, &rec);
        }
        Payload::ExperimentDeleted(e) => set_experiment_deleted(w, &e.experiment_id, true, now)?,
        Payload::ExperimentRestored(e) => set_experiment_deleted(w, &e.experiment_id, false, now)?,
        Payload::ExperimentTagSet(e) => {
            let mut rec = experiment(w, &e.experiment_id)?;
            rec.tags.insert(e.key.clone(), e.value.clone());
            rec.last_update_time = now;
            save_experiment(w, &rec);
        }
        Payload::ExperimentTagDeleted(e) => {
            let mut rec = experiment(w, &e.experiment_id)?;
            rec.tags.remove(&e.key);
            rec.last_update_time = now;
            save_experiment(w, &rec);
        }
        Payload::RunCreated(e) => apply_run_created(w, e)?,
        Payload::RunUpdated(e) => {
            let mut rec = run(w, &e.run_id)?;
            if let Some(status) = e.status {
                rec.status = status;
            }
            if let Some(end_time) = e.end_time {
                rec.end_time = Some(end_time);
            }
            if let Some(name) = &e.run_name {
                rename_run(w, &rec, name);
                rec.run_name = name.clone();
                rec.tags.insert(TAG_RUN_NAME.to_string(), name.clone());
            }
            save_run(w, &rec);
        }
        Payload::RunDeleted(e) => {
            let mut rec = run(w, &e.run_id)?;
            rec.deleted = true;
            save_run(w, &rec);
        }
        Payload::RunRestored(e) => {
            let mut rec = run(w, &e.run_id)?;
            rec.deleted = false;
            save_run(w, &rec);
        }
        Payload::ParamLogged(e) => {
            let mut rec = run(w, &e.run_id)?;
            for p in &e.params {
                rec.params.insert(p.key.clone(), p.value.clone());
                let mut k = keys::param_value(rec.experiment_id, &p.key, &p.value);
                k.extend_from_slice(rec.run_id.as_bytes());
                w.put(k, vec![]);
            }
            save_run(w, &rec);
        }
        Payload::TagSet(e) => {
            let mut rec = run(w, &e.run_id)?;
            for t in &e.tags {
                if t.key == TAG_RUN_NAME {
                    rename_run(w, &rec, &t.value);
                    rec.run_name = t.value.clone();
                }
                if t.key == TAG_PARENT_RUN_ID {
                    if let Some(old) = parent_key(&rec) {
                        w.remove(keys::member(keys::CHILD, old, &rec.run_id));
                    }
                    if !t.value.is_empty() {
                        w.put(keys::member(keys::CHILD, &t.value, &rec.run_id), vec![]);
                    }
                }
                rec.tags.insert(t.key.clone(), t.value.clone());
            }
            save_run(w, &rec);
        }
        Payload::TagDeleted(e) => {
            let mut rec = run(w, &e.run_id)?;
            if e.key == TAG_PARENT_RUN_ID
                && let Some(old) = parent_key(&rec)
            {
                w.remove(keys::member(keys::CHILD, old, &rec.run_id));
            }
            rec.tags.remove(&e.key);
            if e.key == TAG_RUN_NAME {
                // Name filters read the tag; without it the run leaves the name index
                // (and keeps its name).
                w.remove(keys::run_by_name(
                    rec.experiment_id,
                    &rec.run_name,
                    &rec.run_id,
                ));
            }
            save_run(w, &rec);
        }
        Payload::MetricsLogged(e) => {
            let mut rec = run(w, &e.run_id)?;
            for s in &e.series {
                let n = s.values.len();
                if s.timestamps.len() != n || s.steps.len() != n {
                    return Err(Error::Corrupt(format!(
                        "event {} has ragged metric columns",
                        ev.seq
                    )));
                }
                w.put(
                    keys::history_chunk(&e.run_id, &s.key, ev.seq),
                    history::encode(&s.timestamps, &s.steps, &s.values),
                );
                let before = rec.latest_metrics.get(&s.key).map(|l| l.value);
                let mut latest = rec.latest_metrics.get(&s.key).cloned();
                for i in 0..n {
                    let (t, st, v) = (s.timestamps[i], s.steps[i], s.values[i]);
                    let point = history::Point {
                        timestamp: t,
                        step: st,
                        value: v,
                    };
                    let last = match &latest {
                        Some(l) if l.last().order(&point).is_ge() => l.last(),
                        _ => point,
                    };
                    if latest.as_ref().is_none_or(|l| l.is_before(st, t, v)) {
                        latest = Some(LatestMetric {
                            value: v,
                            timestamp: t,
                            step: st,
                            ..LatestMetric::default()
                        });
                    }
                    if let Some(l) = latest.as_mut() {
                        l.last_timestamp = last.timestamp;
                        l.last_step = last.step;
                        l.last_value = last.value;
                    }
                }
                if let Some(l) = latest {
                    let changed = before.is_none_or(|b| b.to_bits() != l.value.to_bits());
                    if changed {
                        if let Some(b) = before {
                            w.remove(keys::metric_value(
                                rec.experiment_id,
                                &s.key,
                                b,
                                &rec.run_id,
                            ));
                        }
                        w.put(
                            keys::metric_value(rec.experiment_id, &s.key, l.value, &rec.run_id),
                            vec![],
                        );
                    }
                    rec.latest_metrics.insert(s.key.clone(), l);
                }
            }
            save_run(w, &rec);
        }
        Payload::RunReparented(e) => apply_reparented(w, &e.run_id, &e.new_parent_run_id)?,
        Payload::InputsLogged(e) => {
            let mut rec = run(w, &e.run_id)?;
            for ds in e.datasets.iter().filter_map(|d| d.dataset.as_ref()) {
                let key = keys::experiment_dataset(rec.experiment_id, &ds.name, &ds.digest);
                if w.get(&key)?.is_none() {
                    w.put(key, ds.encode_to_vec());
                }
            }
            rec.dataset_inputs.extend(e.datasets.iter().cloned());
            rec.model_inputs
                .extend(e.models.iter().map(|m| m.model_id.clone()));
            save_run(w, &rec);
        }
        Payload::OutputsLogged(e) => {
            let mut rec = run(w, &e.run_id)?;
            rec.model_outputs.extend(e.models.iter().cloned());
            save_run(w, &rec);
        }
        // Artifact files live in the artifact store; the log records that they changed.
        Payload::ArtifactWritten(_) | Payload::ArtifactDeleted(_) => {}
        Payload::LoggedModelCreated(e) => {
            let rec = LoggedModelRecord {
                model_id: e.model_id.clone(),
                experiment_id: parse_experiment_id(&e.experiment_id)?,
                name: e.name.clone(),
                model_type: e.model_type.clone(),
                source_run_id: e.source_run_id.clone(),
                status: 1,
                status_message: String::new(),
                creation_time: now,
                last_updated_time: now,
                artifact_uri: e.artifact_uri.clone(),
                creator_id: e.creator_id.clone(),
                params: e
                    .params
                    .iter()
                    .map(|p| (p.key.clone(), p.value.clone()))
                    .collect(),
                tags: e
                    .tags
                    .iter()
                    .map(|t| (t.key.clone(), t.value.clone()))
                    .collect(),
                deleted: false,
                metrics: vec![],
            };
            save_logged_model(w, &rec);
        }
        Payload::LoggedModelFinalized(e) => {
            let mut rec = logged_model(w, &e.model_id)?;
            rec.status = e.status;
            rec.status_message = e.status_message.clone();
            rec.last_updated_time = now;
            save_logged_model(w, &rec);
        }
        Payload::LoggedModelTagsSet(e) => {
            let mut rec = logged_model(w, &e.model_id)?;
            rec.tags
                .extend(e.tags.iter().map(|t| (t.key.clone(), t.value.clone())));
            rec.last_updated_time = now;
            save_logged_model(w, &rec);
        }
        Payload::LoggedModelTagDeleted(e) => {
            let mut rec = logged_model(w, &e.model_id)?;
            rec.tags.remove(&e.key);
            rec.last_updated_time = now;
            save_logged_model(w, &rec);
        }
        Payload::LoggedModelParamsLogged(e) => {
            let mut rec = logged_model(w, &e.model_id)?;
            rec.params
                .extend(e.params.iter().map(|p| (p.key.clone(), p.value.clone())));
            rec.last_updated_time = now;
            save_logged_model(w, &rec);
        }
        Payload::LoggedModelMetricsLogged(e) => {
            let mut rec = logged_model(w, &e.model_id)?;
            rec.metrics
                .extend(e.metrics.iter().map(|m| records::ModelMetricRecord {
                    metric: Some(m.clone()),
                    run_id: e.run_id.clone(),
                }));
            save_logged_model(w, &rec);
        }
        Payload::LoggedModelDeleted(e) => {
            let mut rec = logged_model(w, &e.model_id)?;
            rec.deleted = true;
            rec.last_updated_time = now;
            save_logged_model(w, &rec);
        }
        Payload::UserCreated(_)
        | Payload::UserPasswordChanged(_)
        | Payload::UserAdminSet(_)
        | Payload::UserDeleted(_)
        | Payload::TokenIssued(_)
        | Payload::TokenRevoked(_)
        | Payload::ExperimentPermissionSet(_)
        | Payload::ExperimentPermissionDeleted(_) => {
            access::apply(payload, ev.seq, now, w)?;
        }
    }
    Ok(())
}

/// The key a run is filed under in the child index: its `mlflow.parentRunId` tag, which
/// is its parent when that run exists, and otherwise the id the client gave (so that a
/// search on the tag finds it), or none.
fn parent_key(rec: &RunRecord) -> Option<&str> {
    rec.tags
        .get(TAG_PARENT_RUN_ID)
        .map(String::as_str)
        .or(Some(rec.parent_run_id.as_str()))
        .filter(|p| !p.is_empty())
}

/// Moves a run's entry in the name index.
fn rename_run(w: &mut Pending, rec: &RunRecord, new_name: &str) {
    w.remove(keys::run_by_name(
        rec.experiment_id,
        &rec.run_name,
        &rec.run_id,
    ));
    w.put(
        keys::run_by_name(rec.experiment_id, new_name, &rec.run_id),
        vec![],
    );
}

fn set_experiment_deleted(w: &mut Pending, id: &str, deleted: bool, now: i64) -> Result<(), Error> {
    let mut rec = experiment(w, id)?;
    rec.deleted = deleted;
    rec.last_update_time = now;
    save_experiment(w, &rec);
    // MLflow marks every run of a deleted experiment deleted, and a restore brings
    // them all back.
    for run_id in experiment_run_ids(w, rec.id)? {
        let mut r = run(w, &run_id)?;
        if r.deleted != deleted {
            r.deleted = deleted;
            save_run(w, &r);
        }
    }
    Ok(())
}

fn apply_run_created(w: &mut Pending, e: &pb::RunCreated) -> Result<(), Error> {
    let experiment_id = parse_experiment_id(&e.experiment_id)?;
    let (root, depth) = if e.parent_run_id.is_empty() {
        // A parent tag naming a run that does not exist files the run under that id.
        if let Some(t) = e
            .tags
            .iter()
            .find(|t| t.key == TAG_PARENT_RUN_ID && !t.value.is_empty())
        {
            w.put(keys::member(keys::CHILD, &t.value, &e.run_id), vec![]);
        }
        (e.run_id.clone(), 0)
    } else {
        let parent = run(w, &e.parent_run_id)?;
        w.put(keys::member(keys::CHILD, &parent.run_id, &e.run_id), vec![]);
        (parent.root_run_id, parent.depth + 1)
    };
    let mut tags: std::collections::BTreeMap<String, String> = e
        .tags
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect();
    tags.insert(TAG_ROOT_RUN_ID.to_string(), root.clone());
    let rec = RunRecord {
        run_id: e.run_id.clone(),
        experiment_id,
        run_name: e.run_name.clone(),
        user_id: e.user_id.clone(),
        status: RunStatus::Running as i32,
        start_time: e.start_time,
        end_time: None,
        artifact_uri: e.artifact_uri.clone(),
        deleted: false,
        parent_run_id: e.parent_run_id.clone(),
        root_run_id: root.clone(),
        depth,
        params: Default::default(),
        tags,
        latest_metrics: Default::default(),
        dataset_inputs: vec![],
        model_inputs: vec![],
        model_outputs: vec![],
    };
    save_run(w, &rec);
    w.put(keys::experiment_run(experiment_id, &e.run_id), vec![]);
    w.put(
        keys::run_by_start(experiment_id, e.start_time, &e.run_id),
        vec![],
    );
    w.put(
        keys::run_by_name(experiment_id, &e.run_name, &e.run_id),
        vec![],
    );
    w.put(keys::member(keys::DESCENDANT, &root, &e.run_id), vec![]);
    Ok(())
}

/// Moves a run and its whole subtree under a new parent (or makes it a root), keeping
/// the child index, the root index, every moved run's root and depth, and their
/// `mlflow.rootRunId` tags right.
fn apply_reparented(w: &mut Pending, run_id: &str, new_parent: &str) -> Result<(), Error> {
    let mut moved = run(w, run_id)?;
    if let Some(old) = parent_key(&moved) {
        w.remove(keys::member(keys::CHILD, old, run_id));
    }
    let (new_root, new_depth) = if new_parent.is_empty() {
        (run_id.to_string(), 0)
    } else {
        let parent = run(w, new_parent)?;
        w.put(keys::member(keys::CHILD, new_parent, run_id), vec![]);
        (parent.root_run_id, parent.depth + 1)
    };
    moved.parent_run_id = new_parent.to_string();
    if moved.tags.get(TAG_PARENT_RUN_ID).map(String::as_str) != Some(new_parent) {
        if new_parent.is_empty() {
            moved.tags.remove(TAG_PARENT_RUN_ID);
        } else {
            moved
                .tags
                .insert(TAG_PARENT_RUN_ID.to_string(), new_parent.to_string());
        }
    }
    let mut queue = std::collections::VecDeque::from([(moved, new_depth)]);
    while let Some((mut r, depth)) = queue.pop_front() {
        for child in children(w, &r.run_id)? {
            queue.push_back((run(w, &child)?, depth + 1));
        }
        w.remove(keys::member(keys::DESCENDANT, &r.root_run_id, &r.run_id));
        w.put(keys::member(keys::DESCENDANT, &new_root, &r.run_id), vec![]);
        r.root_run_id = new_root.clone();
        r.depth = depth;
        r.tags.insert(TAG_ROOT_RUN_ID.to_string(), new_root.clone());
        save_run(w, &r);
    }
    Ok(())
}
