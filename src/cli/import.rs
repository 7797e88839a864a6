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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::http::{Client, Refused};
use crate::server::BoxError;

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
const SERVER_TAGS: [&str; 1] = [crate::domain::TAG_ROOT_RUN_ID];

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

/// Reads any MLflow-compatible server.
struct Source<'a>(&'a Client);

impl Source<'_> {
    async fn experiments(&self, wanted: &[String]) -> Result<Vec<Value>, BoxError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut body = json!({"max_results": PAGE, "view_type": "ALL"});
            if !token.is_empty() {
                body["page_token"] = json!(token);
            }
            let page = self
                .0
                .json("POST", "/api/2.0/mlflow/experiments/search", Some(&body))
                .await?;
            out.extend(list(&page, "experiments").cloned());
            token = text(&page, "next_page_token");
            if token.is_empty() {
                break;
            }
        }
        if !wanted.is_empty() {
            out.retain(|e| {
                wanted
                    .iter()
                    .any(|w| *w == text(e, "name") || *w == text(e, "experiment_id"))
            });
            for w in wanted {
                if !out
                    .iter()
                    .any(|e| *w == text(e, "name") || *w == text(e, "experiment_id"))
                {
                    return Err(format!("the source has no experiment {w:?}").into());
                }
            }
        }
        Ok(out)
    }

    async fn runs(&self, experiment_id: &str) -> Result<Vec<Value>, BoxError> {
        let mut out = Vec::new();
        let mut token = String::new();
        let mut seen = BTreeSet::new();
        loop {
            let mut body = json!({"experiment_ids": [experiment_id], "run_view_type": "ALL", "max_results": PAGE});
            if !token.is_empty() {
                body["page_token"] = json!(token);
            }
            let page = self
                .0
                .json("POST", "/api/2.0/mlflow/runs/search", Some(&body))
                .await?;
            let mut fresh = 0;
            for r in list(&page, "runs") {
                // A server whose paging repeats runs (FastTrackML's offsets can) gives
                // each run once.
                if seen.insert(text(&r["info"], "run_id")) {
                    out.push(r.clone());
                    fresh += 1;
                }
            }
            token = text(&page, "next_page_token");
            if token.is_empty() || fresh == 0 {
                break;
            }
        }
        Ok(out)
    }

    async fn history(&self, run_id: &str, key: &str) -> Result<Vec<Point>, BoxError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut path = format!(
                "/api/2.0/mlflow/metrics/get-history?run_id={}&metric_key={}&max_results={HISTORY_PAGE}",
                enc(run_id),
                enc(key)
            );
            if !token.is_empty() {
                path.push_str(&format!("&page_token={}", enc(&token)));
            }
            let page = self.0.json("GET", &path, None).await?;
            out.extend(list(&page, "metrics").map(Point::of));
            token = text(&page, "next_page_token");
            if token.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    async fn logged_models(&self, experiment_id: &str) -> Result<Vec<Value>, BoxError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut body = json!({"experiment_ids": [experiment_id], "max_results": 100});
            if !token.is_empty() {
                body["page_token"] = json!(token);
            }
            let page = match self
                .0
                .json("POST", "/api/2.0/mlflow/logged-models/search", Some(&body))
                .await
            {
                Ok(p) => p,
                // A server without logged models (MLflow 2, FastTrackML) has none to copy.
                Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 404) => {
                    return Ok(vec![]);
                }
                Err(e) => return Err(e),
            };
            out.extend(list(&page, "models").cloned());
            token = text(&page, "next_page_token");
            if token.is_empty() {
                break;
            }
        }
        Ok(out)
    }
}

/// The artifact proxy's path of an `mlflow-artifacts:` URI (`mlflow-artifacts:/1/abc/artifacts`
/// → `1/abc/artifacts`); `None` for a location the API does not serve.
fn proxied(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let rest = rest.trim_start_matches('/');
    // `mlflow-artifacts://host:port/path` names a server; the path is what matters.
    let rest = if uri.starts_with("mlflow-artifacts://") {
        rest.split_once('/').map_or("", |(_, p)| p)
    } else {
        rest
    };
    Some(rest.trim_end_matches('/').to_string())
}

/// Where a source's files are read from: its artifact proxy (`mlflow-artifacts:`
/// locations), or, for a run whose files the server stores elsewhere (`file://` on the
/// server's disk, as FastTrackML keeps them), the run's listing and download endpoints.
enum Files {
    Proxy(String),
    Run(String),
}

impl Files {
    fn of(uri: &str, run_id: Option<&str>) -> Option<Files> {
        match (proxied(uri), run_id) {
            (Some(dir), _) => Some(Files::Proxy(dir)),
            (None, Some(run)) => Some(Files::Run(run.to_string())),
            (None, None) => None,
        }
    }

    async fn list(&self, c: &Client) -> Result<BTreeMap<String, u64>, BoxError> {
        match self {
            Files::Proxy(dir) => artifact_files(c, dir).await,
            Files::Run(run) => run_files(c, run).await,
        }
    }

    async fn get(&self, c: &Client, rel: &str) -> Result<bytes::Bytes, BoxError> {
        match self {
            Files::Proxy(dir) => download(c, dir, rel).await,
            Files::Run(run) => {
                // FastTrackML serves `artifacts/get`; mlflow server `get-artifact`.
                for path in [
                    format!(
                        "/api/2.0/mlflow/artifacts/get?run_uuid={}&path={}",
                        enc(run),
                        enc(rel)
                    ),
                    format!("/get-artifact?run_uuid={}&path={}", enc(run), enc(rel)),
                ] {
                    let (status, body) = c.send("GET", &path, None, vec![]).await?;
                    if status == 200 {
                        return Ok(body);
                    }
                }
                Err(format!("run {run}: cannot download {rel}").into())
            }
        }
    }
}

/// A listed file's size (0 when the server gives none, or a negative one).
fn size_of(f: &Value) -> u64 {
    f.get("file_size")
        .and_then(int)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// Every file of a run, through MLflow's `ListArtifacts`: relative path → size.
async fn run_files(c: &Client, run_id: &str) -> Result<BTreeMap<String, u64>, BoxError> {
    let mut out = BTreeMap::new();
    let mut pending = vec![String::new()];
    while let Some(sub) = pending.pop() {
        let page = c
            .json(
                "GET",
                &format!(
                    "/api/2.0/mlflow/artifacts/list?run_id={}&path={}",
                    enc(run_id),
                    enc(&sub)
                ),
                None,
            )
            .await?;
        for f in list(&page, "files") {
            let rel = text(f, "path");
            if f.get("is_dir").and_then(Value::as_bool) == Some(true) {
                pending.push(rel);
            } else {
                out.insert(rel, size_of(f));
            }
        }
    }
    Ok(out)
}

/// Every file under `dir` on a server's artifact proxy: relative path → size.
async fn artifact_files(c: &Client, dir: &str) -> Result<BTreeMap<String, u64>, BoxError> {
    let mut out = BTreeMap::new();
    let mut pending = vec![String::new()];
    while let Some(sub) = pending.pop() {
        let full = if sub.is_empty() {
            dir.to_string()
        } else {
            format!("{dir}/{sub}")
        };
        let page = c
            .json(
                "GET",
                &format!("/api/2.0/mlflow-artifacts/artifacts?path={}", enc(&full)),
                None,
            )
            .await?;
        for f in list(&page, "files") {
            let name = text(f, "path");
            let name = name.rsplit('/').next().unwrap_or(&name).to_string();
            let rel = if sub.is_empty() {
                name
            } else {
                format!("{sub}/{name}")
            };
            if f.get("is_dir").and_then(Value::as_bool) == Some(true) {
                pending.push(rel);
            } else {
                out.insert(rel, size_of(f));
            }
        }
    }
    Ok(out)
}

fn artifact_path(dir: &str, rel: &str) -> String {
    format!(
        "/api/2.0/mlflow-artifacts/artifacts/{}",
        format!("{dir}/{rel}")
            .split('/')
            .map(enc)
            .collect::<Vec<_>>()
            .join("/")
    )
}

async fn download(c: &Client, dir: &str, rel: &str) -> Result<bytes::Bytes, BoxError> {
    let (status, body) = c
        .send("GET", &artifact_path(dir, rel), None, vec![])
        .await?;
    if status != 200 {
        return Err(format!("downloading {dir}/{rel}: HTTP {status}").into());
    }
    Ok(body)
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

/// Everything shared by the tasks of one import.
struct Import {
    from: Client,
    to: Client,
    summary: Summary,
    bars: Bars,
}

/// One progress bar per phase, on stderr when it is a terminal.
struct Bars {
    _multi: indicatif::MultiProgress,
    runs: indicatif::ProgressBar,
    points: indicatif::ProgressBar,
    artifacts: indicatif::ProgressBar,
}

impl Bars {
    fn new(show: bool) -> Bars {
        let multi = indicatif::MultiProgress::with_draw_target(if show {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        });
        let style = |t: &str| {
            indicatif::ProgressStyle::with_template(t)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        };
        let runs = multi.add(indicatif::ProgressBar::new(0));
        runs.set_style(style(
            "runs      {bar:30} {pos}/{len} ({per_sec}, {elapsed})",
        ));
        let points = multi.add(indicatif::ProgressBar::new_spinner());
        points.set_style(style("points    {pos} copied ({per_sec})"));
        let artifacts = multi.add(indicatif::ProgressBar::new_spinner());
        artifacts.set_style(style("artifacts {bytes} copied ({bytes_per_sec})"));
        Bars {
            _multi: multi,
            runs,
            points,
            artifacts,
        }
    }
}

impl Import {
    fn tick(&self) {
        self.bars
            .points
            .set_position(self.summary.points.load(Ordering::Relaxed));
        self.bars
            .artifacts
            .set_position(self.summary.artifact_bytes.load(Ordering::Relaxed));
    }

    /// The target's experiment for a source experiment, created or merged; its id.
    async fn experiment(&self, e: &Value) -> Result<String, BoxError> {
        let name = text(e, "name");
        let tags = pairs(e, "tags");
        let id = self
            .to
            .json(
                "POST",
                "/api/arbor/v1/import/experiment",
                Some(&json!({
                    "name": name,
                    "tags": pairs_json(&tags),
                    "creation_time": e.get("creation_time").and_then(int).unwrap_or(0),
                    "last_update_time": e.get("last_update_time").and_then(int).unwrap_or(0),
                })),
            )
            .await?;
        let id = text(&id, "experiment_id");
        let have = self
            .to
            .json(
                "GET",
                &format!("/api/2.0/mlflow/experiments/get?experiment_id={id}"),
                None,
            )
            .await?;
        let have_tags = pairs(&have["experiment"], "tags");
        if text(&have["experiment"], "lifecycle_stage") == "deleted" {
            self.to
                .json(
                    "POST",
                    "/api/2.0/mlflow/experiments/restore",
                    Some(&json!({"experiment_id": id})),
                )
                .await?;
        }
        for (k, v) in &tags {
            if have_tags.get(k) != Some(v) {
                self.to
                    .json(
                        "POST",
                        "/api/2.0/mlflow/experiments/set-experiment-tag",
                        Some(&json!({"experiment_id": id, "key": k, "value": v})),
                    )
                    .await?;
            }
        }
        Summary::add(&self.summary.experiments, 1);
        Ok(id)
    }

    /// One run: created with its id if missing, then whatever differs.
    async fn run(&self, r: &Value, experiment_id: &str) -> Result<(), BoxError> {
        let info = &r["info"];
        let run_id = text(info, "run_id");
        let mut tags = pairs(&r["data"], "tags");
        for t in SERVER_TAGS {
            tags.remove(t);
        }
        let answer = self
            .to
            .json(
                "POST",
                "/api/arbor/v1/import/run",
                Some(&json!({
                    "run_id": run_id,
                    "experiment_id": experiment_id,
                    "user_id": text(info, "user_id"),
                    "run_name": text(info, "run_name"),
                    "start_time": info.get("start_time").and_then(int),
                    "tags": pairs_json(&tags),
                })),
            )
            .await?;
        let created = answer.get("created").and_then(Value::as_bool) == Some(true);
        if created {
            Summary::add(&self.summary.runs_created, 1);
        }
        let have = &answer["run"];
        let deleted_here = text(&have["info"], "lifecycle_stage") == "deleted";
        if deleted_here {
            self.post("runs/restore", json!({"run_id": run_id})).await?;
        }
        // Tags and params that differ or are missing.
        let have_tags = pairs(&have["data"], "tags");
        let tag_changes: BTreeMap<String, String> = tags
            .iter()
            .filter(|(k, v)| have_tags.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let have_params = pairs(&have["data"], "params");
        let params: BTreeMap<String, String> = pairs(&r["data"], "params")
            .into_iter()
            .filter(|(k, _)| !have_params.contains_key(k))
            .collect();
        let params: Vec<(String, String)> = params.into_iter().collect();
        for chunk in params.chunks(BATCH_PARAMS) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.post(
                "runs/log-batch",
                json!({"run_id": run_id, "params": params}),
            )
            .await?;
            Summary::add(&self.summary.params_and_tags, chunk.len() as u64);
        }
        for (k, v) in &tag_changes {
            self.post(
                "runs/set-tag",
                json!({"run_id": run_id, "key": k, "value": v}),
            )
            .await?;
            Summary::add(&self.summary.params_and_tags, 1);
        }
        // Every metric's history, less what is there.
        let keys: BTreeSet<String> = list(&r["data"], "metrics")
            .map(|m| text(m, "key"))
            .collect();
        for key in keys {
            let source = Source(&self.from).history(&run_id, &key).await?;
            let have = if created {
                vec![]
            } else {
                Source(&self.to).history(&run_id, &key).await?
            };
            let todo = missing(&source, &have);
            log_points(&self.to, &run_id, &key, &todo, &self.summary).await?;
            self.tick();
        }
        // Dataset inputs not there yet.
        let have_inputs: BTreeSet<(String, String)> = list(&have["inputs"], "dataset_inputs")
            .map(|d| (text(&d["dataset"], "name"), text(&d["dataset"], "digest")))
            .collect();
        let inputs: Vec<Value> = list(&r["inputs"], "dataset_inputs")
            .filter(|d| {
                !have_inputs.contains(&(text(&d["dataset"], "name"), text(&d["dataset"], "digest")))
            })
            .cloned()
            .collect();
        if !inputs.is_empty() {
            self.post(
                "runs/log-inputs",
                json!({"run_id": run_id, "datasets": inputs}),
            )
            .await?;
        }
        // Status and end time.
        let (status, end) = (text(info, "status"), info.get("end_time").and_then(int));
        let have_info = &have["info"];
        if status != text(have_info, "status") || end != have_info.get("end_time").and_then(int) {
            let mut body = json!({"run_id": run_id, "status": status});
            if let Some(end) = end {
                body["end_time"] = json!(end);
            }
            self.post("runs/update", body).await?;
        }
        copy_artifacts(
            &self.from,
            &text(info, "artifact_uri"),
            Some(&run_id),
            &self.to,
            &text(have_info, "artifact_uri"),
            &self.summary,
        )
        .await?;
        self.tick();
        if text(info, "lifecycle_stage") == "deleted" {
            self.post("runs/delete", json!({"run_id": run_id})).await?;
        }
        Summary::add(&self.summary.runs, 1);
        Ok(())
    }

    async fn post(&self, rpc: &str, body: Value) -> Result<Value, BoxError> {
        self.to
            .json("POST", &format!("/api/2.0/mlflow/{rpc}"), Some(&body))
            .await
    }

    /// A logged model, with its id, tags, status and files.
    async fn logged_model(&self, m: &Value, experiment_id: &str) -> Result<(), BoxError> {
        let info = &m["info"];
        let id = text(info, "model_id");
        let tags = pairs(info, "tags");
        let answer = self
            .to
            .json(
                "POST",
                "/api/arbor/v1/import/logged-model",
                Some(&json!({
                    "model_id": id,
                    "experiment_id": experiment_id,
                    "name": text(info, "name"),
                    "model_type": text(info, "model_type"),
                    "source_run_id": text(info, "source_run_id"),
                    "params": pairs_json(&pairs(&m["data"], "params")),
                    "tags": pairs_json(&tags),
                    "metrics": list(&m["data"], "metrics").cloned().collect::<Vec<_>>(),
                })),
            )
            .await?;
        let have = &answer["model"]["info"];
        let have_tags = pairs(have, "tags");
        let changed: BTreeMap<&String, &String> = tags
            .iter()
            .filter(|(k, v)| have_tags.get(*k) != Some(*v))
            .collect();
        if !changed.is_empty() {
            let tags: Vec<Value> = changed
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.to
                .json(
                    "PATCH",
                    &format!("/api/2.0/mlflow/logged-models/{}/tags", enc(&id)),
                    Some(&json!({"tags": tags})),
                )
                .await?;
        }
        copy_artifacts(
            &self.from,
            &text(info, "artifact_uri"),
            None,
            &self.to,
            &text(have, "artifact_uri"),
            &self.summary,
        )
        .await?;
        let status = info.get("status").cloned().unwrap_or(Value::Null);
        if status != have.get("status").cloned().unwrap_or(Value::Null) && !status.is_null() {
            self.to
                .json(
                    "PATCH",
                    &format!("/api/2.0/mlflow/logged-models/{}", enc(&id)),
                    Some(&json!({"model_id": id, "status": status})),
                )
                .await?;
        }
        Summary::add(&self.summary.logged_models, 1);
        Ok(())
    }
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

/// Copies the chosen experiments of `from` (any MLflow-compatible server) into the
/// Arbor at `to`.
pub async fn import(
    from: Client,
    to: Client,
    options: &Options,
) -> Result<Arc<ImportResult>, BoxError> {
    let imp = Arc::new(Import {
        from,
        to,
        summary: Summary::default(),
        bars: Bars::new(options.progress),
    });
    let experiments = Source(&imp.from).experiments(&options.experiments).await?;
    let mut work = Vec::new();
    let mut deleted_experiments = Vec::new();
    for e in &experiments {
        let target = imp.experiment(e).await?;
        if text(e, "lifecycle_stage") == "deleted" {
            deleted_experiments.push(target.clone());
        }
        let runs = Source(&imp.from).runs(&text(e, "experiment_id")).await?;
        imp.bars.runs.inc_length(runs.len() as u64);
        work.extend(runs.into_iter().map(|r| (r, target.clone())));
    }
    let shared = imp.clone();
    each(work, options.jobs, move |(run, target)| {
        let imp = shared.clone();
        Box::pin(async move {
            let id = text(&run["info"], "run_id");
            imp.run(&run, &target)
                .await
                .map_err(|e| -> BoxError { format!("run {id}: {e}").into() })?;
            imp.bars.runs.inc(1);
            Ok(())
        })
    })
    .await?;
    for e in &experiments {
        let name = text(e, "name");
        let target = experiment_named(&imp.to, &name)
            .await?
            .ok_or_else(|| format!("experiment {name:?} vanished during the import"))?;
        let target = text(&target, "experiment_id");
        for m in Source(&imp.from)
            .logged_models(&text(e, "experiment_id"))
            .await?
        {
            imp.logged_model(&m, &target).await?;
        }
    }
    for id in deleted_experiments {
        imp.post("experiments/delete", json!({"experiment_id": id}))
            .await?;
    }
    imp.bars.runs.finish();
    imp.bars.points.finish();
    imp.bars.artifacts.finish();
    Ok(Arc::new(ImportResult(imp)))
}

/// The summary of a finished import.
pub struct ImportResult(Arc<Import>);

impl ImportResult {
    pub fn summary(&self) -> &Summary {
        &self.0.summary
    }
}

/// Compares the chosen experiments of `source` with `arbor` run by run: params, tags,
/// status, times, lifecycle, every history, artifact sizes and SHA-256. Returns the
/// differences, in words (none: they match).
pub async fn verify(
    source: &Client,
    arbor: &Client,
    options: &Options,
) -> Result<Vec<String>, BoxError> {
    let mut diffs = Vec::new();
    for e in Source(source).experiments(&options.experiments).await? {
        let name = text(&e, "name");
        let Some(target) = experiment_named(arbor, &name).await? else {
            diffs.push(format!("experiment {name:?}: missing"));
            continue;
        };
        let target_exp = &target;
        if text(&e, "lifecycle_stage") != text(target_exp, "lifecycle_stage") {
            diffs.push(format!("experiment {name:?}: lifecycle stage differs"));
        }
        let target_tags = pairs(target_exp, "tags");
        for (k, v) in pairs(&e, "tags") {
            if target_tags.get(&k) != Some(&v) {
                diffs.push(format!("experiment {name:?}: tag {k} differs"));
            }
        }
        for r in Source(source).runs(&text(&e, "experiment_id")).await? {
            let id = text(&r["info"], "run_id");
            let have = match arbor
                .json(
                    "GET",
                    &format!("/api/2.0/mlflow/runs/get?run_id={}", enc(&id)),
                    None,
                )
                .await
            {
                Ok(h) => h["run"].clone(),
                Err(_) => {
                    diffs.push(format!("run {id}: missing"));
                    continue;
                }
            };
            diffs.extend(compare_run(source, arbor, &r, &have).await?);
        }
    }
    Ok(diffs)
}

async fn compare_run(
    source: &Client,
    arbor: &Client,
    r: &Value,
    have: &Value,
) -> Result<Vec<String>, BoxError> {
    let id = text(&r["info"], "run_id");
    let mut diffs = Vec::new();
    for field in ["status", "lifecycle_stage", "run_name", "user_id"] {
        if text(&r["info"], field) != text(&have["info"], field) {
            diffs.push(format!("run {id}: {field} differs"));
        }
    }
    for field in ["start_time", "end_time"] {
        if r["info"].get(field).and_then(int) != have["info"].get(field).and_then(int) {
            diffs.push(format!("run {id}: {field} differs"));
        }
    }
    if pairs(&r["data"], "params") != pairs(&have["data"], "params") {
        diffs.push(format!("run {id}: params differ"));
    }
    let have_tags = pairs(&have["data"], "tags");
    for (k, v) in pairs(&r["data"], "tags") {
        if !SERVER_TAGS.contains(&k.as_str()) && have_tags.get(&k) != Some(&v) {
            diffs.push(format!("run {id}: tag {k} differs"));
        }
    }
    let keys: BTreeSet<String> = list(&r["data"], "metrics")
        .map(|m| text(m, "key"))
        .collect();
    let have_keys: BTreeSet<String> = list(&have["data"], "metrics")
        .map(|m| text(m, "key"))
        .collect();
    if keys != have_keys {
        diffs.push(format!("run {id}: metric keys differ"));
    }
    for key in keys {
        let mut a = Source(source).history(&id, &key).await?;
        let mut b = Source(arbor).history(&id, &key).await?;
        // Arbor answers exact repeats of a point once, as its histories are sets.
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        if a != b {
            diffs.push(format!(
                "run {id}: metric {key}: {} points in the source, {} here",
                a.len(),
                b.len()
            ));
        }
    }
    if let (Some(src), Some(dst)) = (
        Files::of(&text(&r["info"], "artifact_uri"), Some(&id)),
        proxied(&text(&have["info"], "artifact_uri")),
    ) {
        let a = src.list(source).await?;
        let b = artifact_files(arbor, &dst).await?;
        if a != b {
            diffs.push(format!("run {id}: artifact files or sizes differ"));
        } else {
            for rel in a.keys() {
                let x = Sha256::digest(src.get(source, rel).await?);
                let y = Sha256::digest(download(arbor, &dst, rel).await?);
                if x != y {
                    diffs.push(format!("run {id}: artifact {rel} differs"));
                }
            }
        }
    }
    Ok(diffs)
}

/// Replays the chosen experiments of `from` (Arbor, or any MLflow-compatible server)
/// into `to`, which makes new run ids: parents first, so `mlflow.parentRunId` tags name
/// the new ids. The summary's mapping says which run became which.
pub async fn export(from: Client, to: Client, options: &Options) -> Result<Summary, BoxError> {
    let summary = Summary::default();
    let source = Source(&from);
    for e in source.experiments(&options.experiments).await? {
        let name = text(&e, "name");
        let target = match experiment_named(&to, &name).await? {
            Some(t) => text(&t, "experiment_id"),
            None => {
                let created = to
                    .json(
                        "POST",
                        "/api/2.0/mlflow/experiments/create",
                        Some(&json!({"name": name, "tags": pairs_json(&pairs(&e, "tags"))})),
                    )
                    .await?;
                text(&created, "experiment_id")
            }
        };
        Summary::add(&summary.experiments, 1);
        let mut runs = source.runs(&text(&e, "experiment_id")).await?;
        // Parents before children: by depth in the source's tree.
        let parent_of: HashMap<String, String> = runs
            .iter()
            .map(|r| {
                (
                    text(&r["info"], "run_id"),
                    pairs(&r["data"], "tags")
                        .remove(crate::domain::TAG_PARENT_RUN_ID)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let depth = |id: &str| {
            let mut d = 0;
            let mut at = id.to_string();
            while let Some(p) = parent_of.get(&at).filter(|p| !p.is_empty()) {
                d += 1;
                at = p.clone();
                if d > 10_000 {
                    break;
                }
            }
            d
        };
        runs.sort_by_key(|r| depth(&text(&r["info"], "run_id")));
        for r in runs {
            export_run(&from, &to, &r, &target, &summary).await?;
        }
    }
    Ok(summary)
}

async fn export_run(
    from: &Client,
    to: &Client,
    r: &Value,
    experiment_id: &str,
    summary: &Summary,
) -> Result<(), BoxError> {
    let info = &r["info"];
    let old = text(info, "run_id");
    let mut tags = pairs(&r["data"], "tags");
    for t in SERVER_TAGS {
        tags.remove(t);
    }
    if let Some(parent) = tags.get(crate::domain::TAG_PARENT_RUN_ID).cloned() {
        let mapped = summary
            .mapping
            .lock()
            .ok()
            .and_then(|m| m.get(&parent).cloned());
        if let Some(new_parent) = mapped {
            tags.insert(crate::domain::TAG_PARENT_RUN_ID.into(), new_parent);
        }
    }
    let created = to
        .json(
            "POST",
            "/api/2.0/mlflow/runs/create",
            Some(&json!({
                "experiment_id": experiment_id,
                "user_id": text(info, "user_id"),
                "run_name": text(info, "run_name"),
                "start_time": info.get("start_time").and_then(int),
                "tags": pairs_json(&tags),
            })),
        )
        .await?;
    let new_info = &created["run"]["info"];
    let new = text(new_info, "run_id");
    if let Ok(mut m) = summary.mapping.lock() {
        m.insert(old.clone(), new.clone());
    }
    let params: Vec<(String, String)> = pairs(&r["data"], "params").into_iter().collect();
    for chunk in params.chunks(BATCH_PARAMS) {
        let params: Vec<Value> = chunk
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        to.json(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            Some(&json!({"run_id": new, "params": params})),
        )
        .await?;
    }
    let keys: BTreeSet<String> = list(&r["data"], "metrics")
        .map(|m| text(m, "key"))
        .collect();
    for key in keys {
        let points = Source(from).history(&old, &key).await?;
        log_points(to, &new, &key, &points, summary).await?;
    }
    let inputs: Vec<Value> = list(&r["inputs"], "dataset_inputs").cloned().collect();
    if !inputs.is_empty() {
        to.json(
            "POST",
            "/api/2.0/mlflow/runs/log-inputs",
            Some(&json!({"run_id": new, "datasets": inputs})),
        )
        .await?;
    }
    let mut update = json!({"run_id": new, "status": text(info, "status")});
    if let Some(end) = info.get("end_time").and_then(int) {
        update["end_time"] = json!(end);
    }
    to.json("POST", "/api/2.0/mlflow/runs/update", Some(&update))
        .await?;
    copy_artifacts(
        from,
        &text(info, "artifact_uri"),
        Some(&old),
        to,
        &text(new_info, "artifact_uri"),
        summary,
    )
    .await?;
    if text(info, "lifecycle_stage") == "deleted" {
        to.json(
            "POST",
            "/api/2.0/mlflow/runs/delete",
            Some(&json!({"run_id": new})),
        )
        .await?;
    }
    Summary::add(&summary.runs, 1);
    Ok(())
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
