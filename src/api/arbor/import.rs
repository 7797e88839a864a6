//! What `arbor import` writes through besides MLflow's own API: experiments, runs and
//! logged models that keep the source's names, ids and times
//! (`/api/arbor/v1/import/{experiment,run,logged-model}`). Each answers the existing
//! thing as it is when there is one, so an import can be run again; the importer then
//! sends what differs through the usual MLflow endpoints.

use axum::response::Response;
use axum::routing::post;
use serde::Deserialize;

use super::Routes;
use crate::api::mlflow::request::{self, Mlflow, required};
use crate::api::mlflow::response::Run;
use crate::api::mlflow::{KeyValueIn, Shared, json, key_values};
use crate::auth::Need;
use crate::domain::commands::{ImportExperiment, ImportLoggedModel, ImportRun};
use crate::domain::{Error, ModelMetric};

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/import/experiment", post(experiment))
        .route("/import/run", post(run))
        .route("/import/logged-model", post(logged_model))
}

#[derive(Deserialize, Debug)]
struct ExperimentRequest {
    #[serde(default, deserialize_with = "request::string")]
    name: Option<String>,
    #[serde(default)]
    tags: Option<Vec<KeyValueIn>>,
    #[serde(default, deserialize_with = "request::int64")]
    creation_time: Option<i64>,
    #[serde(default, deserialize_with = "request::int64")]
    last_update_time: Option<i64>,
}

/// `{"experiment_id"}`: the experiment of that name (EDIT on it needed), or a new one.
async fn experiment(
    state: Shared,
    Mlflow(r): Mlflow<ExperimentRequest>,
) -> Result<Response, Error> {
    let name = required("name", r.name)?;
    let store = match state.store.any().get_experiment_by_name(&name) {
        Ok(_) => state.store.on_experiment_named(&name, Need::Update)?,
        Err(Error::NotFound(_)) => state.store.any(),
        Err(e) => return Err(e),
    };
    let id = store
        .submit(ImportExperiment {
            name,
            tags: key_values("tags", r.tags.unwrap_or_default())?,
            creation_time: r.creation_time.unwrap_or(0),
            last_update_time: r.last_update_time.unwrap_or(0),
        })
        .await?;
    json(&serde_json::json!({ "experiment_id": id }))
}

#[derive(Deserialize, Debug)]
struct RunRequest {
    #[serde(default, deserialize_with = "request::string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    run_name: Option<String>,
    #[serde(default, deserialize_with = "request::int64")]
    start_time: Option<i64>,
    #[serde(default)]
    tags: Option<Vec<KeyValueIn>>,
}

#[derive(serde::Serialize)]
struct ImportedRun<'a> {
    run: Run<'a>,
    created: bool,
}

/// `{"run", "created"}`: the run of that id, created in the experiment if missing.
async fn run(state: Shared, Mlflow(r): Mlflow<RunRequest>) -> Result<Response, Error> {
    let run_id = required("run_id", r.run_id)?;
    let experiment_id = required("experiment_id", r.experiment_id)?;
    let tags = key_values("tags", r.tags.unwrap_or_default())?;
    let (run, created) = state
        .store
        .adopting(&tags)?
        .on_experiment(&experiment_id, Need::Update)?
        .submit(ImportRun {
            run_id,
            experiment_id: experiment_id.clone(),
            user_id: r.user_id.unwrap_or_default(),
            run_name: r.run_name.unwrap_or_default(),
            start_time: r.start_time,
            tags,
        })
        .await?;
    if !state.store.can_read(run.experiment_id) {
        // Whose run it is, and where, is not this caller's to learn.
        return Err(Error::NotFound(format!(
            "Run with id={} not found",
            run.run_id
        )));
    }
    if run.experiment_id.to_string() != experiment_id {
        return Err(Error::invalid(format!(
            "run {} is in experiment {}, not {experiment_id}",
            run.run_id, run.experiment_id
        )));
    }
    json(&ImportedRun {
        run: Run::from(&run),
        created,
    })
}

#[derive(Deserialize, Debug)]
struct ModelRequest {
    #[serde(default, deserialize_with = "request::string")]
    model_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    model_type: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    source_run_id: Option<String>,
    #[serde(default)]
    params: Option<Vec<KeyValueIn>>,
    #[serde(default)]
    tags: Option<Vec<KeyValueIn>>,
    /// MLflow's `LoggedModel.data.metrics`: points with their run and dataset.
    #[serde(default)]
    metrics: Option<Vec<crate::api::mlflow::runs::MetricIn>>,
}

/// `{"model"}`: the logged model of that id, created in the experiment if missing.
async fn logged_model(state: Shared, Mlflow(r): Mlflow<ModelRequest>) -> Result<Response, Error> {
    let model_id = required("model_id", r.model_id)?;
    let experiment_id = required("experiment_id", r.experiment_id)?;
    let metrics = r
        .metrics
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            let prefix = format!("metrics[{i}].");
            let run = required(&format!("{prefix}run_id"), m.run_id.take())?;
            // Recorded for this model whatever id the source wrote.
            m.model_id = Some(model_id.clone());
            let (point, model) = m.point(&prefix)?;
            let model = model.unwrap_or_default();
            Ok((run, ModelMetric { model, point }))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let model = state
        .store
        .on_experiment(&experiment_id, Need::Update)?
        .submit(ImportLoggedModel {
            model_id,
            experiment_id,
            name: r.name.unwrap_or_default(),
            model_type: r.model_type.unwrap_or_default(),
            source_run_id: r.source_run_id.unwrap_or_default(),
            params: key_values("params", r.params.unwrap_or_default())?,
            tags: key_values("tags", r.tags.unwrap_or_default())?,
            metrics,
        })
        .await?;
    crate::api::mlflow::models::one(&model)
}
