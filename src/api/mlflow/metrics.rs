//! `/mlflow/metrics/...`: a metric's history, paged, and MLflow's bulk interval read
//! that the UI's charts use.

use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::request::{self, Mlflow, required};
use super::response::{Metric, Page, page};
use super::runs::run_id;
use super::{Routes, Shared, json};
use crate::auth::Need;
use crate::domain::{Error, MetricPoint, validation};

/// Most runs `get-history-bulk-interval` takes, and its largest and default page.
const BULK_MAX_RUNS: usize = 100;
const BULK_MAX_RESULTS: i64 = 2500;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/metrics/get-history", get(history))
        .route("/metrics/get-history-bulk-interval", get(bulk_interval))
        .route("/metrics/get-history-bulk", get(bulk))
}

#[derive(Deserialize, Debug)]
struct HistoryRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "metricKey")]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "request::int64", alias = "maxResults")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "request::string", alias = "pageToken")]
    page_token: Option<String>,
}

async fn history(state: Shared, Mlflow(r): Mlflow<HistoryRequest>) -> Result<Response, Error> {
    let run_id = run_id(r.run_id, r.run_uuid)?;
    let key = required("metric_key", r.metric_key)?;
    let (points, next) = state.store.on_run(&run_id, Need::Read)?.metric_history(
        &run_id,
        &key,
        r.max_results,
        &r.page_token.unwrap_or_default(),
    )?;
    let page: Page<Metric> = page("metrics", points.iter().map(Metric::of).collect(), next);
    json(&page)
}

#[derive(Deserialize, Debug)]
struct BulkIntervalRequest {
    #[serde(default, deserialize_with = "request::strings", alias = "runIds")]
    run_ids: Vec<String>,
    #[serde(default, deserialize_with = "request::string", alias = "metricKey")]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "request::int64", alias = "startStep")]
    start_step: Option<i64>,
    #[serde(default, deserialize_with = "request::int64", alias = "endStep")]
    end_step: Option<i64>,
    #[serde(default, deserialize_with = "request::int64", alias = "maxResults")]
    max_results: Option<i64>,
}

/// MLflow's `GetMetricHistoryBulkInterval`: for up to 100 runs, the points of one metric
/// between two steps, each run's sampled evenly down to `max_results` (keeping the
/// first and last).
async fn bulk_interval(
    state: Shared,
    Mlflow(r): Mlflow<BulkIntervalRequest>,
) -> Result<Response, Error> {
    let per_run = sample_interval(
        &state.store,
        &r.run_ids,
        r.metric_key,
        (r.start_step, r.end_step),
        r.max_results,
    )?;
    let metrics: Vec<Metric> = per_run
        .iter()
        .flat_map(|(run_id, points)| points.iter().map(|p| Metric::in_run(p, run_id)))
        .collect();
    json(&page("metrics", metrics, None))
}

/// The points of `get-history-bulk-interval` (REST and GraphQL), run by run.
pub(super) fn sample_interval(
    store: &crate::auth::Access,
    run_ids: &[String],
    metric_key: Option<String>,
    (start, end): (Option<i64>, Option<i64>),
    max_results: Option<i64>,
) -> Result<Vec<(String, Vec<MetricPoint>)>, Error> {
    if run_ids.is_empty() {
        return Err(validation::missing("run_ids"));
    }
    if run_ids.len() > BULK_MAX_RUNS {
        return Err(Error::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {BULK_MAX_RUNS} run_ids. Received {} run_ids.",
            run_ids.len()
        )));
    }
    let key = required("metric_key", metric_key)?;
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
    let max = max_results.unwrap_or(BULK_MAX_RESULTS);
    if !(1..=BULK_MAX_RESULTS).contains(&max) {
        return Err(Error::invalid(format!(
            "max_results must be between 1 and {BULK_MAX_RESULTS}."
        )));
    }
    let max = usize::try_from(max).unwrap_or(1);
    let mut per_run = Vec::with_capacity(run_ids.len());
    for run_id in run_ids {
        let (points, _) = store
            .on_run(run_id, Need::Read)?
            .metric_history(run_id, &key, None, "")?;
        let mut points: Vec<MetricPoint> = points
            .into_iter()
            .filter(|m| start.is_none_or(|s| m.step >= s) && end.is_none_or(|e| m.step <= e))
            .collect();
        points.sort_by(|a, b| a.step.cmp(&b.step).then(a.timestamp.cmp(&b.timestamp)));
        let n = points.len();
        if n > max {
            let mut idx: Vec<usize> = (0..max).map(|i| i * (n - 1) / (max - 1).max(1)).collect();
            idx.dedup();
            points = idx.into_iter().map(|i| points[i].clone()).collect();
        }
        per_run.push((run_id.clone(), points));
    }
    Ok(per_run)
}

/// Most runs and points `get-history-bulk` takes, as MLflow.
const BULK_HISTORY_MAX_RUNS: usize = 100;
const BULK_HISTORY_MAX_RESULTS: i64 = 25_000;

#[derive(Deserialize, Debug)]
struct BulkRequest {
    #[serde(default, deserialize_with = "request::strings")]
    run_id: Vec<String>,
    #[serde(default, deserialize_with = "request::string")]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "request::int64")]
    max_results: Option<i64>,
}

/// MLflow's `get-history-bulk` (the UI's charts): one metric's history for several runs,
/// runs in id order, each in (timestamp, step, value) order, at most `max_results` in all.
async fn bulk(state: Shared, Mlflow(r): Mlflow<BulkRequest>) -> Result<Response, Error> {
    if r.run_id.is_empty() {
        return Err(Error::invalid(
            "GetMetricHistoryBulk request must specify at least one run_id.",
        ));
    }
    if r.run_id.len() > BULK_HISTORY_MAX_RUNS {
        return Err(Error::invalid(format!(
            "GetMetricHistoryBulk request cannot specify more than {BULK_HISTORY_MAX_RUNS} run_ids. Received {} run_ids.",
            r.run_id.len()
        )));
    }
    let Some(key) = r.metric_key else {
        return Err(Error::invalid(
            "GetMetricHistoryBulk request must specify a metric_key.",
        ));
    };
    let max = r
        .max_results
        .unwrap_or(BULK_HISTORY_MAX_RESULTS)
        .min(BULK_HISTORY_MAX_RESULTS);
    let max = usize::try_from(max).unwrap_or(0);
    let mut run_ids = r.run_id;
    run_ids.sort();
    let mut per_run = Vec::with_capacity(run_ids.len());
    for run_id in &run_ids {
        let (points, _) = state.store.on_run(run_id, Need::Read)?.metric_history(
            run_id,
            &key,
            Some(BULK_HISTORY_MAX_RESULTS),
            "",
        )?;
        per_run.push((run_id.as_str(), points));
    }
    let metrics: Vec<Metric> = per_run
        .iter()
        .flat_map(|(run_id, points)| points.iter().map(|p| Metric::in_run(p, run_id)))
        .take(max)
        .collect();
    #[derive(serde::Serialize)]
    struct Bulk<'a> {
        metrics: Vec<Metric<'a>>,
    }
    json(&Bulk { metrics })
}
