//! MLflow REST workloads, identical for every MLflow-compatible server, so Arbor can be
//! set beside `mlflow server` and others on one machine: creating a run hierarchy,
//! sequential single `log-metric` calls, `log-batch` ingest with 1 and 8 clients,
//! `runs/search` over a three-level hierarchy (by root, by param and metric ordered by
//! the metric, by name pattern, all runs page by page) and `get-history` of a long
//! metric. Each search also records how many runs it returned, to compare servers.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::{ms, percentile, proc_status_mib};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection, reopened when the server closed it while idle
/// (uvicorn, behind `mlflow server`, does after a few seconds).
pub struct RestClient {
    sender: Sender,
    host: String,
}

async fn open(host: &str) -> Result<Sender, BoxError> {
    let stream = tokio::net::TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

impl RestClient {
    pub async fn connect(url: &str) -> Result<RestClient, BoxError> {
        let host = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Ok(RestClient {
            sender: open(&host).await?,
            host,
        })
    }

    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, BoxError> {
        self.call_as(method, path, body).await
    }

    /// A call whose answer is decoded into `T` as it is parsed, as a typed client would
    /// (an mlflow client builds its objects from the JSON, not a tree of values).
    pub async fn call_as<T: serde::de::DeserializeOwned>(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, BoxError> {
        let (status, out) = self.send(method, path, body.map(|b| b.to_string())).await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&out)
            )
            .into());
        }
        let out: &[u8] = if out.is_empty() { b"{}" } else { &out };
        Ok(serde_json::from_slice(out)?)
    }

    /// GETs a text answer (`/metrics`).
    pub async fn text(&mut self, path: &str) -> Result<String, BoxError> {
        let (_, out) = self.send("GET", path, None).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// POSTs a prepared JSON body and returns the status, whatever it is.
    pub async fn raw(&mut self, path: &str, body: String) -> Result<u16, BoxError> {
        Ok(self.send("POST", path, Some(body)).await?.0)
    }

    /// Sends one request (a JSON body if any) and returns the status and the whole
    /// answer, on a connection reopened first if the server closed it.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        json_body: Option<String>,
    ) -> Result<(u16, Bytes), BoxError> {
        // Nothing was sent on a closed connection, so reopening is safe for any request.
        if self.sender.is_closed() || self.sender.ready().await.is_err() {
            self.sender = open(&self.host).await?;
        }
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if json_body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let body = Full::new(json_body.map(Bytes::from).unwrap_or_default());
        let resp = self.sender.send_request(req.body(body)?).await?;
        let status = resp.status().as_u16();
        let out = resp.into_body().collect().await?.to_bytes();
        Ok((status, out))
    }

    async fn post(&mut self, path: &str, body: Value) -> Result<Value, BoxError> {
        self.call("POST", &format!("/api/2.0/mlflow/{path}"), Some(&body))
            .await
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &mut self,
        path_and_query: &str,
    ) -> Result<T, BoxError> {
        self.call_as("GET", &format!("/api/2.0/mlflow/{path_and_query}"), None)
            .await
    }
}

/// A page of MLflow's `GetMetricHistory` answer, every field read.
#[derive(serde::Deserialize)]
struct HistoryPage {
    #[serde(default)]
    metrics: Vec<HistoryPoint>,
    next_page_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct HistoryPoint {
    key: String,
    /// A number, or "NaN" / "Infinity" as MLflow writes those.
    value: Value,
    #[serde(default)]
    timestamp: i64,
    #[serde(default)]
    step: i64,
}

/// A metric's whole history, paged 25,000 at a time as the mlflow client pages it;
/// returns the points read.
pub async fn read_history(c: &mut RestClient, run: &str, key: &str) -> Result<usize, BoxError> {
    let mut got = 0;
    let mut token: Option<String> = None;
    loop {
        let mut q = format!("metrics/get-history?run_id={run}&metric_key={key}&max_results=25000");
        if let Some(tok) = &token {
            q.push_str(&format!("&page_token={tok}"));
        }
        let r: HistoryPage = c.get(&q).await?;
        // Every point read, as a client does: of this key, a number or MLflow's text for
        // NaN and infinities, in (timestamp, step) order within the page.
        let well_formed = r
            .metrics
            .iter()
            .all(|p| p.key == key && (p.value.is_number() || p.value.is_string()))
            && r.metrics
                .windows(2)
                .all(|w| (w[0].timestamp, w[0].step) <= (w[1].timestamp, w[1].step));
        if !well_formed {
            return Err(format!("get-history of {key}: points out of order or malformed").into());
        }
        got += r.metrics.len();
        token = r.next_page_token.filter(|s| !s.is_empty());
        if token.is_none() {
            return Ok(got);
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, Default)]
pub struct SearchResult {
    pub query: String,
    pub ms: f64,
    pub runs: usize,
}

#[derive(Debug, Clone, serde::Serialize, Default)]
pub struct RestReport {
    pub hierarchy_runs: usize,
    pub hierarchy_seconds: f64,
    pub log_metric_per_s: f64,
    pub log_metric_p50_ms: f64,
    pub log_metric_p99_ms: f64,
    pub log_batch_points_per_s_1: f64,
    pub log_batch_points_per_s_8: f64,
    pub search_runs_total: usize,
    pub search_populate_seconds: f64,
    pub searches: Vec<SearchResult>,
    pub history_points: usize,
    pub history_ms: f64,
    /// Workloads that failed on this server, with the server's answer.
    pub errors: Vec<String>,
}

impl RestReport {
    fn new() -> RestReport {
        let nan = f64::NAN;
        RestReport {
            hierarchy_seconds: nan,
            log_metric_per_s: nan,
            log_metric_p50_ms: nan,
            log_metric_p99_ms: nan,
            log_batch_points_per_s_1: nan,
            log_batch_points_per_s_8: nan,
            search_populate_seconds: nan,
            history_ms: nan,
            ..RestReport::default()
        }
    }
}

pub struct RestOptions {
    pub log_metric_calls: usize,
    pub batches_per_client: usize,
    /// Trees of 100 runs (1 root, 9 children, 90 grandchildren).
    pub search_trees: usize,
    pub history_points: usize,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn create_experiment(c: &mut RestClient, prefix: &str) -> Result<String, BoxError> {
    let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let r = c
        .post("experiments/create", json!({ "name": name }))
        .await?;
    Ok(r["experiment_id"]
        .as_str()
        .ok_or("no experiment_id")?
        .to_string())
}

async fn create_run(
    c: &mut RestClient,
    exp: &str,
    name: &str,
    start: i64,
    tags: Value,
) -> Result<String, BoxError> {
    let r = c
        .post(
            "runs/create",
            json!({ "experiment_id": exp, "run_name": name, "start_time": start, "tags": tags }),
        )
        .await?;
    Ok(r["run"]["info"]["run_id"]
        .as_str()
        .ok_or("no run_id")?
        .to_string())
}

fn batch(run: &str, start: usize, n: usize) -> Value {
    let t0 = 1_700_000_000_000i64;
    let metrics: Vec<Value> = (start..start + n)
        .map(|i| json!({ "key": "loss", "value": 1.0 / (i as f64 + 1.0), "timestamp": t0 + i as i64, "step": i }))
        .collect();
    json!({ "run_id": run, "metrics": metrics })
}

/// Creates `trees` trees of 100 runs over 8 connections, each run with params lr (5
/// values) and batch and a metric loss, tagged with its root in `mlflow.rootRunId` (as
/// Databricks and the seed workflow do; Arbor keeps that tag itself and accepts it).
async fn populate(url: &str, exp: &str, trees: usize) -> Result<Vec<String>, BoxError> {
    const LRS: [&str; 5] = ["0.1", "0.01", "0.001", "0.0001", "0.00001"];
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = RestClient::connect(url).await?;
        let exp = exp.to_string();
        tasks.push(tokio::spawn(async move {
            let mut roots = Vec::new();
            for t in (w..trees).step_by(8) {
                let mut n = 0usize;
                let mut make = async |c: &mut RestClient, name: String, parent: Option<&str>, root: Option<&str>| -> Result<String, BoxError> {
                    let k = t * 100 + n;
                    n += 1;
                    let mut tags = vec![];
                    if let Some(p) = parent {
                        tags.push(json!({ "key": "mlflow.parentRunId", "value": p }));
                    }
                    if let Some(r) = root {
                        tags.push(json!({ "key": "mlflow.rootRunId", "value": r }));
                    }
                    let id = create_run(c, &exp, &name, 1_700_000_000_000 + k as i64, Value::Array(tags)).await?;
                    let mut body = json!({
                        "run_id": id,
                        "metrics": [{ "key": "loss", "value": ((k * 7919) % 1000) as f64 / 1000.0, "timestamp": 1, "step": 1 }],
                        "params": [{ "key": "lr", "value": LRS[k % 5] }, { "key": "batch", "value": (32 << (k % 3)).to_string() }],
                    });
                    if root.is_none() {
                        body["tags"] = json!([{ "key": "mlflow.rootRunId", "value": id }]);
                    }
                    c.post("runs/log-batch", body).await?;
                    Ok(id)
                };
                let root = make(&mut c, format!("root_{t}"), None, None).await?;
                for ch in 0..9 {
                    let child = make(&mut c, format!("root_{t}/child_{ch}"), Some(&root), Some(&root)).await?;
                    for g in 0..10 {
                        make(&mut c, format!("root_{t}/child_{ch}/leaf_{g}"), Some(&child), Some(&root)).await?;
                    }
                }
                roots.push(root);
            }
            Ok::<_, BoxError>(roots)
        }));
    }
    let mut roots = Vec::new();
    for t in tasks {
        roots.extend(t.await??);
    }
    roots.sort();
    Ok(roots)
}

async fn search(
    c: &mut RestClient,
    exp: &str,
    filter: &str,
    order_by: &[&str],
    max: usize,
) -> Result<(Duration, usize), BoxError> {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = c
            .post("runs/search", json!({ "experiment_ids": [exp], "filter": filter, "order_by": order_by, "max_results": max, "run_view_type": "ACTIVE_ONLY" }))
            .await?;
        times.push(t.elapsed());
        n = r["runs"].as_array().map_or(0, Vec::len);
    }
    times.sort();
    Ok((times[times.len() / 2], n))
}

/// Runs every workload; one that fails is recorded in `errors` (its figures stay NaN,
/// null in the JSON) and the others still run.
pub async fn run(
    url: &str,
    opts: &RestOptions,
    log: impl Fn(&str),
) -> Result<RestReport, BoxError> {
    let mut report = RestReport::new();
    let mut c = RestClient::connect(url).await?;
    let exp = create_experiment(&mut c, "rest-bench").await?;
    let results = [
        (
            "writes",
            writes(url, opts, &log, &mut report, &mut c, &exp).await,
        ),
        (
            "search",
            searches(url, opts, &log, &mut report, &mut c, &exp).await,
        ),
        (
            "history",
            history(url, opts, &log, &mut report, &mut c, &exp).await,
        ),
    ];
    for (name, result) in results {
        if let Err(e) = result {
            log(&format!("{name} FAILED: {e}"));
            report.errors.push(format!("{name}: {e}"));
        }
    }
    Ok(report)
}

async fn writes(
    url: &str,
    opts: &RestOptions,
    log: &impl Fn(&str),
    report: &mut RestReport,
    c: &mut RestClient,
    exp: &str,
) -> Result<(), BoxError> {
    // Hierarchy: 1 root, 10 children, 10 grandchildren each.
    let t = Instant::now();
    let root = create_run(c, exp, "root", now_ms(), json!([])).await?;
    let mut count = 1;
    for ch in 0..10 {
        let child = create_run(
            c,
            exp,
            &format!("child_{ch}"),
            now_ms(),
            json!([{ "key": "mlflow.parentRunId", "value": root }]),
        )
        .await?;
        count += 1;
        for g in 0..10 {
            create_run(
                c,
                exp,
                &format!("child_{ch}/leaf_{g}"),
                now_ms(),
                json!([{ "key": "mlflow.parentRunId", "value": child }]),
            )
            .await?;
            count += 1;
        }
    }
    report.hierarchy_runs = count;
    report.hierarchy_seconds = t.elapsed().as_secs_f64();
    log(&format!(
        "hierarchy: {count} runs in {:.2} s",
        report.hierarchy_seconds
    ));

    // Sequential single log-metric calls.
    let run = create_run(c, exp, "log-metric", now_ms(), json!([])).await?;
    let mut lat = Vec::with_capacity(opts.log_metric_calls);
    let t = Instant::now();
    for i in 0..opts.log_metric_calls {
        let s = Instant::now();
        c.post("runs/log-metric", json!({ "run_id": run, "key": "m", "value": i as f64, "timestamp": 1_700_000_000_000i64 + i as i64, "step": i })).await?;
        lat.push(s.elapsed());
    }
    report.log_metric_per_s = opts.log_metric_calls as f64 / t.elapsed().as_secs_f64();
    lat.sort();
    report.log_metric_p50_ms = ms(percentile(&lat, 500));
    report.log_metric_p99_ms = ms(percentile(&lat, 990));
    log(&format!(
        "log-metric: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        report.log_metric_per_s, report.log_metric_p50_ms, report.log_metric_p99_ms
    ));

    // log-batch ingest, 1000 metrics a batch, 1 and 8 clients.
    for clients in [1usize, 8] {
        let mut conns = Vec::new();
        for _ in 0..clients {
            let mut c = RestClient::connect(url).await?;
            let run = create_run(&mut c, exp, "ingest", now_ms(), json!([])).await?;
            conns.push((c, run));
        }
        let batches = opts.batches_per_client;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (mut c, run) in conns {
            tasks.push(tokio::spawn(async move {
                for b in 0..batches {
                    c.post("runs/log-batch", batch(&run, b * 1000, 1000))
                        .await?;
                }
                Ok::<_, BoxError>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let rate = (clients * batches * 1000) as f64 / t.elapsed().as_secs_f64();
        if clients == 1 {
            report.log_batch_points_per_s_1 = rate;
        } else {
            report.log_batch_points_per_s_8 = rate;
        }
        log(&format!(
            "log-batch, {clients} client(s): {rate:.0} points/s"
        ));
    }

    Ok(())
}

async fn searches(
    url: &str,
    opts: &RestOptions,
    log: &impl Fn(&str),
    report: &mut RestReport,
    c: &mut RestClient,
    _exp: &str,
) -> Result<(), BoxError> {
    // Search over a three-level hierarchy.
    let sexp = create_experiment(c, "rest-search").await?;
    let t = Instant::now();
    let roots = populate(url, &sexp, opts.search_trees).await?;
    report.search_populate_seconds = t.elapsed().as_secs_f64();
    report.search_runs_total = roots.len() * 100;
    log(&format!(
        "search: created {} runs in {:.1} s",
        report.search_runs_total, report.search_populate_seconds
    ));
    let root = &roots[roots.len() / 2];
    let queries: Vec<(String, Vec<&str>, usize)> = vec![
        (format!("tags.mlflow.rootRunId = '{root}'"), vec![], 1000),
        (
            "params.lr = '0.01' and metrics.loss < 0.5".into(),
            vec!["metrics.loss ASC"],
            100,
        ),
        ("tags.mlflow.runName ILIKE '%child_1%'".into(), vec![], 1000),
    ];
    for (i, (filter, order, max)) in queries.iter().enumerate() {
        let (d, n) = search(c, &sexp, filter, order, *max).await?;
        let label = [
            "(a) rootRunId = <root>",
            "(b) lr = 0.01 and loss < 0.5 by loss, 100",
            "(c) runName ILIKE '%child_1%'",
        ][i];
        log(&format!("search {label}: {:.2} ms, {n} runs", ms(d)));
        report.searches.push(SearchResult {
            query: label.into(),
            ms: ms(d),
            runs: n,
        });
    }
    let t = Instant::now();
    let mut token: Option<String> = None;
    let mut seen = 0;
    loop {
        let mut body = json!({ "experiment_ids": [sexp], "max_results": 1000, "run_view_type": "ACTIVE_ONLY" });
        if let Some(tok) = &token {
            body["page_token"] = json!(tok);
        }
        let r = c.post("runs/search", body).await?;
        seen += r["runs"].as_array().map_or(0, Vec::len);
        token = r["next_page_token"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from);
        if token.is_none() {
            break;
        }
    }
    let d = t.elapsed();
    log(&format!(
        "search (d) all runs, 1000 a page: {:.1} ms, {seen} runs",
        ms(d)
    ));
    report.searches.push(SearchResult {
        query: "(d) all runs, 1000 a page".into(),
        ms: ms(d),
        runs: seen,
    });

    Ok(())
}

async fn history(
    _url: &str,
    opts: &RestOptions,
    log: &impl Fn(&str),
    report: &mut RestReport,
    c: &mut RestClient,
    exp: &str,
) -> Result<(), BoxError> {
    // get-history of a long metric, paged as the client does (25,000 a page).
    let run = create_run(c, exp, "history", now_ms(), json!([])).await?;
    for b in 0..opts.history_points.div_ceil(1000) {
        c.post("runs/log-batch", batch(&run, b * 1000, 1000))
            .await?;
    }
    let mut times = Vec::new();
    let mut got = 0;
    for _ in 0..3 {
        let t = Instant::now();
        got = read_history(c, &run, "loss").await?;
        times.push(t.elapsed());
    }
    times.sort();
    report.history_points = got;
    report.history_ms = ms(times[times.len() / 2]);
    log(&format!(
        "get-history: {got} points in {:.1} ms",
        report.history_ms
    ));
    Ok(())
}

/// Size of each large body in `body_memory`.
const LARGE_BODY_BYTES: usize = 15 << 20;

/// The server's peak resident memory while it reads large MLflow REST bodies: one
/// `log-batch` of about 15 MB (far over the batch limit, so refused after reading), one
/// `set-tag` whose value is about 15 MB (refused as too long), and four such batches at
/// once. Each peak is `VmHWM` after the request less `VmRSS` before it, the peak reset
/// between requests through `/proc/PID/clear_refs` (needs a server this user owns).
pub async fn body_memory(
    url: &str,
    pid: Option<u32>,
    print: impl Fn(String),
) -> Result<(), BoxError> {
    let Some(pid) = pid else {
        print("body memory: needs a server started by arbor-bench (no --server)".into());
        return Ok(());
    };
    let mut c = RestClient::connect(url).await?;
    let exp = create_experiment(&mut c, "bodies").await?;
    let run = create_run(&mut c, &exp, "bodies", now_ms(), json!([])).await?;
    let mut metrics = Vec::new();
    let mut size = 0;
    let mut i = 0usize;
    while size < LARGE_BODY_BYTES {
        let m = json!({"key": format!("metric_{}", i % 1000), "value": i as f64 * 0.5, "timestamp": 1_700_000_000_000i64 + i as i64, "step": i});
        size += m.to_string().len() + 1;
        metrics.push(m);
        i += 1;
    }
    let batch = json!({"run_id": run, "metrics": metrics}).to_string();
    let tag =
        json!({"run_id": run, "key": "big", "value": "x".repeat(LARGE_BODY_BYTES)}).to_string();
    drop(metrics);
    let reset = || std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    for (name, body, copies) in [
        ("log-batch", &batch, 1usize),
        ("set-tag", &tag, 1),
        ("log-batch", &batch, 4),
    ] {
        let path = if name == "set-tag" {
            "/api/2.0/mlflow/runs/set-tag"
        } else {
            "/api/2.0/mlflow/runs/log-batch"
        };
        reset()?;
        let before = proc_status_mib(pid, "VmRSS:").unwrap_or(f64::NAN);
        let mut tasks = Vec::new();
        for _ in 0..copies {
            let (url, body) = (url.to_string(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = RestClient::connect(&url).await?;
                let status = c.raw(path, body).await?;
                Ok::<_, BoxError>(status)
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await??);
        }
        let peak = proc_status_mib(pid, "VmHWM:").unwrap_or(f64::NAN);
        let mib = body.len() as f64 / f64::from(1 << 20);
        print(format!(
            "{copies} x {name} of {mib:.1} MiB at once (answered {statuses:?}): RSS {before:.1} MiB before, peak {peak:.1} MiB, peak rise {:.1} MiB = {:.2}x the bodies",
            peak - before,
            (peak - before) / (mib * copies as f64)
        ));
    }
    Ok(())
}
