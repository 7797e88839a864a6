//! Experiment commands: create, rename, delete, restore, and experiment tags.

use crate::db::kv::Pending;
use crate::domain::{Error, KeyValue, validation};
use crate::pb::{self, event::Payload};
use crate::projection::{self, active_experiment, experiment_not_found, find_experiment};

use super::{Decision, done};
use crate::domain::commands as c;
use crate::log::command::{At, sealed::Decide};

/// `CreateExperiment`: a unique name, MLflow's limits, the next id.
pub(super) fn create(
    kv: &Pending,
    name: &str,
    artifact_location: &str,
    tags: &[KeyValue],
) -> Decision<u64> {
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
        artifact_location.to_string()
    };
    Ok((
        vec![Payload::ExperimentCreated(pb::ExperimentCreated {
            experiment_id: id.to_string(),
            name: name.to_string(),
            artifact_location,
            tags: tags
                .iter()
                .map(|t| pb::ExperimentTag {
                    key: t.key.to_string(),
                    value: t.value.to_string(),
                })
                .collect(),
            creation_time: 0,
            last_update_time: 0,
        })],
        id,
    ))
}

/// An imported experiment: the one of that name if there is one (Default merges with
/// Default), else a new one with the source's tags and times.
pub(super) fn import(
    kv: &Pending,
    name: &str,
    tags: &[KeyValue],
    creation_time: i64,
    last_update_time: i64,
) -> Decision<u64> {
    if let Some(id) = projection::experiment_id_by_name(kv, name)? {
        return Ok((vec![], id));
    }
    let (mut events, answer) = create(kv, name, "", tags)?;
    if let Some(Payload::ExperimentCreated(e)) = events.first_mut() {
        e.creation_time = creation_time.max(0);
        e.last_update_time = last_update_time.max(0);
    }
    Ok((events, answer))
}

/// `UpdateExperiment`: only active experiments, names stay unique.
pub(super) fn rename(kv: &Pending, experiment_id: &str, new_name: &str) -> Decision {
    validation::require("new_name", new_name)?;
    validation::experiment_name(new_name)?;
    let e = find_experiment(kv, experiment_id)?;
    if e.deleted {
        return Err(Error::FailedPrecondition(
            "Cannot rename a non-active experiment.".into(),
        ));
    }
    if e.name == new_name {
        return done(vec![]);
    }
    if projection::experiment_id_by_name(kv, new_name)?.is_some() {
        return Err(Error::AlreadyExists(format!(
            "Experiment(name={new_name}) already exists."
        )));
    }
    done(vec![Payload::ExperimentRenamed(pb::ExperimentRenamed {
        experiment_id: e.id.to_string(),
        new_name: new_name.to_string(),
    })])
}

/// `DeleteExperiment` (its runs follow it in the projections).
pub(super) fn delete(kv: &Pending, experiment_id: &str) -> Decision {
    let e = find_experiment(kv, experiment_id)?;
    if e.deleted {
        return Err(experiment_not_found(experiment_id));
    }
    done(vec![Payload::ExperimentDeleted(pb::ExperimentDeleted {
        experiment_id: e.id.to_string(),
    })])
}

/// `RestoreExperiment`.
pub(super) fn restore(kv: &Pending, experiment_id: &str) -> Decision {
    let e = find_experiment(kv, experiment_id)?;
    if !e.deleted {
        return Err(experiment_not_found(experiment_id));
    }
    done(vec![Payload::ExperimentRestored(pb::ExperimentRestored {
        experiment_id: e.id.to_string(),
    })])
}

/// `SetExperimentTag` on an active experiment.
pub(super) fn set_tag(kv: &Pending, experiment_id: &str, key: &str, value: &str) -> Decision {
    let e = active_experiment(kv, experiment_id)?;
    validation::experiment_tag(&KeyValue::new(key, value))?;
    done(vec![Payload::ExperimentTagSet(pb::ExperimentTagSet {
        experiment_id: e.id.to_string(),
        key: key.to_string(),
        value: value.to_string(),
    })])
}

/// `DeleteExperimentTag`: the tag must exist.
pub(super) fn delete_tag(kv: &Pending, experiment_id: &str, key: &str) -> Decision {
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
            key: key.to_string(),
        },
    )])
}

/// An artifact location as MLflow's server stores it: a relative local path (no scheme,
/// or `file:`) becomes absolute against the server's working directory; anything else,
/// absolute paths and remote URIs, stays as given.
fn resolve_local(location: &str) -> String {
    let (scheme, path) = match location.strip_prefix("file:") {
        Some(rest) => ("file://", rest),
        None if location.contains("://") || location.is_empty() => return location.to_string(),
        None => ("", location),
    };
    let relative = std::path::Path::new(path);
    if relative.is_absolute() {
        return location.to_string();
    }
    let Ok(cwd) = std::env::current_dir() else {
        return location.to_string();
    };
    // `components` drops `.` segments, as Python's pathlib does when MLflow joins them.
    let absolute: std::path::PathBuf = cwd
        .components()
        .chain(relative.components())
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    format!("{scheme}{}", absolute.display())
}

impl Decide for c::CreateExperiment {
    /// The new experiment's id.
    type Output = String;
    type Key = u64;
    fn decide(&self, at: &At<'_>) -> Decision<u64> {
        let location = resolve_local(&self.artifact_location);
        let (mut events, id) = create(at.kv, &self.name, &location, &self.tags)?;
        // The creator of an experiment manages it.
        if !at.actor.is_empty() {
            events.push(super::access::creator_grant(id, at.actor));
        }
        Ok((events, id))
    }
    fn output(id: u64, _: &Pending<'_>) -> Result<String, Error> {
        Ok(id.to_string())
    }
}

impl Decide for c::ImportExperiment {
    /// The id of the experiment of that name, found or created.
    type Output = String;
    type Key = u64;
    fn decide(&self, at: &At<'_>) -> Decision<u64> {
        import(
            at.kv,
            &self.name,
            &self.tags,
            self.creation_time,
            self.last_update_time,
        )
    }
    fn output(id: u64, _: &Pending<'_>) -> Result<String, Error> {
        Ok(id.to_string())
    }
}

decide_done!(c::RenameExperiment, |c, at| rename(
    at.kv,
    &c.experiment_id,
    &c.new_name
));
decide_done!(c::DeleteExperiment, |c, at| delete(at.kv, &c.experiment_id));
decide_done!(c::RestoreExperiment, |c, at| restore(
    at.kv,
    &c.experiment_id
));
decide_done!(c::SetExperimentTag, |c, at| set_tag(
    at.kv,
    &c.experiment_id,
    &c.key,
    &c.value
));
decide_done!(c::DeleteExperimentTag, |c, at| delete_tag(
    at.kv,
    &c.experiment_id,
    &c.key
));
