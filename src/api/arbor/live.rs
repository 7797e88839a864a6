//! Arbor's own read routes under `/api/arbor/v1`, for its live page and any HTTP client:
//! the run tree (`HierarchyService` over REST, in MLflow's JSON shapes) and a metric's
//! history sampled down to what a chart can show, as of a sequence number that a live
//! stream continues from.
//!
//! - `GET runs/tree?run_id=&max_depth=&run_view_type=`: `{"root": node}`, where a node is
//!   `{"run": <MLflow Run>, "children": [node...], "child_count": N}`;
//! - `GET runs/children?run_id=&max_results=&page_token=&run_view_type=`:
//!   `{"runs": [...], "next_page_token": ...}`, in start-time order;
//! - `GET runs/ancestors?run_id=`: `{"ancestors": [RunInfo...]}`, the parent first;
//! - `GET runs/by-path?experiment_id=&path=root&path=child...` (or `POST` with
//!   `{"experiment_id", "path": [...]}`): `{"run": <MLflow Run>}`, the active root named
//!   `path[0]`, its active child named `path[1]`, and so on (the newest where names
//!   repeat); `RESOURCE_DOES_NOT_EXIST` names the first step with no such run;
//! - `GET metrics/sampled?run_id=&metric_key=&max_points=&x_axis=step|time&min_x=&max_x=`:
//!   `{"seq", "total", "sampled", "points": [{"step","timestamp","value"}]}`, ordered
//!   along the x axis. With more than `max_points` points in range, each of
//!   `max_points / 4` equal slices of the range keeps its first, last, lowest and highest
//!   point, so a line drawn from them looks like the whole. `seq` is the last event the
//!   answer includes: a stream from `seq + 1` continues it with no gap and no repeat.
//!   Values are true values (NaN and ±Infinity as strings), as on the live stream.

use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::Routes;
use crate::api::mlflow::request::{self, Mlflow, required};
use crate::api::mlflow::response::{Run, RunInfo, TrueDouble};
use crate::api::mlflow::runs::run_id;
use crate::api::mlflow::{Shared, json};
use crate::auth::Need;
use crate::domain::{Error, ViewType};
use crate::hierarchy::TreeNode;
use crate::projection::history::Point;

/// Points a sampled history returns unless asked for fewer or more.
const SAMPLED_DEFAULT_POINTS: i64 = 2_000;
/// The most a sampled history returns (a chart is a few thousand pixels wide).
const SAMPLED_MAX_POINTS: usize = 100_000;

pub(super) fn routes() -> Routes {
    Routes::new()
        .route("/runs/tree", get(tree))
        .route("/runs/children", get(children))
        .route("/runs/ancestors", get(ancestors))
        .route("/runs/by-path", get(by_path).post(by_path))
        .route("/metrics/sampled", get(sampled))
}

#[derive(Deserialize, Debug)]
struct RunRequest {
    #[serde(default, deserialize_with = "request::string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "request::int64")]
    max_depth: Option<i64>,
    #[serde(default, deserialize_with = "request::int64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "request::string")]
    page_token: Option<String>,
    #[serde(default, deserialize_with = "request::enumeration")]
    run_view_type: Option<ViewType>,
}

#[derive(Serialize)]
struct Node<'a> {
    run: Run<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    children: Vec<Node<'a>>,
    child_count: u32,
}

impl<'a> From<&'a TreeNode> for Node<'a> {
    fn from(n: &'a TreeNode) -> Self {
        Node {
            run: Run::from(&n.run),
            children: n.children.iter().map(Node::from).collect(),
            child_count: n.child_count,
        }
    }
}

async fn tree(state: Shared, Mlflow(r): Mlflow<RunRequest>) -> Result<Response, Error> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let max_depth = match r.max_depth {
        None => None,
        Some(d) => Some(u32::try_from(d).map_err(|_| {
            Error::invalid(format!(
                "Invalid value {d} for parameter 'max_depth' supplied: it must be 0 or more"
            ))
        })?),
    };
    let root = state.store.on_run(&id, Need::Read)?.run_tree(
        &id,
        max_depth,
        r.run_view_type.unwrap_or_default(),
        &|run| state.store.sees(run),
    )?;
    #[derive(Serialize)]
    struct Tree<'a> {
        root: Node<'a>,
    }
    json(&Tree {
        root: Node::from(&root),
    })
}

async fn children(state: Shared, Mlflow(r): Mlflow<RunRequest>) -> Result<Response, Error> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let (runs, next) = state.store.on_run(&id, Need::Read)?.children(
        &id,
        r.run_view_type.unwrap_or_default(),
        &|run| state.store.sees(run),
        r.max_results,
        &r.page_token.unwrap_or_default(),
    )?;
    #[derive(Serialize)]
    struct Children<'a> {
        runs: Vec<Run<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<String>,
    }
    json(&Children {
        runs: runs.iter().map(Run::from).collect(),
        next_page_token: next,
    })
}

async fn ancestors(state: Shared, Mlflow(r): Mlflow<RunRequest>) -> Result<Response, Error> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let ancestors = state
        .store
        .on_run(&id, Need::Read)?
        .ancestors(&id, &|run| state.store.sees(run))?;
    #[derive(Serialize)]
    struct Ancestors<'a> {
        ancestors: Vec<RunInfo<'a>>,
    }
    json(&Ancestors {
        ancestors: ancestors.iter().map(RunInfo::from).collect(),
    })
}

#[derive(Deserialize, Debug)]
struct PathRequest {
    #[serde(default, deserialize_with = "request::string")]
    experiment_id: Option<String>,
    #[serde(default, deserialize_with = "request::strings")]
    path: Vec<String>,
}

/// `{"run": <MLflow Run>}`: the run at a path of names, from the root down.
async fn by_path(state: Shared, Mlflow(r): Mlflow<PathRequest>) -> Result<Response, Error> {
    let experiment_id = required("experiment_id", r.experiment_id)?;
    let run = state
        .store
        .on_experiment(&experiment_id, Need::Read)?
        .run_at_path(&experiment_id, &r.path, &|run| state.store.sees(run))?;
    #[derive(Serialize)]
    struct Found<'a> {
        run: Run<'a>,
    }
    json(&Found {
        run: Run::from(&run),
    })
}

#[derive(Deserialize, Debug)]
struct SampledRequest {
    #[serde(default, deserialize_with = "request::string")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "key")]
    metric_key: Option<String>,
    #[serde(default, deserialize_with = "request::int64")]
    max_points: Option<i64>,
    #[serde(default, deserialize_with = "request::string")]
    x_axis: Option<String>,
    #[serde(default, deserialize_with = "request::int64")]
    min_x: Option<i64>,
    #[serde(default, deserialize_with = "request::int64")]
    max_x: Option<i64>,
}

/// What a chart's x axis shows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Axis {
    Step,
    Time,
}

impl Axis {
    fn of(&self, p: &Point) -> i64 {
        match self {
            Axis::Step => p.step,
            Axis::Time => p.timestamp,
        }
    }
}

#[derive(Serialize)]
struct SampledPoint {
    step: i64,
    timestamp: i64,
    value: TrueDouble,
}

async fn sampled(state: Shared, Mlflow(r): Mlflow<SampledRequest>) -> Result<Response, Error> {
    let id = run_id(r.run_id, r.run_uuid)?;
    let key = required("metric_key", r.metric_key)?;
    let axis = match r.x_axis.as_deref() {
        None | Some("step") => Axis::Step,
        Some("time") => Axis::Time,
        Some(other) => {
            return Err(Error::invalid(format!(
                "Invalid value '{other}' for parameter 'x_axis' supplied: use 'step' or 'time'"
            )));
        }
    };
    let max_points = r.max_points.unwrap_or(SAMPLED_DEFAULT_POINTS);
    let max_points = usize::try_from(max_points)
        .ok()
        .filter(|n| (4..=SAMPLED_MAX_POINTS).contains(n))
        .ok_or_else(|| {
            Error::invalid(format!(
                "Invalid value {max_points} for parameter 'max_points' supplied: it must be between 4 and {SAMPLED_MAX_POINTS}"
            ))
        })?;
    let range = (r.min_x.unwrap_or(i64::MIN), r.max_x.unwrap_or(i64::MAX));
    if range.0 > range.1 {
        return Err(Error::invalid("min_x must not be greater than max_x"));
    }
    let store = state.store.on_run(&id, Need::Read)?.clone();
    let (points, seq) = tokio::task::spawn_blocking(move || store.metric_history_at(&id, &key))
        .await
        .map_err(|e| Error::Corrupt(format!("history read failed: {e}")))??;
    let (total, kept, sampled) = sample(points, axis, range, max_points);
    #[derive(Serialize)]
    struct Sampled {
        seq: u64,
        total: usize,
        sampled: bool,
        points: Vec<SampledPoint>,
    }
    json(&Sampled {
        seq,
        total,
        sampled,
        points: kept
            .into_iter()
            .map(|p| SampledPoint {
                step: p.step,
                timestamp: p.timestamp,
                value: TrueDouble(p.value),
            })
            .collect(),
    })
}

/// The points in `range` along `axis`, in axis order, reduced to at most `max_points`
/// when there are more (first, last, lowest and highest of each of `max_points / 4`
/// equal slices of the range). Returns (points in range, points kept, whether reduced).
fn sample(
    mut points: Vec<Point>,
    axis: Axis,
    (lo, hi): (i64, i64),
    max_points: usize,
) -> (usize, Vec<Point>, bool) {
    points.retain(|p| (lo..=hi).contains(&axis.of(p)));
    // The history is in (timestamp, step) order: the time axis is already sorted.
    if axis == Axis::Step {
        points.sort_by_key(|p| (p.step, p.timestamp));
    }
    let total = points.len();
    if total <= max_points {
        return (total, points, false);
    }
    // Slices in exact integer arithmetic: x spans up to the whole of i64.
    let first_x = i128::from(axis.of(&points[0]));
    let span = i128::from(axis.of(&points[total - 1])) - first_x + 1;
    let slices = i128::try_from((max_points / 4).max(1)).unwrap_or(1);
    let slice_of = |p: &Point| (i128::from(axis.of(p)) - first_x) * slices / span;
    let mut keep = Vec::with_capacity(max_points);
    let mut start = 0;
    while start < total {
        let slice = slice_of(&points[start]);
        let mut end = start + 1;
        while end < total && slice_of(&points[end]) == slice {
            end += 1;
        }
        let (mut low, mut high) = (None::<usize>, None::<usize>);
        for i in start..end {
            let v = points[i].value;
            if v.is_nan() {
                continue;
            }
            if low.is_none_or(|l| v < points[l].value) {
                low = Some(i);
            }
            if high.is_none_or(|h| v > points[h].value) {
                high = Some(i);
            }
        }
        let mut picked = [Some(start), low, high, Some(end - 1)];
        picked.sort();
        let mut last = None;
        for i in picked.into_iter().flatten() {
            if last != Some(i) {
                keep.push(points[i]);
                last = Some(i);
            }
        }
        start = end;
    }
    (total, keep, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(values: &[f64]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| Point {
                timestamp: 1_000 + i as i64,
                step: i as i64,
                value,
            })
            .collect()
    }

    #[test]
    fn few_points_come_back_whole_and_in_range() {
        let (total, kept, sampled) = sample(pts(&[1.0, 2.0, 3.0, 4.0]), Axis::Step, (1, 2), 100);
        assert_eq!((total, sampled), (2, false));
        assert_eq!(kept.iter().map(|p| p.step).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn each_slice_keeps_first_last_min_and_max() {
        // 1,000 points in 10 slices of 100: a spike and a dip in the third slice.
        let mut values: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        values[250] = 1e6;
        values[260] = -1e6;
        values[270] = f64::NAN;
        let (total, kept, sampled) = sample(pts(&values), Axis::Step, (i64::MIN, i64::MAX), 40);
        assert!(sampled);
        assert_eq!(total, 1000);
        assert!(kept.len() <= 40);
        let steps: Vec<i64> = kept.iter().map(|p| p.step).collect();
        for must in [0, 99, 100, 199, 200, 250, 260, 299, 999] {
            assert!(steps.contains(&must), "step {must} missing from {steps:?}");
        }
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "in order: {steps:?}");
    }

    #[test]
    fn the_time_axis_orders_by_timestamp() {
        let mut p = pts(&[1.0; 1000]);
        p.reverse();
        for (i, point) in p.iter_mut().enumerate() {
            point.timestamp = i as i64;
        }
        let (_, kept, _) = sample(p, Axis::Time, (i64::MIN, i64::MAX), 8);
        let times: Vec<i64> = kept.iter().map(|p| p.timestamp).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert_eq!((times[0], *times.last().unwrap()), (0, 999));
    }
}
