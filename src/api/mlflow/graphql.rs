//! `/graphql`: the operations MLflow's UI sends (`MlflowGetExperimentQuery`, `GetRun`,
//! `SearchRuns`, `GetMetricHistoryBulkInterval`), answered with MLflow's shapes: its type
//! names in `__typename`, camelCase fields, int64 as strings (its `LongString`), NaN as
//! null, and errors in the response's `apiError`, as MLflow's resolvers wrap its REST
//! handlers.
//!
//! A dispatcher on the root field rather than a GraphQL engine: the UI's queries are
//! fixed strings in its bundle, each asks for one root field, and every object is
//! answered whole (a superset of any selection), which Apollo's cache takes as it is.
//! A query for any other root field is refused with a GraphQL error, so nothing is
//! answered wrongly; see docs/guides/mlflow-users.md, "MLflow's web UI".

use axum::Json;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Routes, Shared};
use crate::auth::Need;
use crate::domain::{Error, ViewType, lifecycle_stage, mlflow_stored};
use crate::pb;
use crate::projection::{ExperimentRecord, RunRecord};

/// Largest GraphQL request the UI sends is a few kilobytes; this bounds what is read.
const QUERY_LIMIT_BYTES: usize = 64 * 1024;

pub(super) fn routes() -> Routes {
    Routes::new().route("/graphql", get(over_get).post(over_post))
}

#[derive(Deserialize, Default)]
struct Request {
    #[serde(default)]
    query: String,
    #[serde(default)]
    variables: Option<Value>,
}

#[derive(Deserialize)]
struct GetParams {
    #[serde(default)]
    query: String,
    #[serde(default)]
    variables: Option<String>,
}

async fn over_get(state: Shared, Query(p): Query<GetParams>) -> Response {
    let variables = p
        .variables
        .as_deref()
        .and_then(|v| serde_json::from_str(v).ok());
    answer(
        &state,
        Request {
            query: p.query,
            variables,
        },
    )
}

async fn over_post(state: Shared, body: axum::body::Bytes) -> Response {
    if body.len() > QUERY_LIMIT_BYTES {
        return graphql_error("the request is too large");
    }
    match serde_json::from_slice::<Request>(&body) {
        Ok(r) => answer(&state, r),
        Err(e) => graphql_error(&format!("the request is not a GraphQL request: {e}")),
    }
}

fn graphql_error(message: &str) -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        Json(json!({ "errors": [{ "message": message }], "data": null })),
    )
        .into_response()
}

/// The one root field of the query among those served.
fn root_field(query: &str) -> Option<&'static str> {
    [
        "mlflowGetMetricHistoryBulkInterval",
        "mlflowGetExperiment",
        "mlflowSearchRuns",
        "mlflowGetRun",
    ]
    .into_iter()
    .find(|f| {
        query
            .match_indices(f)
            .any(|(i, _)| !query[i + f.len()..].starts_with(|c: char| c.is_alphanumeric()))
    })
}

fn answer(state: &Shared, r: Request) -> Response {
    let Some(field) = root_field(&r.query) else {
        return graphql_error(
            "Arbor answers the root fields mlflowGetExperiment, mlflowGetRun, mlflowSearchRuns and mlflowGetMetricHistoryBulkInterval",
        );
    };
    // The UI passes the input as the query's one variable (`$data` or `$input`).
    let input = match r.variables {
        Some(Value::Object(vars)) => vars
            .into_iter()
            .map(|(_, v)| v)
            .find(Value::is_object)
            .unwrap_or_default(),
        _ => Value::Null,
    };
    let (typename, result) = match field {
        "mlflowGetExperiment" => ("MlflowGetExperimentResponse", get_experiment(state, &input)),
        "mlflowGetRun" => ("MlflowGetRunResponse", get_run(state, &input)),
        "mlflowSearchRuns" => ("MlflowSearchRunsResponse", search_runs(state, &input)),
        _ => (
            "MlflowGetMetricHistoryBulkIntervalResponse",
            bulk_interval(state, &input),
        ),
    };
    match result {
        Ok(Value::Object(mut body)) => {
            body.insert("__typename".into(), json!(typename));
            body.entry("apiError").or_insert(Value::Null);
            Json(json!({ "data": { field: body } })).into_response()
        }
        Ok(_) => Json(json!({ "data": { field: null } })).into_response(),
        // As MLflow's server: the field is null and `errors` lists the messages.
        Err(e) => {
            let (_, _, message) = crate::api::mlflow::mlflow_error(e);
            Json(json!({ "data": { field: null }, "errors": [message] })).into_response()
        }
    }
}

fn text(input: &Value, camel: &str, snake: &str) -> Option<String> {
    input
        .get(camel)
        .or_else(|| input.get(snake))
        .and_then(Value::as_str)
        .map(String::from)
}

fn strings(input: &Value, camel: &str) -> Vec<String> {
    match input.get(camel) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => vec![],
    }
}

fn number(input: &Value, camel: &str) -> Option<i64> {
    match input.get(camel)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn get_experiment(state: &Shared, input: &Value) -> Result<Value, Error> {
    let id = text(input, "experimentId", "experiment_id").unwrap_or_default();
    let e = state
        .store
        .on_experiment(&id, Need::Read)?
        .get_experiment(&id)?;
    Ok(json!({ "experiment": experiment(&e) }))
}

fn get_run(state: &Shared, input: &Value) -> Result<Value, Error> {
    let id = text(input, "runId", "run_id")
        .filter(|s| !s.is_empty())
        .or_else(|| text(input, "runUuid", "run_uuid"))
        .unwrap_or_default();
    let r = state.store.on_run(&id, Need::Read)?.get_run(&id)?;
    Ok(json!({ "run": run(state, &r, &mut Experiments::new()) }))
}

fn search_runs(state: &Shared, input: &Value) -> Result<Value, Error> {
    let view = match input.get("runViewType").and_then(Value::as_str) {
        Some("DELETED_ONLY") => ViewType::DeletedOnly,
        Some("ALL") => ViewType::All,
        _ => ViewType::ActiveOnly,
    };
    let ids = strings(input, "experimentIds");
    let (runs, next) = state.store.on_experiments(&ids, Need::Read)?.search_runs(
        &ids,
        view,
        &text(input, "filter", "filter").unwrap_or_default(),
        &strings(input, "orderBy"),
        number(input, "maxResults"),
        &text(input, "pageToken", "page_token").unwrap_or_default(),
    )?;
    let mut experiments = Experiments::new();
    let answered: Vec<Value> = runs
        .iter()
        .map(|r| run(state, r, &mut experiments))
        .collect();
    Ok(json!({
        "runs": answered,
        "nextPageToken": next,
    }))
}

fn bulk_interval(state: &Shared, input: &Value) -> Result<Value, Error> {
    let per_run = super::metrics::sample_interval(
        &state.store,
        &strings(input, "runIds"),
        text(input, "metricKey", "metric_key"),
        (number(input, "startStep"), number(input, "endStep")),
        number(input, "maxResults"),
    )?;
    let metrics: Vec<Value> = per_run
        .iter()
        .flat_map(|(run_id, points)| {
            points.iter().map(move |p| {
                json!({
                    "__typename": "MlflowMetricWithRunId", "key": p.key, "value": value(p.value),
                    "timestamp": p.timestamp.to_string(), "step": p.step.to_string(), "runId": run_id
                })
            })
        })
        .collect();
    Ok(json!({ "metrics": metrics }))
}

/// A metric value as MLflow's GraphQL answers it: NaN is null (GraphQL's Float has no
/// NaN), infinities as MLflow's stores keep them.
fn value(v: f64) -> Value {
    if v.is_nan() {
        Value::Null
    } else {
        json!(mlflow_stored(v))
    }
}

fn pairs<'a>(typename: &str, kv: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<Value> {
    kv.map(|(k, v)| json!({ "__typename": typename, "key": k, "value": v }))
        .collect()
}

fn experiment(e: &ExperimentRecord) -> Value {
    json!({
        "__typename": "MlflowExperiment",
        "experimentId": e.id.to_string(),
        "name": e.name,
        "artifactLocation": e.artifact_location,
        "lifecycleStage": lifecycle_stage(e.deleted),
        "lastUpdateTime": e.last_update_time.to_string(),
        "creationTime": e.creation_time.to_string(),
        "tags": pairs("MlflowExperimentTag", e.tags.iter()),
        "effectiveTraceArchivalRetention": null,
        "workspace": null,
    })
}

fn dataset_input(d: &pb::DatasetInput) -> Value {
    json!({
        "__typename": "MlflowDatasetInput",
        "tags": d.tags.iter().map(|t| json!({
            "__typename": "MlflowInputTag", "key": t.key, "value": t.value
        })).collect::<Vec<_>>(),
        "dataset": d.dataset.as_ref().map(|ds| json!({
            "__typename": "MlflowDataset",
            "name": ds.name, "digest": ds.digest, "sourceType": ds.source_type,
            "source": ds.source, "schema": ds.schema, "profile": ds.profile,
        })),
    })
}

/// Each run names its experiment; a page of runs mostly shares a few, so each is read
/// once per answer.
type Experiments = std::collections::HashMap<u64, Value>;

fn run(state: &Shared, r: &RunRecord, experiments: &mut Experiments) -> Value {
    let experiment = experiments
        .entry(r.experiment_id)
        .or_insert_with(|| {
            let id = r.experiment_id.to_string();
            state
                .store
                .on_experiment(&id, Need::Read)
                .and_then(|s| s.get_experiment(&id))
                .map_or(Value::Null, |e| experiment(&e))
        })
        .clone();
    let metrics: Vec<Value> = r
        .latest_metrics
        .iter()
        .map(|(k, m)| {
            json!({
                "__typename": "MlflowMetricExtension", "key": k, "value": value(m.value),
                "timestamp": m.timestamp.to_string(), "step": m.step.to_string(),
            })
        })
        .collect();
    json!({
        "__typename": "MlflowRunExtension",
        "info": {
            "__typename": "MlflowRunInfo",
            "runId": r.run_id, "runUuid": r.run_id, "runName": r.run_name,
            "experimentId": r.experiment_id.to_string(), "userId": r.user_id,
            "status": r.status().name(),
            "startTime": r.start_time.to_string(),
            "endTime": r.end_time.map(|t| t.to_string()),
            "artifactUri": r.artifact_uri, "lifecycleStage": lifecycle_stage(r.deleted),
        },
        "experiment": experiment,
        "modelVersions": [],
        "data": {
            "__typename": "MlflowRunData",
            "metrics": metrics,
            "params": pairs("MlflowParam", r.params.iter()),
            "tags": pairs("MlflowRunTag", r.tags.iter()),
        },
        "inputs": {
            "__typename": "MlflowRunInputs",
            "datasetInputs": r.dataset_inputs.iter().map(dataset_input).collect::<Vec<_>>(),
            "modelInputs": r.model_inputs.iter().map(|m| json!({
                "__typename": "MlflowModelInput", "modelId": m
            })).collect::<Vec<_>>(),
        },
        "outputs": {
            "__typename": "MlflowRunOutputs",
            "modelOutputs": r.model_outputs.iter().map(|o| json!({
                "__typename": "MlflowModelOutput", "modelId": o.model_id, "step": o.step.to_string()
            })).collect::<Vec<_>>(),
        },
    })
}
