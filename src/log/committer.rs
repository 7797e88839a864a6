//! The committer: the one writer. Requests arrive over a bounded channel; the committer
//! takes whatever is waiting (group commit), validates each command against the current
//! state including the commands before it in the group, turns it into events with the
//! next sequence numbers, projects them, writes log and projections with one atomic
//! `apply_batch`, flushes once, and only then answers every request in the group. A
//! command that fails validation writes nothing and does not disturb its neighbours.

use std::collections::HashMap;

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::db::keys;
use crate::db::kv::{Kv, Pending};
use crate::domain::{
    BatchOrigin, Command, DEFAULT_EXPERIMENT_ID, Error, KeyValue, MetricPoint, TAG_PARENT_RUN_ID,
    TAG_ROOT_RUN_ID, TAG_RUN_NAME, TAG_USER, random_run_name, validation,
};
use crate::pb::{self, event::Payload};
use crate::projection::{self, ExperimentRecord, RunRecord};
use crate::stream::Publisher;

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
        command: Command,
        reply: oneshot::Sender<Result<Outcome, Error>>,
    },
    /// Commit what came before, flush, answer, and stop.
    Close(oneshot::Sender<()>),
}

/// What to hand back once a command's events are projected.
pub(crate) enum Answer {
    Experiment(u64),
    Run(String),
    ChildRun(String, bool),
    LoggedModel(String),
    Done,
}

pub(crate) struct Committer {
    db: sled::Db,
    tree: sled::Tree,
    next_seq: u64,
    /// Where committed events go once they are on disk.
    publisher: Publisher,
    /// Set after a failed write or flush: the on-disk state is then uncertain, so every
    /// later write is refused until the server is restarted (which replays the log).
    failure: Option<String>,
}

type Reply = oneshot::Sender<Result<Outcome, Error>>;

impl Committer {
    pub(crate) fn new(db: sled::Db, tree: sled::Tree, publisher: Publisher) -> Result<Self, Error> {
        let next_seq = crate::log::last_seq(&tree)? + 1;
        Ok(Self {
            db,
            tree,
            next_seq,
            publisher,
            failure: None,
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
                    Request::Write { command, reply } => group.push((command, reply)),
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

    /// Validates, commits and answers one group of commands.
    pub(crate) fn commit_group(&mut self, group: Vec<(Command, Reply)>) {
        if let Some(why) = &self.failure {
            for (_, reply) in group {
                let _ = reply.send(Err(Error::Unavailable(why.clone())));
            }
            return;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let first_seq = self.next_seq;
        let tree = self.tree.clone();
        let mut pending = Pending::new(&tree);
        let mut answers: Vec<(Reply, Result<Outcome, Error>)> = Vec::with_capacity(group.len());
        let mut events = Vec::new();
        for (command, reply) in group {
            let result = self.decide_and_project(&command, &mut pending, now, &mut events);
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
            let written = self
                .tree
                .apply_batch(pending.into_batch())
                .and_then(|()| self.db.flush().map(|_| ()));
            if let Err(e) = written {
                let why = format!("storage failure, restart the server: {e}");
                tracing::error!(error = %e, "commit failed; refusing further writes");
                self.failure = Some(why.clone());
                self.next_seq = first_seq;
                for (reply, _) in answers {
                    let _ = reply.send(Err(Error::Unavailable(why.clone())));
                }
                return;
            }
        }
        // Watchers hear of the events before the writers: both after the flush.
        self.publisher.publish(events);
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
    }

    fn decide_and_project(
        &mut self,
        command: &Command,
        pending: &mut Pending,
        now: i64,
        events: &mut Vec<pb::Event>,
    ) -> Result<Outcome, Error> {
        let (payloads, answer) = decide(command, pending, now)?;
        for payload in payloads {
            let ev = pb::Event {
                seq: self.next_seq,
                timestamp: now,
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

fn experiment_not_found(id: &str) -> Error {
    Error::NotFound(format!("No Experiment with id={id} exists"))
}

/// Loads an experiment named by a client.
pub(crate) fn find_experiment(kv: &impl Kv, id: &str) -> Result<ExperimentRecord, Error> {
    let n = validation::experiment_id(id)?;
    projection::load_experiment(kv, n)?.ok_or_else(|| experiment_not_found(id))
}

fn active_experiment(kv: &impl Kv, id: &str) -> Result<ExperimentRecord, Error> {
    let e = find_experiment(kv, id)?;
    if e.deleted {
        return Err(Error::FailedPrecondition(format!(
            "The experiment {id} must be in the 'active' state. Current state is deleted."
        )));
    }
    Ok(e)
}

pub(crate) fn find_run(kv: &impl Kv, run_id: &str) -> Result<RunRecord, Error> {
    validation::require("run_id", run_id)?;
    projection::load_run(kv, run_id)?
        .ok_or_else(|| Error::NotFound(format!("Run with id={run_id} not found")))
}

pub(crate) fn active_run(kv: &impl Kv, run_id: &str) -> Result<RunRecord, Error> {
    let r = find_run(kv, run_id)?;
    if r.deleted {
        return Err(Error::FailedPrecondition(format!(
            "The run {run_id} must be in the 'active' state. Current state is deleted."
        )));
    }
    Ok(r)
}

/// Checks that `parent_id` may become the parent of `run` (absent for a new run):
/// it exists, is active, is in the same experiment, and is not `run` or below it.
fn check_parent(
    kv: &impl Kv,
    run_id: Option<&str>,
    experiment_id: u64,
    parent_id: &str,
) -> Result<RunRecord, Error> {
    if run_id == Some(parent_id) {
        return Err(Error::invalid(format!(
            "Run {parent_id} cannot be its own parent"
        )));
    }
    let parent = projection::load_run(kv, parent_id)?
        .ok_or_else(|| Error::NotFound(format!("Parent run with id={parent_id} not found")))?;
    if parent.experiment_id != experiment_id {
        return Err(Error::invalid(format!(
            "Parent run {parent_id} is in experiment {}, not {experiment_id}: a run and its parent must be in the same experiment",
            parent.experiment_id
        )));
    }
    if parent.deleted {
        return Err(Error::FailedPrecondition(format!(
            "Parent run {parent_id} is deleted"
        )));
    }
    if let Some(run_id) = run_id {
        // Walk up from the new parent; meeting the run itself means a cycle. The walk
        // is bounded by the parent's depth, so damaged data cannot loop it.
        let mut cursor = parent.parent_run_id.clone();
        for _ in 0..=parent.depth {
            if cursor.is_empty() {
                break;
            }
            if cursor == run_id {
                return Err(Error::invalid(format!(
                    "Cannot make {parent_id} the parent of {run_id}: {parent_id} is a descendant of {run_id}, so this would make a cycle"
                )));
            }
            cursor = projection::load_run(kv, &cursor)?
                .map(|r| r.parent_run_id)
                .unwrap_or_default();
        }
    }
    Ok(parent)
}

/// Refuses a client-set `mlflow.rootRunId` that differs from what the server keeps.
fn check_root_tag(value: &str, root: &str) -> Result<(), Error> {
    if value != root {
        return Err(Error::invalid(format!(
            "The tag {TAG_ROOT_RUN_ID} is kept by the server (here '{root}'); it cannot be set to '{value}'"
        )));
    }
    Ok(())
}

/// Validates a command against the state and returns the events it makes.
fn decide(command: &Command, kv: &Pending, now: i64) -> Result<(Vec<Payload>, Answer), Error> {
    let done = |payloads: Vec<Payload>| Ok((payloads, Answer::Done));
    match command {
        Command::LogInputs { .. }
        | Command::LogOutputs { .. }
        | Command::AppendModelHistory { .. }
        | Command::RecordArtifact { .. }
        | Command::CreateLoggedModel { .. }
        | Command::FinalizeLoggedModel { .. }
        | Command::SetLoggedModelTags { .. }
        | Command::DeleteLoggedModelTag { .. }
        | Command::LogLoggedModelParams { .. }
        | Command::DeleteLoggedModel { .. } => super::extras::decide(command, kv),
        Command::CreateExperiment {
            name,
            artifact_location,
            tags,
        } => {
            validation::experiment_name(name)?;
            validation::artifact_location(artifact_location)?;
            for t in tags {
                validation::experiment_tag(t)?;
            }
            if projection::experiment_id_by_name(kv, name)?.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "Experiment(name={name}) already exists."
                )));
            }
            let id = projection::next_experiment_id(kv)?;
            let artifact_location = if artifact_location.is_empty() {
                format!("mlflow-artifacts:/{id}")
            } else {
                artifact_location.clone()
            };
            Ok((
                vec![Payload::ExperimentCreated(pb::ExperimentCreated {
                    experiment_id: id.to_string(),
                    name: name.clone(),
                    artifact_location,
                    tags: tags
                        .iter()
                        .map(|t| pb::ExperimentTag {
                            key: t.key.clone(),
                            value: t.value.clone(),
                        })
                        .collect(),
                })],
                Answer::Experiment(id),
            ))
        }
        Command::RenameExperiment {
            experiment_id,
            new_name,
        } => {
            validation::require("new_name", new_name)?;
            validation::experiment_name(new_name)?;
            let e = find_experiment(kv, experiment_id)?;
            if e.deleted {
                return Err(Error::FailedPrecondition(
                    "Cannot rename a non-active experiment.".into(),
                ));
            }
            if &e.name == new_name {
                return done(vec![]);
            }
            if projection::experiment_id_by_name(kv, new_name)?.is_some() {
                return Err(Error::AlreadyExists(format!(
                    "Experiment(name={new_name}) already exists."
                )));
            }
            done(vec![Payload::ExperimentRenamed(pb::ExperimentRenamed {
                experiment_id: e.id.to_string(),
                new_name: new_name.clone(),
            })])
        }
        Command::DeleteExperiment { experiment_id } => {
            let e = find_experiment(kv, experiment_id)?;
            if e.deleted {
                return Err(experiment_not_found(experiment_id));
            }
            done(vec![Payload::ExperimentDeleted(pb::ExperimentDeleted {
                experiment_id: e.id.to_string(),
            })])
        }
        Command::RestoreExperiment { experiment_id } => {
            let e = find_experiment(kv, experiment_id)?;
            if !e.deleted {
                return Err(experiment_not_found(experiment_id));
            }
            done(vec![Payload::ExperimentRestored(pb::ExperimentRestored {
                experiment_id: e.id.to_string(),
            })])
        }
        Command::SetExperimentTag {
            experiment_id,
            key,
            value,
        } => {
            let e = active_experiment(kv, experiment_id)?;
            validation::experiment_tag(&KeyValue::new(key, value))?;
            done(vec![Payload::ExperimentTagSet(pb::ExperimentTagSet {
                experiment_id: e.id.to_string(),
                key: key.clone(),
                value: value.clone(),
            })])
        }
        Command::DeleteExperimentTag { experiment_id, key } => {
            validation::require("key", key)?;
            let e = active_experiment(kv, experiment_id)?;
            if !e.tags.contains_key(key) {
                return Err(Error::NotFound(format!(
                    "No tag with name: {key} in experiment with id {experiment_id}"
                )));
            }
            done(vec![Payload::ExperimentTagDeleted(
                pb::ExperimentTagDeleted {
                    experiment_id: e.id.to_string(),
                    key: key.clone(),
                },
            )])
        }
        Command::CreateRun {
            experiment_id,
            user_id,
            run_name,
            start_time,
            tags,
        } => decide_create_run(kv, experiment_id, user_id, run_name, *start_time, tags, now),
        Command::UpdateRun {
            run_id,
            status,
            end_time,
            run_name,
        } => {
            let r = active_run(kv, run_id)?;
            if let Some(t) = end_time
                && *t < 0
            {
                return Err(Error::invalid(format!(
                    "Invalid value {t} for parameter 'end_time' supplied: it must be a nonnegative epoch time in milliseconds"
                )));
            }
            let run_name = run_name
                .as_ref()
                .map(|n| validation::truncate(n, validation::MAX_TAG_VAL_LENGTH));
            Ok((
                vec![Payload::RunUpdated(pb::RunUpdated {
                    run_id: r.run_id.clone(),
                    status: status.map(|s| s as i32),
                    end_time: *end_time,
                    run_name,
                })],
                Answer::Run(r.run_id),
            ))
        }
        Command::DeleteRun { run_id, cascade } => {
            done(lifecycle_events(kv, run_id, *cascade, true)?)
        }
        Command::RestoreRun { run_id, cascade } => {
            done(lifecycle_events(kv, run_id, *cascade, false)?)
        }
        Command::GetOrCreateChildRun {
            parent_run_id,
            run_name,
            user_id,
            start_time,
            tags,
        } => {
            validation::require("run_name", run_name)?;
            let parent = active_run(kv, parent_run_id)?;
            for child in projection::children(kv, &parent.run_id)? {
                if let Some(c) = projection::load_run(kv, &child)?
                    && !c.deleted
                    && c.run_name == *run_name
                {
                    return Ok((vec![], Answer::ChildRun(c.run_id, false)));
                }
            }
            let mut tags = tags.clone();
            tags.retain(|t| t.key != TAG_PARENT_RUN_ID);
            tags.push(KeyValue::new(TAG_PARENT_RUN_ID, &parent.run_id));
            let (events, answer) = decide_create_run(
                kv,
                &parent.experiment_id.to_string(),
                user_id,
                run_name,
                *start_time,
                &tags,
                now,
            )?;
            let Answer::Run(id) = answer else {
                return Err(Error::Corrupt("create run answered no run".into()));
            };
            Ok((events, Answer::ChildRun(id, true)))
        }
        Command::LogBatch {
            run_id,
            metrics,
            params,
            tags,
            origin,
        } => {
            decide_log_batch(kv, run_id, metrics, params, tags, *origin).map(|p| (p, Answer::Done))
        }
        Command::DeleteTag { run_id, key } => {
            validation::require("key", key)?;
            let r = active_run(kv, run_id)?;
            if !r.tags.contains_key(key) {
                return Err(Error::NotFound(format!(
                    "No tag with name: {key} in run with id {run_id}"
                )));
            }
            if key == TAG_ROOT_RUN_ID {
                return Err(Error::invalid(format!(
                    "The tag {TAG_ROOT_RUN_ID} is kept by the server and cannot be deleted"
                )));
            }
            let mut events = vec![Payload::TagDeleted(pb::TagDeleted {
                run_id: r.run_id.clone(),
                key: key.clone(),
            })];
            if key == TAG_PARENT_RUN_ID && !r.parent_run_id.is_empty() {
                events.push(Payload::RunReparented(pb::RunReparented {
                    run_id: r.run_id.clone(),
                    old_parent_run_id: r.parent_run_id.clone(),
                    new_parent_run_id: String::new(),
                }));
            }
            done(events)
        }
    }
}

/// `RunDeleted` (or `RunRestored`) for the run, and with `cascade` for every run below
/// it, skipping those already in that state.
fn lifecycle_events(
    kv: &Pending,
    run_id: &str,
    cascade: bool,
    delete: bool,
) -> Result<Vec<Payload>, Error> {
    let top = find_run(kv, run_id)?;
    let mut runs = vec![top];
    if cascade {
        for id in projection::subtree(kv, run_id)?.iter().skip(1) {
            runs.extend(projection::load_run(kv, id)?);
        }
    }
    Ok(runs
        .into_iter()
        .filter(|r| r.deleted != delete)
        .map(|r| {
            if delete {
                Payload::RunDeleted(pb::RunDeleted { run_id: r.run_id })
            } else {
                Payload::RunRestored(pb::RunRestored { run_id: r.run_id })
            }
        })
        .collect())
}

fn decide_create_run(
    kv: &Pending,
    experiment_id: &str,
    user_id: &str,
    run_name: &str,
    start_time: Option<i64>,
    tags: &[KeyValue],
    now: i64,
) -> Result<(Vec<Payload>, Answer), Error> {
    let experiment_id = if experiment_id.is_empty() {
        DEFAULT_EXPERIMENT_ID
    } else {
        experiment_id
    };
    let exp = active_experiment(kv, experiment_id)?;
    // Later tags win over earlier ones with the same key, as in a map.
    let mut tag_map: Vec<KeyValue> = Vec::with_capacity(tags.len() + 1);
    for (i, t) in tags.iter().enumerate() {
        let t = validation::run_tag(&format!("tags[{i}]."), t)?;
        tag_map.retain(|x| x.key != t.key);
        tag_map.push(t);
    }
    let tag = |k: &str| tag_map.iter().find(|t| t.key == k).map(|t| t.value.clone());
    let (name_tag, parent_tag, root_tag, user_tag) = (
        tag(TAG_RUN_NAME),
        tag(TAG_PARENT_RUN_ID),
        tag(TAG_ROOT_RUN_ID),
        tag(TAG_USER),
    );
    let name = match (run_name.is_empty(), name_tag) {
        (false, Some(t)) if t != validation::truncate(run_name, validation::MAX_TAG_VAL_LENGTH) => {
            return Err(Error::invalid(format!(
                "Both 'run_name' argument and '{TAG_RUN_NAME}' tag are specified, but with different values (run_name='{run_name}', {TAG_RUN_NAME}='{t}')."
            )));
        }
        (false, _) => validation::truncate(run_name, validation::MAX_TAG_VAL_LENGTH),
        (true, Some(t)) => t,
        (true, None) => random_run_name(),
    };
    if let Some(t) = start_time
        && t < 0
    {
        return Err(Error::invalid(format!(
            "Invalid value {t} for parameter 'start_time' supplied: it must be a nonnegative epoch time in milliseconds"
        )));
    }
    let parent_run_id = parent_tag.unwrap_or_default();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let root = if parent_run_id.is_empty() {
        run_id.clone()
    } else {
        check_parent(kv, None, exp.id, &parent_run_id)?.root_run_id
    };
    if let Some(v) = root_tag {
        check_root_tag(&v, &root)?;
        tag_map.retain(|t| t.key != TAG_ROOT_RUN_ID);
    }
    tag_map.retain(|t| t.key != TAG_RUN_NAME);
    tag_map.push(KeyValue::new(TAG_RUN_NAME, &name));
    let user_id = if user_id.is_empty() {
        user_tag.unwrap_or_default()
    } else {
        user_id.to_string()
    };
    let artifact_uri = format!(
        "{}/{run_id}/artifacts",
        exp.artifact_location.trim_end_matches('/')
    );
    Ok((
        vec![Payload::RunCreated(pb::RunCreated {
            run_id: run_id.clone(),
            experiment_id: exp.id.to_string(),
            user_id,
            run_name: name,
            start_time: start_time.unwrap_or(now),
            artifact_uri,
            tags: tag_map
                .into_iter()
                .map(|t| pb::RunTag {
                    key: t.key,
                    value: t.value,
                })
                .collect(),
            parent_run_id,
        })],
        Answer::Run(run_id),
    ))
}

fn decide_log_batch(
    kv: &Pending,
    run_id: &str,
    metrics: &[MetricPoint],
    params: &[KeyValue],
    tags: &[KeyValue],
    origin: BatchOrigin,
) -> Result<Vec<Payload>, Error> {
    validation::require("run_id", run_id)?;
    validation::batch_limits(metrics.len(), params.len(), tags.len())?;
    let run = active_run(kv, run_id)?;
    let prefix = |entity: &str, i: usize| match origin {
        BatchOrigin::Batch => format!("{entity}[{i}]."),
        BatchOrigin::Single => String::new(),
    };

    let mut series: Vec<pb::MetricSeries> = Vec::new();
    let mut series_of: HashMap<&str, usize> = HashMap::new();
    for (i, m) in metrics.iter().enumerate() {
        let idx = match series_of.get(m.key.as_str()) {
            Some(&idx) => idx,
            None => {
                // Keys repeat within a batch; each distinct key is validated once.
                validation::validate_metric(&prefix("metrics", i), m)?;
                series.push(pb::MetricSeries {
                    key: m.key.clone(),
                    ..Default::default()
                });
                series_of.insert(&m.key, series.len() - 1);
                series.len() - 1
            }
        };
        if m.timestamp < 0 {
            validation::validate_metric(&prefix("metrics", i), m)?;
        }
        let s = &mut series[idx];
        s.timestamps.push(m.timestamp);
        s.steps.push(m.step);
        s.values.push(m.value);
    }

    let mut new_params: Vec<KeyValue> = Vec::new();
    let mut conflicts = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let p = validation::param(&prefix("params", i), p)?;
        if let Some(dup) = new_params.iter().find(|q| q.key == p.key) {
            if dup.value != p.value {
                let keys: Vec<&str> = params.iter().map(|p| p.key.as_str()).collect();
                return Err(Error::invalid(format!(
                    "Duplicate parameter keys have been submitted: {keys:?}. Please ensure the request contains only one param value per param key."
                )));
            }
            continue;
        }
        match run.params.get(&p.key) {
            Some(old) if *old == p.value => {}
            Some(old) => conflicts.push((p.key.clone(), old.clone(), p.value.clone())),
            None => new_params.push(p),
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::invalid(match origin {
            BatchOrigin::Single => {
                let (k, old, new) = &conflicts[0];
                format!(
                    "Changing param values is not allowed. Param with key='{k}' was already logged with value='{old}' for run ID='{run_id}'. Attempted logging new value '{new}'."
                )
            }
            BatchOrigin::Batch => {
                let listed: Vec<String> = conflicts
                    .iter()
                    .map(|(k, old, new)| {
                        format!("{{'key': '{k}', 'old_value': '{old}', 'new_value': '{new}'}}")
                    })
                    .collect();
                format!(
                    "Changing param values is not allowed. Params were already logged='[{}]' for run ID='{run_id}'.",
                    listed.join(", ")
                )
            }
        }));
    }

    let mut new_tags: Vec<KeyValue> = Vec::new();
    let mut new_parent: Option<String> = None;
    for (i, t) in tags.iter().enumerate() {
        let t = validation::run_tag(&prefix("tags", i), t)?;
        if t.key == TAG_ROOT_RUN_ID {
            check_root_tag(&t.value, &run.root_run_id)?;
            continue;
        }
        if t.key == TAG_PARENT_RUN_ID {
            new_parent = Some(t.value.clone());
        }
        new_tags.retain(|x| x.key != t.key);
        new_tags.push(t);
    }
    let mut reparent = None;
    if let Some(parent) = new_parent
        && parent != run.parent_run_id
    {
        if !parent.is_empty() {
            check_parent(kv, Some(&run.run_id), run.experiment_id, &parent)?;
        }
        reparent = Some(pb::RunReparented {
            run_id: run.run_id.clone(),
            old_parent_run_id: run.parent_run_id.clone(),
            new_parent_run_id: parent,
        });
    }

    let mut events = Vec::new();
    if !new_params.is_empty() {
        events.push(Payload::ParamLogged(pb::ParamLogged {
            run_id: run.run_id.clone(),
            params: new_params
                .into_iter()
                .map(|p| pb::Param {
                    key: p.key,
                    value: p.value,
                })
                .collect(),
        }));
    }
    if !new_tags.is_empty() {
        events.push(Payload::TagSet(pb::TagSet {
            run_id: run.run_id.clone(),
            tags: new_tags
                .into_iter()
                .map(|t| pb::RunTag {
                    key: t.key,
                    value: t.value,
                })
                .collect(),
        }));
    }
    if let Some(r) = reparent {
        events.push(Payload::RunReparented(r));
    }
    if !series.is_empty() {
        events.push(Payload::MetricsLogged(pb::MetricsLogged {
            run_id: run.run_id.clone(),
            series,
        }));
    }
    Ok(events)
}
