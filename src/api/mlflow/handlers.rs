//! MLflow's tracking RPCs (`/api/2.0/mlflow/...`): experiments, runs, metrics, params,
//! tags, batches, history, datasets, outputs, the legacy model log, run artifact
//! listing, and logged models. Each reads its fields as MLflow's server does and
//! answers a JSON object.

use serde_json::{Value, json};

use super::State;
use super::json;
use super::request::{LOGGED_MODEL_STATUS, Params, RUN_STATUS, view_type};
use crate::domain::{BatchOrigin, Command, Error, KeyValue, MetricPoint, RunStatus, validation};
use crate::pb;
use crate::store::Outcome;

/// Most runs `get-history-bulk-interval` takes, and its largest and default page.
const BULK_MAX_RUNS: usize = 100;
const BULK_MAX_RESULTS: i64 = 2500;

fn empty() -> Value {
    json!({})
}

async fn write(state: &State, command: Command) -> Result<Outcome, Error> {
    state.store.submit(command).await
}

/// Writes and answers MLflow's empty response.
async fn done(state: &State, command: Command) -> Result<Value, Error> {
    write(state, command).await?;
    Ok(empty())
}

fn metric_point(p: &Params) -> Result<MetricPoint, Error> {
    Ok(MetricPoint {
        key: p.required("key")?,
        value: p.double("value")?.ok_or_else(|| p.missing("value"))?,
        timestamp: p.required_int("timestamp")?,
        step: p.int("step")?.unwrap_or(0),
    })
}

fn expect_run(outcome: Outcome) -> Result<crate::projection::RunRecord, Error> {
    match outcome {
        Outcome::Run(r) => Ok(*r),
        other => Err(Error::Corrupt(format!("unexpected outcome {other:?}"))),
    }
}

fn expect_model(outcome: Outcome) -> Result<Value, Error> {
    match outcome {
        Outcome::LoggedModel(m) => Ok(json!({ "model": json::logged_model(&m) })),
        other => Err(Error::Corrupt(format!("unexpected outcome {other:?}"))),
    }
}

fn endpoint_not_found(method: &str, path: &str) -> Error {
    Error::EndpointNotFound(format!("No API endpoint {method} /mlflow/{path}"))
}

/// Runs the RPC at `path` (after `/mlflow/`).
pub(crate) async fn dispatch(
    state: &State,
    method: &str,
    path: &str,
    p: Params,
) -> Result<Value, Error> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["experiments", "create"]) => {
            let outcome = write(
                state,
                Command::CreateExperiment {
                    name: p.required("name")?,
                    artifact_location: p.string_or_empty("artifact_location")?,
                    tags: p.key_values("tags")?,
                },
            )
            .await?;
            match outcome {
                Outcome::ExperimentCreated(id) => Ok(json!({ "experiment_id": id })),
                other => Err(Error::Corrupt(format!("unexpected outcome {other:?}"))),
            }
        }
        ("GET", ["experiments", "get"]) => {
            let e = state.store.get_experiment(&p.required("experiment_id")?)?;
            Ok(json!({ "experiment": json::experiment(&e) }))
        }
        ("GET", ["experiments", "get-by-name"]) => {
            let e = state
                .store
                .get_experiment_by_name(&p.required("experiment_name")?)?;
            Ok(json!({ "experiment": json::experiment(&e) }))
        }
        ("POST" | "GET", ["experiments", "search"]) => {
            let (exps, next) = state.store.search_experiments(
                view_type(&p, "view_type")?,
                &p.string_or_empty("filter")?,
                &p.strings("order_by")?,
                p.int("max_results")?,
                &p.string_or_empty("page_token")?,
            )?;
            Ok(json::page(
                "experiments",
                exps.iter().map(json::experiment).collect(),
                next,
            ))
        }
        ("POST", ["experiments", "delete"]) => {
            done(
                state,
                Command::DeleteExperiment {
                    experiment_id: p.required("experiment_id")?,
                },
            )
            .await
        }
        ("POST", ["experiments", "restore"]) => {
            done(
                state,
                Command::RestoreExperiment {
                    experiment_id: p.required("experiment_id")?,
                },
            )
            .await
        }
        ("POST", ["experiments", "update"]) => {
            done(
                state,
                Command::RenameExperiment {
                    experiment_id: p.required("experiment_id")?,
                    new_name: p.required("new_name")?,
                },
            )
            .await
        }
        ("POST", ["experiments", "set-experiment-tag"]) => {
            done(
                state,
                Command::SetExperimentTag {
                    experiment_id: p.required("experiment_id")?,
                    key: p.required("key")?,
                    value: p.string_or_empty("value")?,
                },
            )
            .await
        }
        ("POST", ["experiments", "delete-experiment-tag"]) => {
            done(
                state,
                Command::DeleteExperimentTag {
                    experiment_id: p.required("experiment_id")?,
                    key: p.required("key")?,
                },
            )
            .await
        }
        ("POST", ["runs", "create"]) => {
            let run = expect_run(
                write(
                    state,
                    Command::CreateRun {
                        experiment_id: p.string_or_empty("experiment_id")?,
                        user_id: p.string_or_empty("user_id")?,
                        run_name: p.string_or_empty("run_name")?,
                        start_time: p.int("start_time")?,
                        tags: p.key_values("tags")?,
                    },
                )
                .await?,
            )?;
            Ok(json!({ "run": json::run(&run) }))
        }
        ("POST", ["runs", "update"]) => {
            let status = p
                .enumeration("status", RUN_STATUS)?
                .and_then(RunStatus::from_i32);
            let run = expect_run(
                write(
                    state,
                    Command::UpdateRun {
                        run_id: p.run_id()?,
                        status,
                        end_time: p.int("end_time")?,
                        run_name: p.string("run_name")?,
                    },
                )
                .await?,
            )?;
            Ok(json!({ "run_info": json::run_info(&run) }))
        }
        ("POST", ["runs", "delete"]) => {
            done(
                state,
                Command::DeleteRun {
                    run_id: p.run_id()?,
                    cascade: p.bool("cascade")?.unwrap_or(false),
                },
            )
            .await
        }
        ("POST", ["runs", "restore"]) => {
            done(
                state,
                Command::RestoreRun {
                    run_id: p.run_id()?,
                    cascade: p.bool("cascade")?.unwrap_or(false),
                },
            )
            .await
        }
        ("GET", ["runs", "get"]) => {
            let run = state.store.get_run(&p.run_id()?)?;
            Ok(json!({ "run": json::run(&run) }))
        }
        ("POST", ["runs", "log-metric"]) => {
            let run_id = p.run_id()?;
            let point = metric_point(&p)?;
            done(
                state,
                Command::LogBatch {
                    run_id,
                    metrics: vec![point],
                    params: vec![],
                    tags: vec![],
                    origin: BatchOrigin::Single,
                },
            )
            .await
        }
        ("POST", ["runs", "log-parameter"]) => {
            let param = KeyValue::new(p.required("key")?, p.string_or_empty("value")?);
            done(
                state,
                Command::LogBatch {
                    run_id: p.run_id()?,
                    metrics: vec![],
                    params: vec![param],
                    tags: vec![],
                    origin: BatchOrigin::Single,
                },
            )
            .await
        }
        ("POST", ["runs", "set-tag"]) => {
            let tag = KeyValue::new(p.required("key")?, p.string_or_empty("value")?);
            done(
                state,
                Command::LogBatch {
                    run_id: p.run_id()?,
                    metrics: vec![],
                    params: vec![],
                    tags: vec![tag],
                    origin: BatchOrigin::Single,
                },
            )
            .await
        }
        ("POST", ["runs", "delete-tag"]) => {
            done(
                state,
                Command::DeleteTag {
                    run_id: p.run_id()?,
                    key: p.required("key")?,
                },
            )
            .await
        }
        ("POST", ["runs", "log-batch"]) => {
            let metrics = p
                .objects("metrics")?
                .iter()
                .map(metric_point)
                .collect::<Result<Vec<_>, _>>()?;
            done(
                state,
                Command::LogBatch {
                    run_id: p.run_id()?,
                    metrics,
                    params: p.key_values("params")?,
                    tags: p.key_values("tags")?,
                    origin: BatchOrigin::Batch,
                },
            )
            .await
        }
        ("POST" | "GET", ["runs", "search"]) => {
            let (runs, next) = state.store.search_runs(
                &p.strings("experiment_ids")?,
                view_type(&p, "run_view_type")?,
                &p.string_or_empty("filter")?,
                &p.strings("order_by")?,
                p.int("max_results")?,
                &p.string_or_empty("page_token")?,
            )?;
            Ok(json::page(
                "runs",
                runs.iter().map(json::run).collect(),
                next,
            ))
        }
        ("GET", ["metrics", "get-history"]) => {
            let (points, next) = state.store.metric_history(
                &p.run_id()?,
                &p.required("metric_key")?,
                p.int("max_results")?,
                &p.string_or_empty("page_token")?,
            )?;
            Ok(json::page(
                "metrics",
                points.iter().map(json::metric).collect(),
                next,
            ))
        }
        ("GET", ["metrics", "get-history-bulk-interval"]) => bulk_interval(state, &p),
        ("POST", ["experiments", "search-datasets"]) => search_datasets(state, &p),
        ("POST", ["runs", "log-inputs"]) => {
            let mut datasets = Vec::new();
            for d in p.objects("datasets")? {
                let ds = d.object("dataset")?.ok_or_else(|| d.missing("dataset"))?;
                datasets.push(pb::DatasetInput {
                    tags: d
                        .key_values("tags")?
                        .into_iter()
                        .map(|t| pb::InputTag {
                            key: t.key,
                            value: t.value,
                        })
                        .collect(),
                    dataset: Some(pb::Dataset {
                        name: ds.required("name")?,
                        digest: ds.required("digest")?,
                        source_type: ds.required("source_type")?,
                        source: ds.required("source")?,
                        schema: ds.string_or_empty("schema")?,
                        profile: ds.string_or_empty("profile")?,
                    }),
                });
            }
            let models = p
                .objects("models")?
                .iter()
                .map(|m| m.required("model_id"))
                .collect::<Result<Vec<_>, _>>()?;
            done(
                state,
                Command::LogInputs {
                    run_id: p.run_id()?,
                    datasets,
                    models,
                },
            )
            .await
        }
        ("POST", ["runs", "outputs"]) => {
            let models = p
                .objects("models")?
                .iter()
                .map(|m| Ok((m.required("model_id")?, m.int("step")?.unwrap_or(0))))
                .collect::<Result<Vec<_>, Error>>()?;
            done(
                state,
                Command::LogOutputs {
                    run_id: p.run_id()?,
                    models,
                },
            )
            .await
        }
        ("POST", ["runs", "log-model"]) => {
            done(
                state,
                Command::AppendModelHistory {
                    run_id: p.run_id()?,
                    model_json: p.required("model_json")?,
                },
            )
            .await
        }
        ("GET", ["artifacts", "list"]) => {
            let run = state.store.get_run(&p.run_id()?)?;
            let sub = p.string_or_empty("path")?;
            let rel = artifact_rel(&run.artifact_uri)?;
            let dir = if sub.is_empty() {
                rel.clone()
            } else {
                format!("{rel}/{sub}")
            };
            let files = state.artifacts.list(&dir).await?;
            let mut out = json::page(
                "files",
                files.iter().map(|f| json::file_info(f, &sub)).collect(),
                None,
            );
            out["root_uri"] = json!(run.artifact_uri);
            Ok(out)
        }
        ("POST", ["logged-models"]) => expect_model(
            write(
                state,
                Command::CreateLoggedModel {
                    experiment_id: p.required("experiment_id")?,
                    name: p.string_or_empty("name")?,
                    model_type: p.string_or_empty("model_type")?,
                    source_run_id: p.string_or_empty("source_run_id")?,
                    params: p.key_values("params")?,
                    tags: p.key_values("tags")?,
                },
            )
            .await?,
        ),
        ("POST", ["logged-models", "search"]) => super::models::search(state, &p),
        ("GET", ["logged-models", id]) => {
            let m = state
                .store
                .get_logged_model(id, p.bool("allow_deleted")?.unwrap_or(false))?;
            Ok(json!({ "model": json::logged_model(&m) }))
        }
        ("PATCH", ["logged-models", id]) => expect_model(
            write(
                state,
                Command::FinalizeLoggedModel {
                    model_id: id.to_string(),
                    status: p
                        .enumeration("status", LOGGED_MODEL_STATUS)?
                        .ok_or_else(|| p.missing("status"))?,
                    status_message: p.string_or_empty("status_message")?,
                },
            )
            .await?,
        ),
        ("DELETE", ["logged-models", id]) => {
            done(
                state,
                Command::DeleteLoggedModel {
                    model_id: id.to_string(),
                },
            )
            .await
        }
        ("PATCH", ["logged-models", id, "tags"]) => {
            write(
                state,
                Command::SetLoggedModelTags {
                    model_id: id.to_string(),
                    tags: p.key_values("tags")?,
                },
            )
            .await?;
            let m = state.store.get_logged_model(id, false)?;
            Ok(json!({ "model": json::logged_model(&m) }))
        }
        ("DELETE", ["logged-models", id, "tags", key]) => {
            done(
                state,
                Command::DeleteLoggedModelTag {
                    model_id: id.to_string(),
                    key: key.to_string(),
                },
            )
            .await
        }
        ("POST", ["logged-models", id, "params"]) => {
            done(
                state,
                Command::LogLoggedModelParams {
                    model_id: id.to_string(),
                    params: p.key_values("params")?,
                },
            )
            .await
        }
        ("GET", ["logged-models", id, "artifacts", "directories"]) => {
            let m = state.store.get_logged_model(id, false)?;
            let sub = p.string_or_empty("artifact_directory_path")?;
            let rel = artifact_rel(&m.artifact_uri)?;
            let dir = if sub.is_empty() {
                rel
            } else {
                format!("{rel}/{sub}")
            };
            let files = state.artifacts.list(&dir).await?;
            let mut out = json::page(
                "files",
                files.iter().map(|f| json::file_info(f, &sub)).collect(),
                None,
            );
            out["root_uri"] = json!(m.artifact_uri);
            Ok(out)
        }
        _ => Err(endpoint_not_found(method, path)),
    }
}

/// Most experiments `search-datasets` takes, as MLflow.
const SEARCH_DATASETS_MAX_EXPERIMENTS: usize = 20;

/// MLflow's `SearchDatasets` (the UI's dataset list): the distinct (name, digest,
/// context) of the dataset inputs of the experiments' active runs.
fn search_datasets(state: &State, p: &Params) -> Result<Value, Error> {
    let ids = p.strings("experiment_ids")?;
    if ids.is_empty() || ids.len() > SEARCH_DATASETS_MAX_EXPERIMENTS {
        return Err(Error::invalid(format!(
            "SearchDatasets request must specify between 1 and {SEARCH_DATASETS_MAX_EXPERIMENTS} experiment_ids. Received {} experiment_ids.",
            ids.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut token = String::new();
    loop {
        let (runs, next) = state.store.search_runs(
            &ids,
            crate::domain::ViewType::ActiveOnly,
            "",
            &[],
            Some(50_000),
            &token,
        )?;
        for r in &runs {
            for d in &r.dataset_inputs {
                let Some(ds) = &d.dataset else { continue };
                let context = d
                    .tags
                    .iter()
                    .find(|t| t.key == crate::domain::INPUT_TAG_CONTEXT)
                    .map(|t| t.value.clone());
                seen.insert((
                    r.experiment_id.to_string(),
                    ds.name.clone(),
                    ds.digest.clone(),
                    context,
                ));
            }
        }
        match next {
            Some(t) => token = t,
            None => break,
        }
    }
    let summaries = seen
        .into_iter()
        .map(|(experiment_id, name, digest, context)| {
            let mut v = json!({ "experiment_id": experiment_id, "name": name, "digest": digest });
            if let Some(c) = context {
                v["context"] = json!(c);
            }
            v
        })
        .collect();
    Ok(json::page("dataset_summaries", summaries, None))
}

/// The path under the artifact root of an `mlflow-artifacts:/...` URI.
pub(crate) fn artifact_rel(uri: &str) -> Result<String, Error> {
    uri.strip_prefix("mlflow-artifacts:/")
        .map(|p| p.trim_start_matches('/').to_string())
        .ok_or_else(|| Error::invalid(format!("artifacts at {uri} are not served by this server")))
}

/// MLflow's `GetMetricHistoryBulkInterval`: for up to 100 runs, the points of one metric
/// between two steps, each run's sampled evenly down to `max_results` (keeping the
/// first and last).
fn bulk_interval(state: &State, p: &Params) -> Result<Value, Error> {
    let run_ids = p.strings("run_ids")?;
    if run_ids.is_empty() {
        return Err(validation::missing("run_ids"));
    }
    if run_ids.len() > BULK_MAX_RUNS {
        return Err(Error::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {BULK_MAX_RUNS} run_ids. Received {} run_ids.",
            run_ids.len()
        )));
    }
    let key = p.required("metric_key")?;
    let (start, end) = (p.int("start_step")?, p.int("end_step")?);
    if start.is_some() != end.is_some() {
        return Err(Error::invalid(
            "If either start step or end step are specified, both must be specified.",
        ));
    }
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(Error::invalid("end_step must be greater than start_step. "));
    }
    let max = p.int("max_results")?.unwrap_or(BULK_MAX_RESULTS);
    if !(1..=BULK_MAX_RESULTS).contains(&max) {
        return Err(Error::invalid(format!(
            "max_results must be between 1 and {BULK_MAX_RESULTS}."
        )));
    }
    let max = usize::try_from(max).unwrap_or(1);
    let mut out = Vec::new();
    for run_id in &run_ids {
        let (points, _) = state.store.metric_history(run_id, &key, None, "")?;
        let mut points: Vec<MetricPoint> = points
            .into_iter()
            .filter(|m| start.is_none_or(|s| m.step >= s) && end.is_none_or(|e| m.step <= e))
            .collect();
        points.sort_by(|a, b| a.step.cmp(&b.step).then(a.timestamp.cmp(&b.timestamp)));
        let n = points.len();
        let chosen: Vec<&MetricPoint> = if n <= max {
            points.iter().collect()
        } else {
            let mut idx: Vec<usize> = (0..max).map(|i| i * (n - 1) / (max - 1).max(1)).collect();
            idx.dedup();
            idx.into_iter().map(|i| &points[i]).collect()
        };
        for m in chosen {
            let mut v = json::metric(m);
            v["run_id"] = json!(run_id);
            out.push(v);
        }
    }
    Ok(json::page("metrics", out, None))
}
