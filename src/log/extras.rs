//! Decisions for MLflow's newer tracking surface: dataset inputs, model outputs, the
//! legacy model history, artifact records and logged models. Kept apart from the core
//! run and experiment commands in `committer`; the same rules apply (validate against
//! the pending state, return events, write nothing on refusal).

use crate::db::kv::Pending;
use crate::domain::{
    Command, Error, INPUT_TAG_CONTEXT, KeyValue, TAG_LOG_MODEL_HISTORY, validation,
};
use crate::pb::{self, event::Payload};
use crate::projection::{self, LoggedModelRecord};

use super::committer::{Answer, active_run, find_experiment};

/// MLflow's dataset limits (`mlflow/utils/validation.py`).
const MAX_DATASET_NAME_SIZE: usize = 500;
const MAX_DATASET_DIGEST_SIZE: usize = 36;
const MAX_DATASET_SCHEMA_SIZE: usize = 1_048_575;
const MAX_DATASET_SOURCE_SIZE: usize = 65_535;
const MAX_DATASET_PROFILE_SIZE: usize = 16_777_215;
const MAX_INPUT_TAG_KEY_SIZE: usize = 255;
const MAX_INPUT_TAG_VALUE_SIZE: usize = 500;

fn too_long(what: &str, max: usize) -> Error {
    Error::invalid(format!(
        "'{what}' exceeds the maximum length of {max} characters"
    ))
}

fn check_len(what: &str, v: &str, max: usize) -> Result<(), Error> {
    if v.chars().count() > max {
        Err(too_long(what, max))
    } else {
        Ok(())
    }
}

fn pairs(pairs: &[KeyValue]) -> Vec<pb::KeyValuePair> {
    pairs
        .iter()
        .map(|p| pb::KeyValuePair {
            key: p.key.clone(),
            value: p.value.clone(),
        })
        .collect()
}

pub(crate) fn find_logged_model(kv: &Pending, model_id: &str) -> Result<LoggedModelRecord, Error> {
    validation::require("model_id", model_id)?;
    match projection::load_logged_model(kv, model_id)? {
        Some(m) if !m.deleted => Ok(m),
        _ => Err(Error::NotFound(format!(
            "Logged model with ID '{model_id}' not found."
        ))),
    }
}

fn validate_model_name(name: &str) -> Result<(), Error> {
    if name
        .chars()
        .any(|c| matches!(c, '/' | ':' | '.' | '%' | '"' | '\''))
    {
        return Err(Error::invalid(format!(
            "Invalid model name '{name}'. Names cannot contain the following characters: '/', ':', '.', '%', '\"' and \"'\""
        )));
    }
    Ok(())
}

/// Decides the commands this module owns (the committer routes only those here).
pub(crate) fn decide(command: &Command, kv: &Pending) -> Result<(Vec<Payload>, Answer), Error> {
    let done = |events: Vec<Payload>| Ok((events, Answer::Done));
    match command {
        Command::LogInputs {
            run_id,
            datasets,
            models,
        } => (|| {
            let run = active_run(kv, run_id)?;
            let mut fresh: Vec<pb::DatasetInput> = Vec::new();
            for (i, d) in datasets.iter().enumerate() {
                let Some(ds) = &d.dataset else {
                    return Err(validation::missing(&format!("datasets[{i}].dataset")));
                };
                for (field, value) in [
                    ("name", &ds.name),
                    ("digest", &ds.digest),
                    ("source_type", &ds.source_type),
                    ("source", &ds.source),
                ] {
                    validation::require(&format!("datasets[{i}].dataset.{field}"), value)?;
                }
                check_len("dataset.name", &ds.name, MAX_DATASET_NAME_SIZE)?;
                check_len("dataset.digest", &ds.digest, MAX_DATASET_DIGEST_SIZE)?;
                check_len("dataset.schema", &ds.schema, MAX_DATASET_SCHEMA_SIZE)?;
                check_len("dataset.source", &ds.source, MAX_DATASET_SOURCE_SIZE)?;
                check_len("dataset.profile", &ds.profile, MAX_DATASET_PROFILE_SIZE)?;
                for t in &d.tags {
                    validation::require(&format!("datasets[{i}].tags.key"), &t.key)?;
                    check_len("input_tag.key", &t.key, MAX_INPUT_TAG_KEY_SIZE)?;
                    check_len("input_tag.value", &t.value, MAX_INPUT_TAG_VALUE_SIZE)?;
                }
                // The same dataset in the same role is recorded once.
                let context = |x: &pb::DatasetInput| {
                    x.tags
                        .iter()
                        .find(|t| t.key == INPUT_TAG_CONTEXT)
                        .map(|t| t.value.clone())
                };
                let same = |x: &pb::DatasetInput| {
                    x.dataset
                        .as_ref()
                        .is_some_and(|o| o.name == ds.name && o.digest == ds.digest)
                        && context(x) == context(d)
                };
                if !run.dataset_inputs.iter().any(same) && !fresh.iter().any(same) {
                    fresh.push(d.clone());
                }
            }
            let models: Vec<pb::ModelInput> = models
                .iter()
                .filter(|m| !run.model_inputs.contains(m))
                .map(|m| pb::ModelInput {
                    model_id: m.clone(),
                })
                .collect();
            if fresh.is_empty() && models.is_empty() {
                return done(vec![]);
            }
            done(vec![Payload::InputsLogged(pb::InputsLogged {
                run_id: run.run_id,
                datasets: fresh,
                models,
            })])
        })(),
        Command::LogOutputs { run_id, models } => (|| {
            let run = active_run(kv, run_id)?;
            if models.is_empty() {
                return Err(validation::missing("models"));
            }
            let outputs = models
                .iter()
                .map(|(id, step)| {
                    validation::require("models.model_id", id)?;
                    Ok(pb::ModelOutput {
                        model_id: id.clone(),
                        step: *step,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            done(vec![Payload::OutputsLogged(pb::OutputsLogged {
                run_id: run.run_id,
                models: outputs,
            })])
        })(),
        Command::AppendModelHistory { run_id, model_json } => (|| {
            validation::require("model_json", model_json)?;
            let run = active_run(kv, run_id)?;
            let model: serde_json::Value = serde_json::from_str(model_json).map_err(|e| {
                Error::invalid(format!(
                    "Invalid value for parameter 'model_json': not JSON ({e})"
                ))
            })?;
            let mut history: Vec<serde_json::Value> = run
                .tags
                .get(TAG_LOG_MODEL_HISTORY)
                .and_then(|h| serde_json::from_str(h).ok())
                .unwrap_or_default();
            history.push(model);
            let value = serde_json::Value::Array(history).to_string();
            done(vec![Payload::TagSet(pb::TagSet {
                run_id: run.run_id,
                tags: vec![pb::RunTag {
                    key: TAG_LOG_MODEL_HISTORY.into(),
                    value,
                }],
            })])
        })(),
        Command::RecordArtifact {
            path,
            size,
            deleted,
        } => (|| {
            // `<experiment>/<run>/artifacts/...` names a run; other paths (models) do not.
            let parts: Vec<&str> = path.splitn(4, '/').collect();
            let run_id = match parts.as_slice() {
                [_, run, "artifacts", ..] if projection::load_run(kv, run)?.is_some() => {
                    run.to_string()
                }
                _ => String::new(),
            };
            done(vec![if *deleted {
                Payload::ArtifactDeleted(pb::ArtifactDeleted {
                    path: path.clone(),
                    run_id,
                })
            } else {
                Payload::ArtifactWritten(pb::ArtifactWritten {
                    path: path.clone(),
                    size: *size,
                    run_id,
                })
            }])
        })(),
        Command::CreateLoggedModel {
            experiment_id,
            name,
            model_type,
            source_run_id,
            params,
            tags,
        } => (|| {
            let exp = find_experiment(kv, experiment_id)?;
            if exp.deleted {
                return Err(Error::FailedPrecondition(format!(
                    "The experiment {experiment_id} must be in the 'active' state. Current state is deleted."
                )));
            }
            let name = if name.is_empty() {
                crate::domain::random_run_name()
            } else {
                name.clone()
            };
            validate_model_name(&name)?;
            if !source_run_id.is_empty() {
                projection::load_run(kv, source_run_id)?.ok_or_else(|| {
                    Error::NotFound(format!("Run with id={source_run_id} not found"))
                })?;
            }
            for p in params.iter().chain(tags) {
                validation::validate_key("key", &p.key, validation::MAX_ENTITY_KEY_LENGTH)?;
            }
            let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
            let artifact_uri = format!(
                "{}/models/{model_id}/artifacts",
                exp.artifact_location.trim_end_matches('/')
            );
            let creator_id = tags
                .iter()
                .find(|t| t.key == crate::domain::TAG_USER)
                .map(|t| t.value.clone())
                .unwrap_or_default();
            Ok((
                vec![Payload::LoggedModelCreated(pb::LoggedModelCreated {
                    model_id: model_id.clone(),
                    experiment_id: exp.id.to_string(),
                    name,
                    model_type: model_type.clone(),
                    source_run_id: source_run_id.clone(),
                    params: kv_params(params),
                    tags: pairs(tags),
                    artifact_uri,
                    creator_id,
                })],
                Answer::LoggedModel(model_id),
            ))
        })(),
        Command::FinalizeLoggedModel {
            model_id,
            status,
            status_message,
        } => (|| {
            let m = find_logged_model(kv, model_id)?;
            if !(1..=3).contains(status) {
                return Err(Error::invalid(format!(
                    "Invalid value {status} for parameter 'status': expected LOGGED_MODEL_PENDING, LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED"
                )));
            }
            Ok((
                vec![Payload::LoggedModelFinalized(pb::LoggedModelFinalized {
                    model_id: m.model_id.clone(),
                    status: *status,
                    status_message: status_message.clone(),
                })],
                Answer::LoggedModel(m.model_id),
            ))
        })(),
        Command::SetLoggedModelTags { model_id, tags } => (|| {
            let m = find_logged_model(kv, model_id)?;
            for t in tags {
                validation::validate_key("key", &t.key, validation::MAX_ENTITY_KEY_LENGTH)?;
            }
            Ok((
                vec![Payload::LoggedModelTagsSet(pb::LoggedModelTagsSet {
                    model_id: m.model_id.clone(),
                    tags: pairs(tags),
                })],
                Answer::LoggedModel(m.model_id),
            ))
        })(),
        Command::DeleteLoggedModelTag { model_id, key } => (|| {
            let m = find_logged_model(kv, model_id)?;
            if !m.tags.contains_key(key) {
                return Err(Error::NotFound(format!(
                    "No tag with key '{key}' found for logged model with ID '{model_id}'."
                )));
            }
            done(vec![Payload::LoggedModelTagDeleted(
                pb::LoggedModelTagDeleted {
                    model_id: m.model_id,
                    key: key.clone(),
                },
            )])
        })(),
        Command::LogLoggedModelParams { model_id, params } => (|| {
            let m = find_logged_model(kv, model_id)?;
            for p in params {
                validation::validate_key("key", &p.key, validation::MAX_ENTITY_KEY_LENGTH)?;
            }
            done(vec![Payload::LoggedModelParamsLogged(
                pb::LoggedModelParamsLogged {
                    model_id: m.model_id,
                    params: kv_params(params),
                },
            )])
        })(),
        Command::DeleteLoggedModel { model_id } => (|| {
            let m = find_logged_model(kv, model_id)?;
            done(vec![Payload::LoggedModelDeleted(pb::LoggedModelDeleted {
                model_id: m.model_id,
            })])
        })(),
        other => Err(Error::Corrupt(format!("extras::decide got {other:?}"))),
    }
}

/// Params with values truncated to MLflow's limit.
fn kv_params(params: &[KeyValue]) -> Vec<pb::KeyValuePair> {
    params
        .iter()
        .map(|p| pb::KeyValuePair {
            key: p.key.clone(),
            value: validation::truncate(&p.value, validation::MAX_PARAM_VAL_LENGTH),
        })
        .collect()
}
