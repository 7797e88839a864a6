//! Experiment commands: create, rename, delete, restore, and experiment tags.

use crate::db::kv::Pending;
use crate::domain::{Error, KeyValue, validation};
use crate::pb::{self, event::Payload};
use crate::projection::{self, active_experiment, experiment_not_found, find_experiment};

use super::{Answer, Decision, done};

/// `CreateExperiment`: a unique name, MLflow's limits, the next id.
pub(super) fn create(
    kv: &Pending,
    name: &str,
    artifact_location: &str,
    tags: &[KeyValue],
) -> Decision {
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
        Answer::Experiment(id),
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
) -> Decision {
    if let Some(id) = projection::experiment_id_by_name(kv, name)? {
        return Ok((vec![], Answer::Experiment(id)));
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
