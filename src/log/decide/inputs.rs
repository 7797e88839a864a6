//! What a run used and produced: dataset and model inputs, model outputs, and MLflow's
//! legacy model history.

use crate::db::kv::Pending;
use crate::domain::{DatasetInput, Error, TAG_LOG_MODEL_HISTORY, validation};
use crate::pb::{self, event::Payload};
use crate::projection::{self, active_run};

use super::{Decision, done};
use crate::domain::commands as c;

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

/// `LogInputs`: datasets (once per run, one record per experiment) and models a run used.
pub(super) fn log_inputs(
    kv: &Pending,
    run_id: &str,
    datasets: &[DatasetInput],
    models: &[String],
) -> Decision {
    let run = active_run(kv, run_id)?;
    let mut fresh: Vec<pb::DatasetInput> = Vec::new();
    for (i, d) in datasets.iter().enumerate() {
        let ds = &d.dataset;
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
        // As MLflow: a run uses a dataset (name, digest) once, the first input of it
        // wins (later tags are ignored), and the experiment keeps one record of each
        // dataset, the first version logged, which later inputs link to.
        let same = |x: &pb::DatasetInput| {
            x.dataset
                .as_ref()
                .is_some_and(|o| o.name == ds.name && o.digest == ds.digest)
        };
        if run.dataset_inputs.iter().any(same) || fresh.iter().any(same) {
            continue;
        }
        let mut input = stored(d);
        if let Some(first) =
            projection::load_experiment_dataset(kv, run.experiment_id, &ds.name, &ds.digest)?
        {
            input.dataset = Some(first);
        }
        fresh.push(input);
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
}

/// `LogOutputs`: models the run produced.
pub(super) fn log_outputs(kv: &Pending, run_id: &str, models: &[(String, i64)]) -> Decision {
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
}

/// MLflow's legacy `LogModel`: appends to the run's model history tag.
pub(super) fn append_model_history(kv: &Pending, run_id: &str, model_json: &str) -> Decision {
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
}

/// A dataset input as the log stores it.
fn stored(d: &DatasetInput) -> pb::DatasetInput {
    let ds = &d.dataset;
    pb::DatasetInput {
        tags: d
            .tags
            .iter()
            .map(|t| pb::InputTag {
                key: t.key.clone(),
                value: t.value.clone(),
            })
            .collect(),
        dataset: Some(pb::Dataset {
            name: ds.name.clone(),
            digest: ds.digest.clone(),
            source_type: ds.source_type.clone(),
            source: ds.source.clone(),
            schema: ds.schema.clone(),
            profile: ds.profile.clone(),
        }),
    }
}

decide_done!(c::LogInputs, |c, at| log_inputs(
    at.kv,
    &c.run_id,
    &c.datasets,
    &c.models
));
decide_done!(c::LogOutputs, |c, at| log_outputs(
    at.kv, &c.run_id, &c.models
));
decide_done!(c::AppendModelHistory, |c, at| append_model_history(
    at.kv,
    &c.run_id,
    &c.model_json
));
