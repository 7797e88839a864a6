//! `arbor-bench`: measures a running Arbor server over gRPC and prints the figures.
//! Not a test: numbers are printed, never asserted.
//!
//! With `--server URL` it measures that server; without, it starts the `arbor` binary
//! next to itself on a temporary data directory and port 0 (and reports its memory).
//!
//! Workloads: `CreateRun` per second (1 and 8 clients), `LogBatch` ingest in points per
//! second with 1 and 8 clients (1000 points a batch), `GetMetricHistory` of 100,000
//! points (one call, and in default 25,000-point pages), `LogMetricStream` ingest (1 and
//! 8 clients), watch delivery latency (end of a `LogBatch` call to receipt by each
//! watcher, 1, 100 and 1,000 watchers, while ingesting 10,000 points/s), and server
//! memory with 1,000 watchers of which 10 read slowly; and search over 100,000 runs in
//! 1,000 three-level trees (a root, 9 children, 90 grandchildren each): by root, by param
//! and metric ordered by the metric, by name pattern, all runs page by page, and
//! `GetRunTree` of a root, with the server's memory once they are loaded.

mod rest;
mod scaling;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arbor::pb::{
    self, tracking_service_client::TrackingServiceClient, watch_metrics_request::Scope,
    watch_service_client::WatchServiceClient,
};
use clap::Parser;
use std::sync::{Arc, Mutex};
use tonic::transport::Channel;

type Client = TrackingServiceClient<Channel>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Benchmarks an Arbor server over gRPC")]
struct Args {
    /// A running server, e.g. http://127.0.0.1:5000. Absent: start one.
    #[arg(long)]
    server: Option<String>,
    /// Points per client in the ingest workloads.
    #[arg(long, default_value_t = 1_000_000)]
    points_per_client: usize,
    /// Runs created per client in the CreateRun workload.
    #[arg(long, default_value_t = 2_000)]
    runs_per_client: usize,
    /// Points in the history read workload.
    #[arg(long, default_value_t = 100_000)]
    history_points: usize,
    /// Seconds of paced ingest in each watch workload.
    #[arg(long, default_value_t = 5)]
    watch_seconds: u64,
    /// Streams: the numbers of watchers to measure delivery with.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000")]
    watchers: Vec<usize>,
    /// Which gRPC workloads to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "core,streams,search"
    )]
    workloads: Vec<Workload>,
    /// Runs in the search workload (one experiment, 1,000 trees of 3 levels).
    #[arg(long, default_value_t = 100_000)]
    search_runs: usize,
    /// Which API to load.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// REST: smaller workloads, for a run of a minute or two.
    #[arg(long)]
    quick: bool,
    /// Scaling: the run counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    scaling_runs: Vec<usize>,
    /// Scaling: the history lengths (points in one metric) to measure at.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000,10000000")]
    scaling_history: Vec<usize>,
    /// Scaling: points in the sustained ingest.
    #[arg(long, default_value_t = 100_000_000)]
    scaling_ingest_points: usize,
    /// Scaling: seconds between samples of the sustained ingest.
    #[arg(long, default_value_t = 10)]
    scaling_sample_secs: u64,
    /// REST: trees of 111 runs in the search workloads (default 100, 10 with --quick).
    #[arg(long)]
    search_trees: Option<usize>,
    /// Events: how many to write.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Replicas: a second replica of the same store (`--store postgres://...`).
    #[arg(long)]
    server_b: Option<String>,
    /// REST and scaling: also write the figures as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Protocol {
    /// Arbor's own gRPC API.
    Grpc,
    /// MLflow's REST API, for any MLflow-compatible server.
    Rest,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    /// CreateRun, LogBatch ingest, GetMetricHistory.
    Core,
    /// LogMetricStream ingest, watch delivery latency, watcher memory.
    Streams,
    /// Searches over 100,000 runs in three-level trees, GetRunTree.
    Search,
    /// The server's peak memory while it reads large MLflow REST bodies.
    Bodies,
    /// How cost grows: run counts, history lengths, a long ingest (on demand; long).
    Scaling,
    /// Two replicas of one store on PostgreSQL (`--server` and `--server-b`): ingest on
    /// one and on both, LogMetric latency, cross-replica watch delivery (on demand).
    Replicas,
    /// `--events` single-point LogMetric calls from 32 clients: a log of that many
    /// events, to measure catch-up and migrate-store on (on demand).
    Events,
}

/// Points a second in the watch workloads, as 100 batches of 100.
const WATCH_RATE_BATCHES: u64 = 100;
const WATCH_BATCH: i64 = 100;

const BATCH: usize = 1000;

struct Spawned {
    child: Child,
    _dir: tempfile::TempDir,
}

fn spawn_server() -> Result<(Spawned, String), BoxError> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("arbor");
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("ARBOR_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("arbor listening on ")
        .ok_or_else(|| format!("unexpected line {line:?}"))?
        .to_string();
    Ok((Spawned { child, _dir: dir }, format!("http://{addr}")))
}

/// How long the server is left idle before its memory is read the last time.
const IDLE_PAUSE_SECS: u64 = 5;

fn rss_mib(pid: u32) -> Option<f64> {
    proc_status_mib(pid, "VmRSS:")
}

/// A memory line of `/proc/PID/status` (`VmRSS:`, `VmHWM:`) in MiB.
fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

async fn connect(url: &str) -> Result<Client, BoxError> {
    Ok(TrackingServiceClient::connect(url.to_string())
        .await?
        .max_decoding_message_size(256 << 20))
}

async fn new_run(c: &mut Client, exp: &str) -> Result<String, BoxError> {
    let run = c
        .create_run(pb::CreateRunRequest {
            experiment_id: exp.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .run
        .and_then(|r| r.info)
        .ok_or("no run")?;
    Ok(run.run_id)
}

fn batch(run_id: &str, key: &str, start: usize) -> pb::LogBatchRequest {
    let now = 1_700_000_000_000i64;
    pb::LogBatchRequest {
        run_id: run_id.to_string(),
        metrics: (start..start + BATCH)
            .map(|i| pb::Metric {
                key: key.to_string(),
                value: 1.0 / (i as f64 + 1.0),
                timestamp: now + i as i64,
                step: i as i64,
            })
            .collect(),
        ..Default::default()
    }
}

async fn create_runs(
    url: &str,
    exp: &str,
    clients: usize,
    per_client: usize,
) -> Result<f64, BoxError> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(connect(url).await?);
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for mut c in conns {
        let exp = exp.to_string();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_client {
                new_run(&mut c, &exp).await?;
            }
            Ok::<_, BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((clients * per_client) as f64 / t.elapsed().as_secs_f64())
}

async fn ingest(
    url: &str,
    exp: &str,
    clients: usize,
    points_per_client: usize,
) -> Result<(f64, Duration), BoxError> {
    ingest_spread(&[url], exp, clients, points_per_client).await
}

/// `ingest` with the clients spread over `urls` in turn (replicas of one store).
async fn ingest_spread(
    urls: &[&str],
    exp: &str,
    clients: usize,
    points_per_client: usize,
) -> Result<(f64, Duration), BoxError> {
    let mut conns = Vec::new();
    for i in 0..clients {
        let mut c = connect(urls[i % urls.len()]).await?;
        let run = new_run(&mut c, exp).await?;
        conns.push((c, run));
    }
    let batches = points_per_client.div_ceil(BATCH);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (mut c, run) in conns {
        tasks.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for b in 0..batches {
                let req = batch(&run, "loss", b * BATCH);
                let s = Instant::now();
                c.log_batch(req).await?;
                worst = worst.max(s.elapsed());
            }
            Ok::<_, BoxError>(worst)
        }));
    }
    let mut worst = Duration::ZERO;
    for t in tasks {
        worst = worst.max(t.await??);
    }
    let points = clients * batches * BATCH;
    Ok((points as f64 / t.elapsed().as_secs_f64(), worst))
}

async fn history(
    url: &str,
    exp: &str,
    points: usize,
) -> Result<(Duration, Duration, Duration), BoxError> {
    let mut c = connect(url).await?;
    let run = new_run(&mut c, exp).await?;
    for b in 0..points.div_ceil(BATCH) {
        c.log_batch(batch(&run, "loss", b * BATCH)).await?;
    }
    let mut single = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let got = c
            .get_metric_history(pb::GetMetricHistoryRequest {
                run_id: run.clone(),
                metric_key: "loss".into(),
                max_results: i32::try_from(points).ok(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .metrics
            .len();
        single.push(t.elapsed());
        if got != points.div_ceil(BATCH) * BATCH {
            return Err(format!("history returned {got} points").into());
        }
        let t = Instant::now();
        let got = page_history(&mut c, &run, "loss").await?;
        paged.push(t.elapsed());
        if got != points.div_ceil(BATCH) * BATCH {
            return Err(format!("paged history returned {got} points").into());
        }
    }
    single.sort();
    paged.sort();
    Ok((single[0], single[single.len() / 2], paged[paged.len() / 2]))
}

async fn stream_ingest(
    url: &str,
    exp: &str,
    clients: usize,
    points_per_client: usize,
) -> Result<f64, BoxError> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        let mut c = connect(url).await?;
        let run = new_run(&mut c, exp).await?;
        conns.push((c, run));
    }
    let messages = points_per_client.div_ceil(BATCH);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (mut c, run) in conns {
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            let feeder = tokio::spawn(async move {
                for m in 0..messages {
                    let b = batch(&run, "loss", m * BATCH);
                    let msg = pb::LogMetricStreamRequest {
                        run_id: b.run_id,
                        metrics: b.metrics,
                    };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
            });
            let reply = c
                .log_metric_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            feeder.await?;
            Ok::<_, BoxError>(reply.points_committed)
        }));
    }
    let mut points = 0;
    for t in tasks {
        points += t.await??;
    }
    Ok(points as f64 / t.elapsed().as_secs_f64())
}

/// The quantile of `latencies` at `per_mille` (500: the median, 990: p99), exactly: the
/// smallest value that at least that share of them do not exceed. (An HDR histogram
/// used here before gave 0 for the median of 200,000 deliveries whose smallest was
/// 0.5 ms.)
fn percentile(latencies: &[Duration], per_mille: usize) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return Duration::ZERO;
    }
    let rank = (n * per_mille.min(1000)).div_ceil(1000);
    sorted[rank.clamp(1, n) - 1]
}

/// What the fast watchers of [`watch_latency`] saw.
struct Deliveries {
    /// From the end of the LogBatch call (the acknowledgement) to receipt.
    after_ack: Vec<Duration>,
    /// From the start of the LogBatch call to receipt: includes the commit, and shows
    /// what the acknowledgement hides when the server is saturated.
    after_send: Vec<Duration>,
    rss_open: Option<f64>,
    rss_end: Option<f64>,
}

/// Opens `watchers` watchers of one run (`slow` of them read one message every 200 ms),
/// ingests at 10,000 points/s for `seconds`, and returns the delivery latencies seen by
/// the fast watchers (end of the LogBatch call to receipt; a point that arrives before
/// its call returns counts as 0) and the server's RSS after opening the watchers and at
/// the end.
async fn watch_latency(
    url: &str,
    exp: &str,
    watchers: usize,
    slow: usize,
    seconds: u64,
    pid: Option<u32>,
) -> Result<Deliveries, BoxError> {
    let mut c = connect(url).await?;
    let run = new_run(&mut c, exp).await?;
    let batches = (seconds * WATCH_RATE_BATCHES) as usize;
    let ends: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; batches]));
    let mut channels = Vec::new();
    for _ in 0..watchers.div_ceil(100).max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(url.to_string())?
                .connect()
                .await?,
        );
    }
    let mut readers = Vec::new();
    for i in 0..watchers {
        let mut w = WatchServiceClient::new(channels[i % channels.len()].clone());
        let mut s = w
            .watch_metrics(pb::WatchMetricsRequest {
                scope: Some(Scope::RunId(run.clone())),
                keys: vec![],
                from_seq: None,
            })
            .await?
            .into_inner();
        s.message().await?; // the position marker: the watch is live
        let is_slow = i < slow;
        readers.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(batches);
            let mut points = 0usize;
            while points < batches * WATCH_BATCH as usize {
                let Some(msg) = s.message().await? else { break };
                let now = Instant::now();
                if let Some(first) = msg.series.first().and_then(|s| s.steps.first()) {
                    got.push((usize::try_from(first / WATCH_BATCH).unwrap_or(0), now));
                }
                points += msg.series.iter().map(|s| s.values.len()).sum::<usize>();
                if is_slow {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok::<_, BoxError>(got)
        }));
    }
    let rss_open = pid.and_then(rss_mib);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / WATCH_RATE_BATCHES));
    let mut starts = Vec::with_capacity(batches);
    for b in 0..batches {
        tick.tick().await;
        starts.push(Instant::now());
        let metrics = (0..WATCH_BATCH)
            .map(|i| {
                let step = b as i64 * WATCH_BATCH + i;
                pb::Metric {
                    key: "loss".into(),
                    value: 0.5,
                    timestamp: step,
                    step,
                }
            })
            .collect();
        c.log_batch(pb::LogBatchRequest {
            run_id: run.clone(),
            metrics,
            ..Default::default()
        })
        .await?;
        ends.lock().map_err(|_| "poisoned")?[b] = Some(Instant::now());
    }
    let rss_end = pid.and_then(rss_mib);
    let ends = ends.lock().map_err(|_| "poisoned")?.clone();
    let (mut after_ack, mut after_send) = (Vec::new(), Vec::new());
    for (i, r) in readers.into_iter().enumerate() {
        if i < slow {
            r.abort();
            continue;
        }
        for (b, at) in r.await?? {
            if let (Some(Some(end)), Some(start)) = (ends.get(b), starts.get(b)) {
                after_ack.push(at.saturating_duration_since(*end));
                after_send.push(at.saturating_duration_since(*start));
            }
        }
    }
    after_ack.sort();
    after_send.sort();
    Ok(Deliveries {
        after_ack,
        after_send,
        rss_open,
        rss_end,
    })
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

const LRS: [&str; 5] = ["0.1", "0.01", "0.001", "0.0001", "0.00001"];

/// Creates `total` runs as trees of 100 (1 root, 9 children, 90 grandchildren) with
/// params lr and batch and a metric loss, over 8 connections; returns the root ids.
async fn populate(url: &str, exp: &str, total: usize) -> Result<Vec<String>, BoxError> {
    let trees = total.div_ceil(100);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = connect(url).await?;
        let exp = exp.to_string();
        tasks.push(tokio::spawn(async move {
            let mut roots = Vec::new();
            let mut n;
            for t in (w..trees).step_by(8) {
                let mut make = async |name: String,
                                      parent: Option<String>,
                                      n: usize|
                       -> Result<String, BoxError> {
                    let tags = parent
                        .map(|p| {
                            vec![pb::RunTag {
                                key: "mlflow.parentRunId".into(),
                                value: p,
                            }]
                        })
                        .unwrap_or_default();
                    let run = c
                        .create_run(pb::CreateRunRequest {
                            experiment_id: exp.clone(),
                            run_name: name,
                            start_time: Some(1_700_000_000_000 + (t * 100 + n) as i64),
                            tags,
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .run
                        .and_then(|r| r.info)
                        .ok_or("no run")?;
                    let k = t * 100 + n;
                    c.log_batch(pb::LogBatchRequest {
                        run_id: run.run_id.clone(),
                        metrics: vec![pb::Metric {
                            key: "loss".into(),
                            value: ((k * 7919) % 1000) as f64 / 1000.0,
                            timestamp: 1,
                            step: 1,
                        }],
                        params: vec![
                            pb::Param {
                                key: "lr".into(),
                                value: LRS[k % 5].into(),
                            },
                            pb::Param {
                                key: "batch".into(),
                                value: (32 << (k % 3)).to_string(),
                            },
                        ],
                        tags: vec![],
                    })
                    .await?;
                    Ok(run.run_id)
                };
                let root = make(format!("root_{t}"), None, 0).await?;
                n = 1;
                for ch in 0..9 {
                    let child = make(format!("root_{t}/child_{ch}"), Some(root.clone()), n).await?;
                    n += 1;
                    for g in 0..10 {
                        make(
                            format!("root_{t}/child_{ch}/leaf_{g}"),
                            Some(child.clone()),
                            n,
                        )
                        .await?;
                        n += 1;
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
    Ok(roots)
}

async fn timed_search(
    c: &mut Client,
    exp: &str,
    filter: &str,
    order_by: &[&str],
    max: i32,
    reps: usize,
) -> Result<(Duration, usize), BoxError> {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let r = c
            .search_runs(pb::SearchRunsRequest {
                experiment_ids: vec![exp.into()],
                filter: filter.into(),
                max_results: Some(max),
                order_by: order_by.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await?
            .into_inner();
        times.push(t.elapsed());
        n = r.runs.len();
    }
    Ok((median(times), n))
}

/// Reads a metric's whole history over gRPC in the server's default pages (25,000,
/// MLflow's client page), as clients page it; returns how many points.
async fn page_history(c: &mut Client, run: &str, key: &str) -> Result<usize, BoxError> {
    let (mut token, mut got) = (String::new(), 0);
    loop {
        let page = c
            .get_metric_history(pb::GetMetricHistoryRequest {
                run_id: run.to_string(),
                metric_key: key.into(),
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        got += page.metrics.len();
        token = page.next_page_token;
        if token.is_empty() {
            return Ok(got);
        }
    }
}

/// Pages through every run of the experiment, 1,000 a page; returns how many.
async fn page_all_runs(c: &mut Client, exp: &str) -> Result<usize, BoxError> {
    let mut token = String::new();
    let mut seen = 0;
    loop {
        let page = c
            .search_runs(pb::SearchRunsRequest {
                experiment_ids: vec![exp.to_string()],
                max_results: Some(1000),
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        seen += page.runs.len();
        token = page.next_page_token;
        if token.is_empty() {
            return Ok(seen);
        }
    }
}

/// The median time of `reps` GetRunTree calls for `root`.
async fn run_tree_median(url: &str, root: &str, reps: usize) -> Result<Duration, BoxError> {
    let mut h =
        arbor::pb::hierarchy_service_client::HierarchyServiceClient::connect(url.to_string())
            .await?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        h.get_run_tree(pb::GetRunTreeRequest {
            run_id: root.to_string(),
            ..Default::default()
        })
        .await?;
        times.push(t.elapsed());
    }
    Ok(median(times))
}

async fn search_bench(url: &str, total: usize, pid: Option<u32>) -> Result<(), BoxError> {
    let mut c = connect(url).await?;
    let exp = c
        .create_experiment(pb::CreateExperimentRequest {
            name: format!("search-{}", uuid::Uuid::new_v4().simple()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .experiment_id;
    let t = Instant::now();
    let roots = populate(url, &exp, total).await?;
    println!(
        "  search: created {total} runs in {} trees in {:.1} s",
        roots.len(),
        t.elapsed().as_secs_f64()
    );
    if let Some(pid) = pid {
        println!(
            "  search: server RSS with {total} runs loaded: {:.1} MiB",
            rss_mib(pid).unwrap_or(f64::NAN)
        );
    }
    let root = &roots[roots.len() / 2];
    let (d, n) = timed_search(
        &mut c,
        &exp,
        &format!("tags.mlflow.rootRunId = '{root}'"),
        &[],
        1000,
        20,
    )
    .await?;
    println!(
        "  search (a) tags.mlflow.rootRunId = <root>: median {:.2} ms ({n} runs)",
        ms(d)
    );
    let (d, n) = timed_search(
        &mut c,
        &exp,
        "params.lr = '0.01' and metrics.loss < 0.5",
        &["metrics.loss ASC"],
        100,
        10,
    )
    .await?;
    println!(
        "  search (b) params.lr = '0.01' and metrics.loss < 0.5 order by metrics.loss, 100 results: median {:.2} ms ({n} runs)",
        ms(d)
    );
    let (d, n) = timed_search(
        &mut c,
        &exp,
        "tags.mlflow.runName ILIKE '%child_1%'",
        &[],
        1000,
        5,
    )
    .await?;
    println!(
        "  search (c) tags.mlflow.runName ILIKE '%child_1%', first 1000: median {:.2} ms ({n} runs)",
        ms(d)
    );
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let seen = page_all_runs(&mut c, &exp).await?;
        times.push(t.elapsed());
        if seen != roots.len() * 100 {
            return Err(format!("paging saw {seen} runs").into());
        }
    }
    println!(
        "  search (d) all {} runs, 1000 a page: median {:.1} ms in all",
        roots.len() * 100,
        ms(median(times))
    );
    let tree = run_tree_median(url, root, 20).await?;
    println!(
        "  GetRunTree of a root (100 runs): median {:.2} ms",
        ms(tree)
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let (spawned, url) = match &args.server {
        Some(url) => (None, url.clone()),
        None => {
            let (s, url) = spawn_server()?;
            (Some(s), url)
        }
    };
    let pid = spawned.as_ref().map(|s| s.child.id());
    // Two workers: the load generator shares this 2-core machine with the server.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = match args.protocol {
        Protocol::Rest => rt.block_on(rest_workloads(&args, &url, pid)),
        Protocol::Grpc => rt.block_on(grpc_workloads(&args, &url, pid)),
    };
    if let Some(pid) = pid {
        // Memory after the load, and after a pause with nothing to do: what the server
        // gives back when idle.
        let after = rss_mib(pid).unwrap_or(f64::NAN);
        std::thread::sleep(std::time::Duration::from_secs(IDLE_PAUSE_SECS));
        println!(
            "  server RSS after the run: {after:.1} MiB; after {IDLE_PAUSE_SECS} s idle: {:.1} MiB; peak {:.1} MiB",
            rss_mib(pid).unwrap_or(f64::NAN),
            proc_status_mib(pid, "VmHWM:").unwrap_or(f64::NAN)
        );
    }
    if let Some(mut s) = spawned {
        stop(&mut s.child);
    }
    result
}

/// SIGTERM, then waits: the server shuts down cleanly and its data directory can go.
fn stop(child: &mut Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = child.wait();
}

async fn rest_workloads(args: &Args, url: &str, pid: Option<u32>) -> Result<(), BoxError> {
    let mut opts = if args.quick {
        rest::RestOptions {
            log_metric_calls: 300,
            batches_per_client: 10,
            search_trees: 10,
            history_points: 20_000,
        }
    } else {
        rest::RestOptions {
            log_metric_calls: 2000,
            batches_per_client: 40,
            search_trees: 100,
            history_points: 100_000,
        }
    };
    if let Some(trees) = args.search_trees {
        opts.search_trees = trees;
    }
    println!("arbor-bench (MLflow REST) against {url}");
    let report = rest::run(url, &opts, |line| println!("  {line}")).await?;
    let rss = pid.and_then(rss_mib);
    if let Some(r) = rss {
        println!("  server RSS at end: {r:.1} MiB");
    }
    if let Some(path) = &args.json {
        let mut v = serde_json::to_value(&report)?;
        v["server_rss_mib"] = serde_json::json!(rss);
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}

async fn grpc_workloads(args: &Args, url: &str, pid: Option<u32>) -> Result<(), BoxError> {
    let mut c = connect(url).await?;
    let exp = c
        .create_experiment(pb::CreateExperimentRequest {
            name: format!("bench-{}", uuid::Uuid::new_v4().simple()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .experiment_id;
    println!("arbor-bench against {url}");
    if let Some(pid) = pid {
        println!(
            "  server RSS at start: {:.1} MiB",
            rss_mib(pid).unwrap_or(f64::NAN)
        );
    }
    let wants = |w: Workload| args.workloads.contains(&w);
    if wants(Workload::Core) {
        core_workloads(args, url, &exp).await?;
    }
    if wants(Workload::Streams) {
        stream_workloads(args, url, &exp, pid).await?;
    }
    if wants(Workload::Search) {
        search_bench(url, args.search_runs, pid).await?;
    }
    if wants(Workload::Replicas) {
        let b = args
            .server_b
            .as_deref()
            .ok_or("the replicas workload needs --server-b, a second replica of the store")?;
        replica_workloads(args, url, b, &exp).await?;
    }
    if wants(Workload::Events) {
        let rate = single_events(url, &exp, args.events).await?;
        println!(
            "  LogMetric, 32 clients, {} events: {rate:>12.0} events/s",
            args.events
        );
    }
    if wants(Workload::Bodies) {
        rest::body_memory(url, pid, |line| println!("  {line}")).await?;
    }
    if wants(Workload::Scaling) {
        let figures = scaling::run(
            url,
            &scaling::ScalingOptions {
                runs: args.scaling_runs.clone(),
                history: args.scaling_history.clone(),
                ingest_points: args.scaling_ingest_points,
                sample_secs: args.scaling_sample_secs,
            },
        )
        .await?;
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
        }
    }
    if let Some(pid) = pid {
        println!(
            "  server RSS at end: {:.1} MiB",
            rss_mib(pid).unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// `total` LogMetric calls (one event each) from 32 clients; events per second.
async fn single_events(url: &str, exp: &str, total: usize) -> Result<f64, BoxError> {
    const CLIENTS: usize = 32;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut c = connect(url).await?;
        let run = new_run(&mut c, exp).await?;
        let n = total / CLIENTS + usize::from(i < total % CLIENTS);
        tasks.push(tokio::spawn(async move {
            for step in 0..i64::try_from(n).unwrap_or(0) {
                c.log_metric(pb::LogMetricRequest {
                    run_id: run.clone(),
                    key: "loss".into(),
                    value: step as f64,
                    timestamp: step,
                    step,
                })
                .await?;
            }
            Ok::<_, BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / t.elapsed().as_secs_f64())
}

/// Two replicas of one shared store: LogBatch ingest with the clients on one replica and
/// spread over both, single LogMetric latency, and the delay from a write's
/// acknowledgement by replica A to its delivery to a watcher on replica B.
async fn replica_workloads(args: &Args, a: &str, b: &str, exp: &str) -> Result<(), BoxError> {
    for clients in [1, 8] {
        let per_client = if clients == 1 {
            args.points_per_client
        } else {
            args.points_per_client / 2
        };
        // One client is on one replica either way.
        let spreads = if clients == 1 {
            vec![vec![a]]
        } else {
            vec![vec![a], vec![a, b]]
        };
        for urls in spreads {
            let (rate, worst) = ingest_spread(&urls, exp, clients, per_client).await?;
            println!(
                "  LogBatch ingest, {clients} client(s) on {} replica(s), {BATCH} points a batch: {rate:>12.0} points/s (slowest batch {:.1} ms)",
                urls.len(),
                ms(worst)
            );
        }
    }
    let mut c = connect(a).await?;
    let run = new_run(&mut c, exp).await?;
    let mut lat = Vec::with_capacity(2000);
    for step in 0..2000i64 {
        let t = Instant::now();
        c.log_metric(pb::LogMetricRequest {
            run_id: run.clone(),
            key: "single".into(),
            value: step as f64,
            timestamp: step,
            step,
        })
        .await?;
        lat.push(t.elapsed());
    }
    println!(
        "  LogMetric, one at a time: p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&lat, 500)),
        ms(percentile(&lat, 990))
    );
    // Cross-replica delivery: points written through A at 200 calls/s, watched on B.
    let run = new_run(&mut c, exp).await?;
    let mut w = WatchServiceClient::new(
        tonic::transport::Endpoint::from_shared(b.to_string())?
            .connect()
            .await?,
    );
    let mut stream = w
        .watch_metrics(pb::WatchMetricsRequest {
            scope: Some(Scope::RunId(run.clone())),
            keys: vec![],
            from_seq: None,
        })
        .await?
        .into_inner();
    let calls = usize::try_from(args.watch_seconds * 200).unwrap_or(1000);
    let received = tokio::spawn(async move {
        let mut at = vec![None; calls];
        let mut got = 0;
        while got < calls {
            let Some(m) = stream.message().await? else {
                break;
            };
            let now = Instant::now();
            for s in &m.series {
                for &step in &s.steps {
                    if let Some(slot) = usize::try_from(step).ok().and_then(|i| at.get_mut(i)) {
                        *slot = Some(now);
                        got += 1;
                    }
                }
            }
        }
        Ok::<_, BoxError>(at)
    });
    let mut acked = Vec::with_capacity(calls);
    let mut sent = Vec::with_capacity(calls);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for step in 0..calls {
        tick.tick().await;
        let t = Instant::now();
        c.log_batch(pb::LogBatchRequest {
            run_id: run.clone(),
            metrics: vec![pb::Metric {
                key: "loss".into(),
                value: step as f64,
                timestamp: i64::try_from(step).unwrap_or(0),
                step: i64::try_from(step).unwrap_or(0),
            }],
            ..Default::default()
        })
        .await?;
        sent.push(t);
        acked.push(Instant::now());
    }
    let at = received.await??;
    let (mut after_ack, mut after_send) = (Vec::new(), Vec::new());
    for (i, got) in at.iter().enumerate() {
        if let Some(got) = got {
            after_ack.push(got.saturating_duration_since(acked[i]));
            after_send.push(got.saturating_duration_since(sent[i]));
        }
    }
    println!(
        "  delivery from A to a watcher on B, {} points at 200/s: after A's acknowledgement p50 {:.2} ms, p99 {:.2} ms; after the send p50 {:.2} ms, p99 {:.2} ms",
        after_ack.len(),
        ms(percentile(&after_ack, 500)),
        ms(percentile(&after_ack, 990)),
        ms(percentile(&after_send, 500)),
        ms(percentile(&after_send, 990))
    );
    Ok(())
}

async fn core_workloads(args: &Args, url: &str, exp: &str) -> Result<(), BoxError> {
    for clients in [1, 8] {
        let rate = create_runs(url, exp, clients, args.runs_per_client / clients.max(1)).await?;
        println!("  CreateRun, {clients} client(s): {rate:>12.0} runs/s");
    }
    for clients in [1, 8] {
        let per_client = if clients == 1 {
            args.points_per_client
        } else {
            args.points_per_client / 2
        };
        let (rate, worst) = ingest(url, exp, clients, per_client).await?;
        println!(
            "  LogBatch ingest, {clients} client(s), {BATCH} points a batch: {rate:>12.0} points/s (slowest batch {:.1} ms)",
            ms(worst)
        );
    }
    let (best, median, paged) = history(url, exp, args.history_points).await?;
    println!(
        "  GetMetricHistory, {} points in one call: median {:.1} ms, best {:.1} ms; in 25,000-point pages: median {:.1} ms",
        args.history_points,
        ms(median),
        ms(best),
        ms(paged)
    );
    Ok(())
}

async fn stream_workloads(
    args: &Args,
    url: &str,
    exp: &str,
    pid: Option<u32>,
) -> Result<(), BoxError> {
    for clients in [1, 8] {
        let per_client = if clients == 1 {
            args.points_per_client
        } else {
            args.points_per_client / 2
        };
        let rate = stream_ingest(url, exp, clients, per_client).await?;
        println!(
            "  LogMetricStream ingest, {clients} client(s), {BATCH} points a message: {rate:>12.0} points/s"
        );
    }
    for &watchers in &args.watchers {
        let d = watch_latency(url, exp, watchers, 0, args.watch_seconds, pid).await?;
        println!(
            "  watch delivery, {watchers} watcher(s), 10,000 points/s: after the ack p50 {:.2} ms, p99 {:.2} ms; after the send p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
            ms(percentile(&d.after_ack, 500)),
            ms(percentile(&d.after_ack, 990)),
            ms(percentile(&d.after_send, 500)),
            ms(percentile(&d.after_send, 990)),
            d.after_ack.len()
        );
    }
    let before = pid.and_then(rss_mib);
    let d = watch_latency(url, exp, 1000, 10, args.watch_seconds * 2, pid).await?;
    println!(
        "  1,000 watchers (10 slow), 10,000 points/s for {} s: p99 {:.2} ms; server RSS {:.1} MiB before, {:.1} after opening, {:.1} at end",
        args.watch_seconds * 2,
        ms(percentile(&d.after_ack, 990)),
        before.unwrap_or(f64::NAN),
        d.rss_open.unwrap_or(f64::NAN),
        d.rss_end.unwrap_or(f64::NAN)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact() {
        let ms = |n: u64| Duration::from_millis(n);
        // 1..=100 ms, shuffled.
        let lat: Vec<Duration> = (1..=100).map(|i| ms((i * 37) % 100 + 1)).collect();
        assert_eq!(percentile(&lat, 500), ms(50));
        assert_eq!(percentile(&lat, 990), ms(99));
        assert_eq!(percentile(&lat, 1000), ms(100));
        assert_eq!(percentile(&lat, 0), ms(1));
        assert_eq!(percentile(&[ms(7)], 990), ms(7));
        assert_eq!(percentile(&[], 500), Duration::ZERO);
    }
}
