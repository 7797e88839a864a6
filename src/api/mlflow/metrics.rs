//! `/mlflow/metrics/...`: a metric's history, paged, and MLflow's bulk interval read
//! that the UI's charts use.

use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;

use super::request::{self, Mlflow, required};
use super::response::{Metric, Page, page};
use super::runs::run_id;
use super::{Routes, Shared, json};
use crate::domain::{Error, MetricPoint, validation};

/// Most runs `get-history-bulk-interval` takes, and its largest and default page.
const BULK_MAX_RUNS: usize = 100;
const BULK_MAX_RESULTS: i64 = 2500;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/metrics/get-history", get(history))
        .route("/metrics/get-history-bulk-interval", get(bulk_interval))
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
    let (points, next) = state.store.metric_history(
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
    if r.run_ids.is_empty() {
        return Err(validation::missing("run_ids"));
    }
    if r.run_ids.len() > BULK_MAX_RUNS {
        return Err(Error::invalid(format!(
            "GetMetricHistoryBulkInterval request must specify at most {BULK_MAX_RUNS} run_ids. Received {} run_ids.",
            r.run_ids.len()
        )));
    }
    let key = required("metric_key", r.metric_key)?;
    let (start, end) = (r.start_step, r.end_step);
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
    let max = r.max_results.unwrap_or(BULK_MAX_RESULTS);
    if !(1..=BULK_MAX_RESULTS).contains(&max) {
        return Err(Error::invalid(format!(
            "max_results must be between 1 and {BULK_MAX_RESULTS}."
        )));
    }
    let max = usize::try_from(max).unwrap_or(1);
    let mut per_run: Vec<(&str, Vec<MetricPoint>)> = Vec::with_capacity(r.run_ids.len());
    for run_id in &r.run_ids {
        let (points, _) = state.store.metric_history(run_id, &key, None, "")?;
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
        per_run.push((run_id, points));
    }
    let metrics: Vec<Metric> = per_run
        .iter()
        .flat_map(|(run_id, points)| points.iter().map(|p| Metric::in_run(p, run_id)))
        .collect();
    json(&page("metrics", metrics, None))
}
