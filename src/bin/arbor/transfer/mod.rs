//! `arbor import` and `arbor export`: moving tracking data between Arbor and any
//! MLflow-compatible server (`mlflow server`, FastTrackML, Arbor itself) through their
//! public REST APIs only.
//!
//! Import keeps the source's run ids, names, times and logged-model ids (through
//! `/api/arbor/v1/import/...`), and copies everything else through MLflow's own
//! endpoints after comparing with what Arbor already has: an import run again, or
//! resumed after it was interrupted, copies only what is missing or changed, and never
//! appends a history twice. Export replays into a server that makes its own run ids, and
//! prints the mapping.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::http::{Client, Refused};
use arbor::server::BoxError;
use source::{Files, Source, artifact_files, artifact_path, proxied};

mod export;
mod import;
mod source;
mod verify;

pub use export::main as export;
pub use import::main as import;

/// Runs and models per search page (MLflow's largest for runs is 50,000; 1,000 keeps
/// answers small and works on every server).
const PAGE: i64 = 1000;
/// Points per history page asked of the source.
const HISTORY_PAGE: i64 = 25_000;
/// Points per `log-batch` (MLflow's limit).
const BATCH_POINTS: usize = 1000;
/// Params per `log-batch` (MLflow's limit).
const BATCH_PARAMS: usize = 100;
/// Tags the target keeps itself.
const SERVER_TAGS: [&str; 1] = [arbor::domain::TAG_ROOT_RUN_ID];

/// What to copy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Experiment names or ids; empty: all.
    pub experiments: Vec<String>,
    /// Runs copied at once.
    pub jobs: usize,
    /// Progress bars on stderr.
    pub progress: bool,
}

/// What an import or export did.
#[derive(Debug, Default)]
pub struct Summary {
    pub experiments: AtomicU64,
    pub runs: AtomicU64,
    pub runs_created: AtomicU64,
    pub points: AtomicU64,
    pub params_and_tags: AtomicU64,
    pub artifact_files: AtomicU64,
    pub artifact_bytes: AtomicU64,
    pub logged_models: AtomicU64,
    /// Things that could not be copied, in words.
    pub skipped: std::sync::Mutex<Vec<String>>,
    /// Export: source run id → new run id.
    pub mapping: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Summary {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn skip(&self, what: String) {
        if let Ok(mut s) = self.skipped.lock() {
            s.push(what);
        }
    }
}

/// A number MLflow's JSON gives as a number or as text (int64 in proto JSON).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A metric value: a number, or `"NaN"`/`"Infinity"`/`"-Infinity"` as text.
fn float(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => match s.as_str() {
            "Infinity" | "inf" => f64::INFINITY,
            "-Infinity" | "-inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or(f64::NAN),
        },
        _ => f64::NAN,
    }
}

fn text(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// `[{key, value}]` as a map.
fn pairs(v: &Value, key: &str) -> BTreeMap<String, String> {
    list(v, key)
        .map(|p| (text(p, "key"), text(p, "value")))
        .collect()
}

fn pairs_json(map: &BTreeMap<String, String>) -> Value {
    Value::Array(
        map.iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One point, comparable: NaNs are one value, as Arbor stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Point {
    timestamp: i64,
    step: i64,
    bits: u64,
}

impl Point {
    fn of(m: &Value) -> Point {
        let v = float(m.get("value").unwrap_or(&Value::Null));
        Point {
            timestamp: m.get("timestamp").and_then(int).unwrap_or(0),
            step: m.get("step").and_then(int).unwrap_or(0),
            bits: if v.is_nan() {
                f64::NAN.to_bits()
            } else {
                v.to_bits()
            },
        }
    }

    fn value(&self) -> Value {
        let v = f64::from_bits(self.bits);
        if v.is_nan() {
            json!("NaN")
        } else if v == f64::INFINITY {
            json!("Infinity")
        } else if v == f64::NEG_INFINITY {
            json!("-Infinity")
        } else {
            json!(v)
        }
    }
}

/// The experiment named `name` on a server, if there is one (any other failure is an
/// error, not an absence).
async fn experiment_named(c: &Client, name: &str) -> Result<Option<Value>, BoxError> {
    let path = format!(
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
        enc(name)
    );
    match c.json("GET", &path, None).await {
        Ok(found) => Ok(Some(found["experiment"].clone())),
        Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Copies the files at `from_uri` (a run's, when `run_id` is given) on `from` that
/// `to_uri` on `to` lacks (or holds with another size).
async fn copy_artifacts(
    from: &Client,
    from_uri: &str,
    run_id: Option<&str>,
    to: &Client,
    to_uri: &str,
    summary: &Summary,
) -> Result<(), BoxError> {
    let (Some(src), Some(dst)) = (Files::of(from_uri, run_id), proxied(to_uri)) else {
        summary.skip(format!(
            "artifacts at {from_uri}: not served through the artifact proxy"
        ));
        return Ok(());
    };
    let have = artifact_files(to, &dst).await?;
    for (rel, size) in src.list(from).await? {
        if have.get(&rel) == Some(&size) {
            continue;
        }
        let bytes = src.get(from, &rel).await?;
        let (status, body) = to
            .send(
                "PUT",
                &artifact_path(&dst, &rel),
                Some("application/octet-stream"),
                bytes.to_vec(),
            )
            .await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "uploading {dst}/{rel}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        Summary::add(&summary.artifact_files, 1);
        Summary::add(&summary.artifact_bytes, bytes.len() as u64);
    }
    Ok(())
}

/// `log-batch` in MLflow's limits.
async fn log_points(
    c: &Client,
    run_id: &str,
    key: &str,
    points: &[Point],
    summary: &Summary,
) -> Result<(), BoxError> {
    for chunk in points.chunks(BATCH_POINTS) {
        let metrics: Vec<Value> = chunk
            .iter()
            .map(|p| json!({"key": key, "value": p.value(), "timestamp": p.timestamp, "step": p.step}))
            .collect();
        c.json(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            Some(&json!({"run_id": run_id, "metrics": metrics})),
        )
        .await?;
        Summary::add(&summary.points, chunk.len() as u64);
    }
    Ok(())
}

/// Points of `source` that `have` lacks, counting repeats, in the source's order.
fn missing(source: &[Point], have: &[Point]) -> Vec<Point> {
    let mut counts: HashMap<Point, usize> = HashMap::new();
    for p in have {
        *counts.entry(*p).or_default() += 1;
    }
    source
        .iter()
        .filter(|p| match counts.get_mut(p) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .copied()
        .collect()
}

/// Copies one source run `r` into the target's run `have` (which the caller made or
/// found), writing only what `have` lacks or holds otherwise: the params, the `tags`
/// (the source's, as the caller wants them on the target), every history less the points
/// already there (none are looked for when the run was just `created`), dataset inputs,
/// status and end time, artifact files, and the deleted state. Import and export both
/// copy a run here; `progress` is called as histories and files arrive.
#[allow(clippy::too_many_arguments)]
async fn copy_run(
    from: &Client,
    to: &Client,
    r: &Value,
    tags: &BTreeMap<String, String>,
    have: &Value,
    created: bool,
    summary: &Summary,
    progress: &(dyn Fn() + Sync),
) -> Result<(), BoxError> {
    let info = &r["info"];
    let source_id = text(info, "run_id");
    let have_info = &have["info"];
    let run_id = text(have_info, "run_id");
    let post = |rpc: &str, body: Value| {
        let path = format!("/api/2.0/mlflow/{rpc}");
        async move { to.json("POST", &path, Some(&body)).await }
    };
    if text(have_info, "lifecycle_stage") == "deleted" {
        post("runs/restore", json!({"run_id": run_id})).await?;
    }
    let have_params = pairs(&have["data"], "params");
    let params: Vec<(String, String)> = pairs(&r["data"], "params")
        .into_iter()
        .filter(|(k, _)| !have_params.contains_key(k))
        .collect();
    for chunk in params.chunks(BATCH_PARAMS) {
        let params: Vec<Value> = chunk
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        post(
            "runs/log-batch",
            json!({"run_id": run_id, "params": params}),
        )
        .await?;
        Summary::add(&summary.params_and_tags, chunk.len() as u64);
    }
    let have_tags = pairs(&have["data"], "tags");
    for (k, v) in tags.iter().filter(|(k, v)| have_tags.get(*k) != Some(*v)) {
        post(
            "runs/set-tag",
            json!({"run_id": run_id, "key": k, "value": v}),
        )
        .await?;
        Summary::add(&summary.params_and_tags, 1);
    }
    let keys: BTreeSet<String> = list(&r["data"], "metrics")
        .map(|m| text(m, "key"))
        .collect();
    for key in keys {
        let points = Source(from).history(&source_id, &key).await?;
        let there = if created {
            vec![]
        } else {
            Source(to).history(&run_id, &key).await?
        };
        log_points(to, &run_id, &key, &missing(&points, &there), summary).await?;
        progress();
    }
    let dataset = |d: &Value| (text(&d["dataset"], "name"), text(&d["dataset"], "digest"));
    let have_inputs: BTreeSet<(String, String)> = list(&have["inputs"], "dataset_inputs")
        .map(dataset)
        .collect();
    let inputs: Vec<Value> = list(&r["inputs"], "dataset_inputs")
        .filter(|d| !have_inputs.contains(&dataset(d)))
        .cloned()
        .collect();
    if !inputs.is_empty() {
        post(
            "runs/log-inputs",
            json!({"run_id": run_id, "datasets": inputs}),
        )
        .await?;
    }
    let (status, end) = (text(info, "status"), info.get("end_time").and_then(int));
    if status != text(have_info, "status") || end != have_info.get("end_time").and_then(int) {
        let mut body = json!({"run_id": run_id, "status": status});
        if let Some(end) = end {
            body["end_time"] = json!(end);
        }
        post("runs/update", body).await?;
    }
    copy_artifacts(
        from,
        &text(info, "artifact_uri"),
        Some(&source_id),
        to,
        &text(have_info, "artifact_uri"),
        summary,
    )
    .await?;
    progress();
    if text(info, "lifecycle_stage") == "deleted" {
        post("runs/delete", json!({"run_id": run_id})).await?;
    }
    Summary::add(&summary.runs, 1);
    Ok(())
}

/// Runs `work` for each item, `jobs` at a time; the first error ends it.
async fn each<T: Send + 'static>(
    items: Vec<T>,
    jobs: usize,
    work: impl Fn(
        T,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>,
) -> Result<(), BoxError> {
    let mut set = tokio::task::JoinSet::new();
    let mut items = items.into_iter();
    let mut first_error = None;
    loop {
        while set.len() < jobs.max(1) && first_error.is_none() {
            match items.next() {
                Some(item) => {
                    set.spawn(work(item));
                }
                None => break,
            }
        }
        match set.join_next().await {
            None => break,
            Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => {
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                first_error.get_or_insert(Box::new(e));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(timestamp: i64, step: i64, v: f64) -> Point {
        Point {
            timestamp,
            step,
            bits: if v.is_nan() {
                f64::NAN.to_bits()
            } else {
                v.to_bits()
            },
        }
    }

    /// What is missing counts repeats and keeps the source's order; NaNs match NaNs.
    #[test]
    fn missing_points_are_a_multiset_difference() {
        let source = [p(1, 0, 1.0), p(1, 0, 1.0), p(2, 1, f64::NAN), p(3, -1, 2.0)];
        assert_eq!(missing(&source, &[]), source.to_vec());
        assert_eq!(
            missing(&source, &[p(1, 0, 1.0), p(2, 1, f64::NAN)]),
            vec![p(1, 0, 1.0), p(3, -1, 2.0)]
        );
        assert!(missing(&source, &source).is_empty());
    }

    /// Values come as numbers or as MLflow's text for the non-finite ones, and go back
    /// the same way.
    #[test]
    fn points_read_and_write_mlflow_json() {
        for (v, out) in [
            (json!(0.5), json!(0.5)),
            (json!("NaN"), json!("NaN")),
            (json!("Infinity"), json!("Infinity")),
            (json!("-Infinity"), json!("-Infinity")),
        ] {
            let point = Point::of(&json!({"value": v, "timestamp": "17", "step": -2}));
            assert_eq!((point.timestamp, point.step), (17, -2));
            assert_eq!(point.value(), out);
        }
    }

    /// Artifact URIs the proxy serves, and those it does not.
    #[test]
    fn proxied_locations() {
        assert_eq!(
            proxied("mlflow-artifacts:/1/abc/artifacts").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(
            proxied("mlflow-artifacts://host:5000/1/abc/artifacts/").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(proxied("file:///tmp/x"), None);
        assert_eq!(proxied("s3://bucket/x"), None);
    }
}
