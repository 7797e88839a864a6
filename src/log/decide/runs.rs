//! Run commands: create (with its place in the tree), update, delete and restore (with
//! their subtrees when asked), get-or-create a named child, and deleting a tag.

use crate::db::kv::Pending;
use crate::domain::{
    DEFAULT_EXPERIMENT_ID, Error, KeyValue, RunStatus, TAG_PARENT_RUN_ID, TAG_ROOT_RUN_ID,
    TAG_RUN_NAME, TAG_USER, random_run_name, validation,
};
use crate::hierarchy::{check_parent, check_root_tag};
use crate::pb::{self, event::Payload};
use crate::projection::{self, active_experiment, active_run, find_run};

use super::{Decision, done, projected_run};
use crate::domain::commands as c;
use crate::log::command::{At, sealed::Decide};
use crate::projection::RunRecord;

/// `CreateRun`: an active experiment, MLflow's name rules, the parent from
/// `mlflow.parentRunId`, and the root the server keeps. `given_id` keeps an imported
/// run's id: a run of that id already there is answered as it is (`created` false), and
/// runs imported before it that name it as their parent join its tree.
#[allow(clippy::too_many_arguments)]
pub(super) fn create(
    kv: &Pending,
    given_id: Option<&str>,
    experiment_id: &str,
    user_id: &str,
    run_name: &str,
    start_time: Option<i64>,
    tags: &[KeyValue],
    now: i64,
) -> Decision<(String, bool)> {
    let experiment_id = if experiment_id.is_empty() {
        DEFAULT_EXPERIMENT_ID
    } else {
        experiment_id
    };
    if let Some(id) = given_id {
        validation::imported_run_id(id)?;
        if projection::load_run(kv, id)?.is_some() {
            return Ok((vec![], (id.to_string(), false)));
        }
    }
    let exp = active_experiment(kv, experiment_id)?;
    // Later tags win over earlier ones with the same key, as in a map.
    let mut tag_map: Vec<KeyValue> = Vec::with_capacity(tags.len() + 1);
    for (i, t) in tags.iter().enumerate() {
        let t = validation::run_tag(&format!("tags[{i}]."), t)?;
        tag_map.retain(|x| x.key != t.key);
        tag_map.push(t);
    }
    let tag = |k: &str| {
        tag_map
            .iter()
            .find(|t| t.key == k)
            .map(|t| t.value.to_string())
    };
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
    let run_id = given_id.map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    // A parent that does not exist leaves the run a root (its tag stays as given).
    let parent = match parent_tag.filter(|p| !p.is_empty()) {
        Some(p) => check_parent(kv, None, &p)?,
        None => None,
    };
    let (parent_run_id, root) = match parent {
        Some(p) => (p.run_id, p.root_run_id),
        None => (String::new(), run_id.clone()),
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
    // Imported runs that arrived before this one, their parent, join its tree now.
    let mut adopted = Vec::new();
    if given_id.is_some() {
        let prefix = crate::db::keys::members(crate::db::keys::CHILD, &run_id);
        for key in crate::db::kv::Kv::keys_with_prefix(kv, &prefix)? {
            let child = crate::db::keys::member_of(&key, prefix.len());
            if let Some(c) = projection::load_run(kv, &child)?
                && c.parent_run_id.is_empty()
                && c.tags.get(TAG_PARENT_RUN_ID).map(String::as_str) == Some(run_id.as_str())
            {
                adopted.push(Payload::RunReparented(pb::RunReparented {
                    run_id: c.run_id,
                    old_parent_run_id: String::new(),
                    new_parent_run_id: run_id.clone(),
                }));
            }
        }
    }
    let answer = (run_id.clone(), true);
    let mut events = vec![Payload::RunCreated(pb::RunCreated {
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
    })];
    events.extend(adopted);
    Ok((events, answer))
}

/// `UpdateRun`: status, end time and name of an active run.
pub(super) fn update(
    kv: &Pending,
    run_id: &str,
    status: &Option<RunStatus>,
    end_time: &Option<i64>,
    run_name: &Option<String>,
) -> Decision<String> {
    let r = active_run(kv, run_id)?;
    if let Some(t) = end_time
        && *t < 0
    {
        return Err(Error::invalid(format!(
            "Invalid value {t} for parameter 'end_time' supplied: it must be a nonnegative epoch time in milliseconds"
        )));
    }
    // As MLflow: an empty name leaves the name as it is.
    let run_name = run_name
        .as_ref()
        .filter(|n| !n.is_empty())
        .map(|n| validation::truncate(n, validation::MAX_TAG_VAL_LENGTH));
    Ok((
        vec![Payload::RunUpdated(pb::RunUpdated {
            run_id: r.run_id.clone(),
            status: status.map(|s| s as i32),
            end_time: *end_time,
            run_name,
        })],
        r.run_id,
    ))
}

/// `GetOrCreateChildRun`: the parent's active child with this name, or a new one.
pub(super) fn get_or_create_child(
    kv: &Pending,
    parent_run_id: &str,
    run_name: &str,
    user_id: &str,
    start_time: &Option<i64>,
    tags: &[KeyValue],
    now: i64,
) -> Decision<(String, bool)> {
    validation::require("run_name", run_name)?;
    let parent = active_run(kv, parent_run_id)?;
    for child in projection::children(kv, &parent.run_id)? {
        if let Some(c) = projection::load_run(kv, &child)?
            && !c.deleted
            && c.run_name == *run_name
        {
            return Ok((vec![], (c.run_id, false)));
        }
    }
    let mut tags = tags.to_vec();
    tags.retain(|t| t.key != TAG_PARENT_RUN_ID);
    tags.push(KeyValue::new(TAG_PARENT_RUN_ID, &parent.run_id));
    let (events, (id, _)) = create(
        kv,
        None,
        &parent.experiment_id.to_string(),
        user_id,
        run_name,
        *start_time,
        &tags,
        now,
    )?;
    Ok((events, (id, true)))
}

/// `DeleteTag`; deleting `mlflow.parentRunId` makes the run a root.
pub(super) fn delete_tag(kv: &Pending, run_id: &str, key: &str) -> Decision {
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
        key: key.to_string(),
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

/// `RunDeleted` (or `RunRestored`) for the run, and with `cascade` for every run below
/// it, skipping those already in that state.
pub(super) fn lifecycle_events(
    kv: &Pending,
    run_id: &str,
    cascade: bool,
    delete: bool,
) -> Result<Vec<Payload>, Error> {
    let top = find_run(kv, run_id)?;
    let mut runs = vec![top];
    if cascade {
        for id in crate::hierarchy::subtree(kv, run_id)?.iter().skip(1) {
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

decide_read_back!(c::CreateRun => RunRecord, projected_run, |c, at| {
    let (events, (id, _)) = create(
        at.kv,
        None,
        &c.experiment_id,
        &c.user_id,
        &c.run_name,
        c.start_time,
        &c.tags,
        at.now,
    )?;
    Ok((events, id))
});

impl Decide for c::ImportRun {
    /// The run, and whether this import created it.
    type Output = (RunRecord, bool);
    type Key = (String, bool);
    fn decide(&self, at: &At<'_>) -> Decision<(String, bool)> {
        create(
            at.kv,
            Some(&self.run_id),
            &self.experiment_id,
            &self.user_id,
            &self.run_name,
            self.start_time,
            &self.tags,
            at.now,
        )
    }
    fn output((id, created): (String, bool), kv: &Pending<'_>) -> Result<(RunRecord, bool), Error> {
        Ok((projected_run(kv, &id)?, created))
    }
}

impl Decide for c::GetOrCreateChildRun {
    /// The child, and whether this call created it.
    type Output = (RunRecord, bool);
    type Key = (String, bool);
    fn decide(&self, at: &At<'_>) -> Decision<(String, bool)> {
        get_or_create_child(
            at.kv,
            &self.parent_run_id,
            &self.run_name,
            &self.user_id,
            &self.start_time,
            &self.tags,
            at.now,
        )
    }
    fn output((id, created): (String, bool), kv: &Pending<'_>) -> Result<(RunRecord, bool), Error> {
        Ok((projected_run(kv, &id)?, created))
    }
}

decide_read_back!(c::UpdateRun => RunRecord, projected_run, |c, at| update(
    at.kv,
    &c.run_id,
    &c.status,
    &c.end_time,
    &c.run_name
));

decide_done!(c::DeleteRun, |c, at| done(lifecycle_events(
    at.kv, &c.run_id, c.cascade, true
)?));
decide_done!(c::RestoreRun, |c, at| done(lifecycle_events(
    at.kv, &c.run_id, c.cascade, false
)?));
decide_done!(c::DeleteTag, |c, at| delete_tag(at.kv, &c.run_id, &c.key));
