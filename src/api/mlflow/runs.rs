//! `/mlflow/runs/...`: create, get, update, delete, restore, search; metrics, params,
//! tags and batches; dataset and model inputs, model outputs, and the legacy model log.

use axum::Json;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::request::{self, Capped, Mlflow, present, required};
use super::response::{Empty, Page, Run, RunInfo, page};
use super::{KeyValueIn, Routes, Shared, json, key_values};
use crate::auth::Need;
use crate::domain::commands::{
    AppendModelHistory, CreateRun, DeleteRun, DeleteTag, LogBatch, LogInputs, LogOutputs,
    RestoreRun, UpdateRun,
};
use crate::domain::{
    Dataset, DatasetInput, Error, KeyValue, MetricPoint, ModelMetric, ModelRef, RunStatus,
    ViewType, validation,
};

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/runs/create", post(create))
        .route("/runs/get", get(get_run))
        .route("/runs/update", post(update))
        .route("/runs/delete", post(delete))
        .route("/runs/restore", post(restore))
        .route("/runs/search", post(search).get(search))
        .route("/runs/log-metric", post(log_metric))
        .route("/runs/log-parameter", post(log_param))
        .route("/runs/set-tag", post(set_tag))
        .route("/runs/delete-tag", post(delete_tag))
        .route("/runs/log-batch", post(log_batch))
        .route("/runs/log-inputs", post(log_inputs))
        .route("/runs/outputs", post(log_outputs))
        .route("/runs/log-model", post(log_model))
}

/// The run id, from `run_id` or the legacy `run_uuid` (serde flattening would lose the
/// field paths in messages, so each request names both fields itself); absent or empty
/// is MLflow's "Missing value" error for `run_id`.
pub(crate) fn run_id(run_id: Option<String>, run_uuid: Option<String>) -> Result<String, Error> {
    match (run_id, run_uuid) {
        (Some(id), _) if !id.is_empty() => Ok(id),
        (_, Some(id)) if !id.is_empty() => Ok(id),
        _ => Err(validation::missing("run_id")),
    }
}

/// A request that names only a run.
#[derive(Deserialize, Debug)]
pub(super) struct RunRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
}

#[derive(Deserialize, Debug)]
struct CreateRequest {
    #[serde(default, deserialize_with = "request::string", alias = "experimentId")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "userId")]
    user_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runName")]
    run_name: Option<String>,
    #[serde(default, deserialize_with = "request::int64", alias = "startTime")]
    start_time: Option<i64>,
    #[serde(default)]
    tags: Option<Vec<KeyValueIn>>,
}

#[derive(serde::Serialize)]
struct OneRun<'a> {
    run: Run<'a>,
}

async fn create(state: Shared, Mlflow(r): Mlflow<CreateRequest>) -> Result<Response, Error> {
    let experiment_id = r.experiment_id.unwrap_or_default();
    let target = if experiment_id.is_empty() {
        crate::domain::DEFAULT_EXPERIMENT_ID
    } else {
        &experiment_id
    };
    let tags = key_values("tags", r.tags.unwrap_or_default())?;
    let run = state
        .store
        .adopting(&tags)?
        .on_experiment(target, Need::Update)?
        .submit(CreateRun {
            experiment_id: experiment_id.clone(),
            user_id: r.user_id.unwrap_or_default(),
            run_name: r.run_name.unwrap_or_default(),
            start_time: r.start_time,
            tags,
        })
        .await?;
    json(&OneRun {
        run: Run::from(&run),
    })
}

async fn get_run(state: Shared, Mlflow(r): Mlflow<RunRequest>) -> Result<Response, Error> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let run = state.store.on_run(&id, Need::Read)?.get_run(&id)?;
    json(&OneRun {
        run: Run::from(&run),
    })
}

#[derive(Deserialize, Debug)]
struct UpdateRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "request::enumeration")]
    status: Option<RunStatus>,
    #[serde(default, deserialize_with = "request::int64", alias = "endTime")]
    end_time: Option<i64>,
    #[serde(default, deserialize_with = "request::string", alias = "runName")]
    run_name: Option<String>,
}

#[derive(serde::Serialize)]
struct Updated<'a> {
    run_info: RunInfo<'a>,
}

async fn update(state: Shared, Mlflow(r): Mlflow<UpdateRequest>) -> Result<Response, Error> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let run = state
        .store
        .on_run(&id, Need::Update)?
        .submit(UpdateRun {
            run_id: id,
            status: r.status,
            end_time: r.end_time,
            run_name: r.run_name,
        })
        .await?;
    json(&Updated {
        run_info: RunInfo::from(&run),
    })
}

#[derive(Deserialize, Debug)]
struct LifecycleRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    /// Arbor's addition: the whole subtree too.
    #[serde(default, deserialize_with = "request::boolean")]
    cascade: Option<bool>,
}

async fn delete(state: Shared, Mlflow(r): Mlflow<LifecycleRequest>) -> Result<Json<Empty>, Error> {
    let cascade = r.cascade.unwrap_or(false);
    let id = run_id(r.run_id, r.run_uuid)?;
    state
        .store
        .on_run(&id, Need::Delete)?
        .submit(DeleteRun {
            run_id: id,
            cascade,
        })
        .await?;
    Ok(Json(Empty {}))
}

async fn restore(state: Shared, Mlflow(r): Mlflow<LifecycleRequest>) -> Result<Json<Empty>, Error> {
    let cascade = r.cascade.unwrap_or(false);
    let id = run_id(r.run_id, r.run_uuid)?;
    state
        .store
        .on_run(&id, Need::Delete)?
        .submit(RestoreRun {
            run_id: id,
            cascade,
        })
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct SearchRequest {
    #[serde(
        default,
        deserialize_with = "request::strings",
        alias = "experimentIds"
    )]
    experiment_ids: Vec<String>,
    #[serde(
        default,
        deserialize_with = "request::enumeration",
        alias = "runViewType"
    )]
    run_view_type: Option<ViewType>,
    #[serde(default, deserialize_with = "request::string")]
    filter: Option<String>,
    #[serde(default, deserialize_with = "request::strings", alias = "orderBy")]
    order_by: Vec<String>,
    #[serde(default, deserialize_with = "request::int64", alias = "maxResults")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "request::string", alias = "pageToken")]
    page_token: Option<String>,
}

async fn search(state: Shared, Mlflow(r): Mlflow<SearchRequest>) -> Result<Response, Error> {
    let (runs, next) = state
        .store
        .on_experiments(&r.experiment_ids, Need::Read)?
        .search_runs(
            &r.experiment_ids,
            r.run_view_type.unwrap_or_default(),
            &r.filter.unwrap_or_default(),
            &r.order_by,
            r.max_results,
            &r.page_token.unwrap_or_default(),
        )?;
    let page: Page<Run> = page("runs", runs.iter().map(Run::from).collect(), next);
    json(&page)
}

/// A metric point as MLflow sends it (a `log-metric` request is one too, with the run),
/// optionally for a logged model and a dataset.
#[derive(Deserialize, Debug)]
pub(crate) struct MetricIn {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    pub(crate) run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "request::double")]
    value: Option<f64>,
    #[serde(default, deserialize_with = "request::int64")]
    timestamp: Option<i64>,
    #[serde(default, deserialize_with = "request::int64")]
    step: Option<i64>,
    #[serde(default, deserialize_with = "request::string", alias = "modelId")]
    pub(crate) model_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "datasetName")]
    dataset_name: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "datasetDigest")]
    dataset_digest: Option<String>,
}

impl MetricIn {
    /// The point, and the logged model it is also for; a missing field is named with
    /// `prefix` (`metrics[3].`).
    pub(crate) fn point(self, prefix: &str) -> Result<(MetricPoint, Option<ModelRef>), Error> {
        let point = MetricPoint {
            key: required(&format!("{prefix}key"), self.key)?,
            value: present(&format!("{prefix}value"), self.value)?,
            timestamp: present(&format!("{prefix}timestamp"), self.timestamp)?,
            step: self.step.unwrap_or(0),
        };
        let model = self
            .model_id
            .filter(|id| !id.is_empty())
            .map(|model_id| ModelRef {
                model_id,
                dataset_name: self.dataset_name.unwrap_or_default(),
                dataset_digest: self.dataset_digest.unwrap_or_default(),
            });
        Ok((point, model))
    }
}

async fn log_metric(state: Shared, Mlflow(mut r): Mlflow<MetricIn>) -> Result<Json<Empty>, Error> {
    let run_id = run_id(r.run_id.take(), r.run_uuid.take())?;
    let (point, model) = r.point("")?;
    state
        .store
        .on_run(&run_id, Need::Update)?
        .submit(LogBatch::metric(run_id, point, model))
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct KeyValueRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    key: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    value: Option<String>,
}

impl KeyValueRequest {
    /// The run and the pair, checked in MLflow's order (the pair first).
    fn into_parts(self) -> Result<(String, KeyValue), Error> {
        let pair = KeyValue::new(required("key", self.key)?, self.value.unwrap_or_default());
        Ok((run_id(self.run_id, self.run_uuid)?, pair))
    }
}

async fn log_param(
    state: Shared,
    Mlflow(r): Mlflow<KeyValueRequest>,
) -> Result<Json<Empty>, Error> {
    let (run_id, param) = r.into_parts()?;
    state
        .store
        .on_run(&run_id, Need::Update)?
        .submit(LogBatch::param(run_id, param))
        .await?;
    Ok(Json(Empty {}))
}

async fn set_tag(state: Shared, Mlflow(r): Mlflow<KeyValueRequest>) -> Result<Json<Empty>, Error> {
    let (run_id, tag) = r.into_parts()?;
    state
        .store
        .adopting([&tag])?
        .on_run(&run_id, Need::Update)?
        .submit(LogBatch::tag(run_id, tag))
        .await?;
    Ok(Json(Empty {}))
}

async fn delete_tag(
    state: Shared,
    Mlflow(r): Mlflow<KeyValueRequest>,
) -> Result<Json<Empty>, Error> {
    let run_id = run_id(r.run_id, r.run_uuid)?;
    let key = required("key", r.key)?;
    state
        .store
        .on_run(&run_id, Need::Update)?
        .submit(DeleteTag { run_id, key })
        .await?;
    Ok(Json(Empty {}))
}

/// `log-batch`. Each list keeps at most its limit (the rest is only counted), so an
/// oversized batch is refused without being held in memory.
#[derive(Deserialize, Debug)]
struct LogBatchRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default)]
    metrics: Capped<MetricIn, { validation::MAX_METRICS_PER_BATCH }>,
    #[serde(default)]
    params: Capped<KeyValueIn, { validation::MAX_PARAMS_TAGS_PER_BATCH }>,
    #[serde(default)]
    tags: Capped<KeyValueIn, { validation::MAX_PARAMS_TAGS_PER_BATCH }>,
}

async fn log_batch(
    state: Shared,
    Mlflow(r): Mlflow<LogBatchRequest>,
) -> Result<Json<Empty>, Error> {
    let totals = (r.metrics.total, r.params.total, r.tags.total);
    let mut metrics = Vec::with_capacity(r.metrics.items.len());
    let mut model_metrics = Vec::new();
    for (i, m) in r.metrics.items.into_iter().enumerate() {
        let (point, model) = m.point(&format!("metrics[{i}]."))?;
        if let Some(model) = model {
            model_metrics.push(ModelMetric {
                model,
                point: point.clone(),
            });
        }
        metrics.push(point);
    }
    let run_id = run_id(r.run_id, r.run_uuid)?;
    let params = key_values("params", r.params.items)?;
    let tags = key_values("tags", r.tags.items)?;
    validation::batch_limits(totals.0, totals.1, totals.2)?;
    state
        .store
        .adopting(&tags)?
        .on_run(&run_id, Need::Update)?
        .submit(LogBatch {
            run_id,
            metrics,
            params,
            tags,
            model_metrics,
            ..LogBatch::default()
        })
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct DatasetIn {
    #[serde(default, deserialize_with = "request::string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    digest: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "sourceType")]
    source_type: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    source: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    schema: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    profile: Option<String>,
}

#[derive(Deserialize, Debug)]
struct DatasetInputIn {
    #[serde(default)]
    tags: Option<Vec<KeyValueIn>>,
    #[serde(default)]
    dataset: Option<DatasetIn>,
}

#[derive(Deserialize, Debug)]
struct ModelRefIn {
    #[serde(default, deserialize_with = "request::string", alias = "modelId")]
    pub(super) model_id: Option<String>,
    #[serde(default, deserialize_with = "request::int64")]
    step: Option<i64>,
}

#[derive(Deserialize, Debug)]
struct LogInputsRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default)]
    datasets: Option<Vec<DatasetInputIn>>,
    #[serde(default)]
    models: Option<Vec<ModelRefIn>>,
}

async fn log_inputs(
    state: Shared,
    Mlflow(r): Mlflow<LogInputsRequest>,
) -> Result<Json<Empty>, Error> {
    let mut datasets = Vec::new();
    for (i, d) in r.datasets.unwrap_or_default().into_iter().enumerate() {
        let at = format!("datasets[{i}].");
        let tags = key_values(&format!("{at}tags"), d.tags.unwrap_or_default())?;
        let ds = present(&format!("{at}dataset"), d.dataset)?;
        let field = |name: &str, v: Option<String>| required(&format!("{at}dataset.{name}"), v);
        datasets.push(DatasetInput {
            dataset: Dataset {
                name: field("name", ds.name)?,
                digest: field("digest", ds.digest)?,
                source_type: field("source_type", ds.source_type)?,
                source: field("source", ds.source)?,
                schema: ds.schema.unwrap_or_default(),
                profile: ds.profile.unwrap_or_default(),
            },
            tags,
        });
    }
    let models = r
        .models
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, m)| required(&format!("models[{i}].model_id"), m.model_id))
        .collect::<Result<Vec<_>, _>>()?;
    let id = run_id(r.run_id, r.run_uuid)?;
    state
        .store
        .on_run(&id, Need::Update)?
        .submit(LogInputs {
            run_id: id,
            datasets,
            models,
        })
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct LogOutputsRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default)]
    models: Option<Vec<ModelRefIn>>,
}

async fn log_outputs(
    state: Shared,
    Mlflow(r): Mlflow<LogOutputsRequest>,
) -> Result<Json<Empty>, Error> {
    let models = r
        .models
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Ok((
                required(&format!("models[{i}].model_id"), m.model_id)?,
                m.step.unwrap_or(0),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let id = run_id(r.run_id, r.run_uuid)?;
    state
        .store
        .on_run(&id, Need::Update)?
        .submit(LogOutputs { run_id: id, models })
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, Debug)]
struct LogModelRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "modelJson")]
    model_json: Option<String>,
}

async fn log_model(
    state: Shared,
    Mlflow(r): Mlflow<LogModelRequest>,
) -> Result<Json<Empty>, Error> {
    let run_id = run_id(r.run_id, r.run_uuid)?;
    let model_json = required("model_json", r.model_json)?;
    state
        .store
        .on_run(&run_id, Need::Update)?
        .submit(AppendModelHistory { run_id, model_json })
        .await?;
    Ok(Json(Empty {}))
}
