//! Logged models (MLflow 3): create, finalize, tags, params, delete.

use crate::db::kv::Pending;
use crate::domain::{Error, KeyValue, validation};
use crate::pb::{self, event::Payload};
use crate::projection::{self, LoggedModelRecord, find_experiment};

use super::{Decision, done, projected_model};
use crate::domain::commands as c;

fn pairs(pairs: &[KeyValue]) -> Vec<pb::KeyValuePair> {
    pairs
        .iter()
        .map(|p| pb::KeyValuePair {
            key: p.key.to_string(),
            value: p.value.to_string(),
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

/// `CreateLoggedModel` in an active experiment; `given_id` keeps an imported model's id
/// (an existing model of that id is answered as it is).
#[allow(clippy::too_many_arguments)]
pub(super) fn create(
    kv: &Pending,
    given_id: Option<&str>,
    experiment_id: &str,
    name: &str,
    model_type: &str,
    source_run_id: &str,
    params: &[KeyValue],
    tags: &[KeyValue],
) -> Decision<String> {
    if let Some(id) = given_id
        && projection::load_logged_model(kv, id)?.is_some()
    {
        return Ok((vec![], id.to_string()));
    }
    let exp = find_experiment(kv, experiment_id)?;
    if exp.deleted {
        return Err(Error::FailedPrecondition(format!(
            "The experiment {experiment_id} must be in the 'active' state. Current state is deleted."
        )));
    }
    let name = if name.is_empty() {
        crate::domain::random_run_name()
    } else {
        name.to_string()
    };
    validate_model_name(&name)?;
    // MLflow records the source run as given, without looking it up; so does Arbor.
    for p in params.iter().chain(tags) {
        validation::validate_key("key", &p.key, validation::MAX_ENTITY_KEY_LENGTH)?;
    }
    let model_id = match given_id {
        Some(id) => {
            validation::require("model_id", id)?;
            validate_model_name(id)?;
            id.to_string()
        }
        None => format!("m-{}", uuid::Uuid::new_v4().simple()),
    };
    let artifact_uri = format!(
        "{}/models/{model_id}/artifacts",
        exp.artifact_location.trim_end_matches('/')
    );
    let creator_id = tags
        .iter()
        .find(|t| t.key == crate::domain::TAG_USER)
        .map(|t| t.value.to_string())
        .unwrap_or_default();
    Ok((
        vec![Payload::LoggedModelCreated(pb::LoggedModelCreated {
            model_id: model_id.clone(),
            experiment_id: exp.id.to_string(),
            name,
            model_type: model_type.to_string(),
            source_run_id: source_run_id.to_string(),
            params: kv_params(params),
            tags: pairs(tags),
            artifact_uri,
            creator_id,
        })],
        model_id,
    ))
}

/// `FinalizeLoggedModel`: its upload status.
pub(super) fn finalize(
    kv: &Pending,
    model_id: &str,
    status: &i32,
    status_message: &str,
) -> Decision<String> {
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
            status_message: status_message.to_string(),
        })],
        m.model_id,
    ))
}

/// `SetLoggedModelTags`.
pub(super) fn set_tags(kv: &Pending, model_id: &str, tags: &[KeyValue]) -> Decision<String> {
    let m = find_logged_model(kv, model_id)?;
    for t in tags {
        validation::validate_key("key", &t.key, validation::MAX_ENTITY_KEY_LENGTH)?;
    }
    Ok((
        vec![Payload::LoggedModelTagsSet(pb::LoggedModelTagsSet {
            model_id: m.model_id.clone(),
            tags: pairs(tags),
        })],
        m.model_id,
    ))
}

/// `DeleteLoggedModelTag`: the tag must exist.
pub(super) fn delete_tag(kv: &Pending, model_id: &str, key: &str) -> Decision {
    let m = find_logged_model(kv, model_id)?;
    if !m.tags.contains_key(key) {
        return Err(Error::NotFound(format!(
            "No tag with key '{key}' found for logged model with ID '{model_id}'."
        )));
    }
    done(vec![Payload::LoggedModelTagDeleted(
        pb::LoggedModelTagDeleted {
            model_id: m.model_id,
            key: key.to_string(),
        },
    )])
}

/// `LogLoggedModelParams`.
pub(super) fn log_params(kv: &Pending, model_id: &str, params: &[KeyValue]) -> Decision {
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
}

/// `DeleteLoggedModel`.
pub(super) fn delete(kv: &Pending, model_id: &str) -> Decision {
    let m = find_logged_model(kv, model_id)?;
    done(vec![Payload::LoggedModelDeleted(pb::LoggedModelDeleted {
        model_id: m.model_id,
    })])
}

/// Params with values truncated to MLflow's limit.
fn kv_params(params: &[KeyValue]) -> Vec<pb::KeyValuePair> {
    params
        .iter()
        .map(|p| pb::KeyValuePair {
            key: p.key.to_string(),
            value: validation::truncate(&p.value, validation::MAX_PARAM_VAL_LENGTH),
        })
        .collect()
}

/// The points runs logged for an imported model, one event per run in the order the
/// runs first appear.
pub(super) fn imported_metrics(
    model_id: &str,
    metrics: &[(String, crate::domain::ModelMetric)],
) -> Vec<Payload> {
    let mut events: Vec<pb::LoggedModelMetricsLogged> = Vec::new();
    for (run_id, m) in metrics {
        let at = match events.iter().position(|e| e.run_id == *run_id) {
            Some(at) => at,
            None => {
                events.push(pb::LoggedModelMetricsLogged {
                    model_id: model_id.to_string(),
                    run_id: run_id.clone(),
                    metrics: vec![],
                });
                events.len() - 1
            }
        };
        events[at].metrics.push(logged_model_metric(m));
    }
    events
        .into_iter()
        .map(Payload::LoggedModelMetricsLogged)
        .collect()
}

/// A point logged for a logged model, as its event records it.
pub(super) fn logged_model_metric(m: &crate::domain::ModelMetric) -> pb::LoggedModelMetric {
    pb::LoggedModelMetric {
        key: m.point.key.clone(),
        value: m.point.value,
        timestamp: m.point.timestamp,
        step: m.point.step,
        dataset_name: m.model.dataset_name.clone(),
        dataset_digest: m.model.dataset_digest.clone(),
    }
}

decide_read_back!(c::CreateLoggedModel => LoggedModelRecord, projected_model, |c, at| create(
    at.kv,
    None,
    &c.experiment_id,
    &c.name,
    &c.model_type,
    &c.source_run_id,
    &c.params,
    &c.tags,
));

decide_read_back!(c::ImportLoggedModel => LoggedModelRecord, projected_model, |c, at| {
    let (mut events, id) = create(
        at.kv,
        Some(&c.model_id),
        &c.experiment_id,
        &c.name,
        &c.model_type,
        &c.source_run_id,
        &c.params,
        &c.tags,
    )?;
    // Only with the model's creation: an existing model has its points.
    if !events.is_empty() {
        events.extend(imported_metrics(&c.model_id, &c.metrics));
    }
    Ok((events, id))
});

decide_read_back!(c::FinalizeLoggedModel => LoggedModelRecord, projected_model, |c, at| finalize(
    at.kv,
    &c.model_id,
    &c.status,
    &c.status_message
));

decide_read_back!(c::SetLoggedModelTags => LoggedModelRecord, projected_model, |c, at| set_tags(
    at.kv,
    &c.model_id,
    &c.tags
));

decide_done!(c::DeleteLoggedModelTag, |c, at| delete_tag(
    at.kv,
    &c.model_id,
    &c.key
));
decide_done!(c::LogLoggedModelParams, |c, at| log_params(
    at.kv,
    &c.model_id,
    &c.params
));
decide_done!(c::DeleteLoggedModel, |c, at| delete(at.kv, &c.model_id));
