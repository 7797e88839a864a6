//! `arbor-bench`: measures a running Arbor server over gRPC and prints the figures.
//! Not a test: numbers are printed, never asserted.
//!
//! With `--server URL` it measures that server; without, it starts the `arbor` binary
//! next to itself on a temporary data directory and port 0 (and reports its memory).
//!
//! Workloads: `CreateRun` per second (1 and 8 clients), `LogBatch` ingest in points per
//! second with 1 and 8 clients (1000 points a batch), `GetMetricHistory` of 100,000
//! points (one call, and in default 25,000-point pages).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arbor::pb::{self, tracking_service_client::TrackingServiceClient};
use clap::Parser;
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
}

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

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
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
    let mut conns = Vec::new();
    for _ in 0..clients {
        let mut c = connect(url).await?;
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
        let mut token = String::new();
        loop {
            let page = c
                .get_metric_history(pb::GetMetricHistoryRequest {
                    run_id: run.clone(),
                    metric_key: "loss".into(),
                    page_token: token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        paged.push(t.elapsed());
    }
    single.sort();
    paged.sort();
    Ok((single[0], single[single.len() / 2], paged[paged.len() / 2]))
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
    let result = rt.block_on(async {
        let mut c = connect(&url).await?;
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
            println!("  server RSS at start: {:.1} MiB", rss_mib(pid).unwrap_or(f64::NAN));
        }
        for clients in [1, 8] {
            let rate = create_runs(&url, &exp, clients, args.runs_per_client / clients.max(1)).await?;
            println!("  CreateRun, {clients} client(s): {rate:>12.0} runs/s");
        }
        for clients in [1, 8] {
            let per_client = if clients == 1 { args.points_per_client } else { args.points_per_client / 2 };
            let (rate, worst) = ingest(&url, &exp, clients, per_client).await?;
            println!(
                "  LogBatch ingest, {clients} client(s), {BATCH} points a batch: {rate:>12.0} points/s (slowest batch {:.1} ms)",
                worst.as_secs_f64() * 1e3
            );
        }
        let (best, median, paged) = history(&url, &exp, args.history_points).await?;
        println!(
            "  GetMetricHistory, {} points in one call: median {:.1} ms, best {:.1} ms; in 25,000-point pages: median {:.1} ms",
            args.history_points,
            median.as_secs_f64() * 1e3,
            best.as_secs_f64() * 1e3,
            paged.as_secs_f64() * 1e3
        );
        if let Some(pid) = pid {
            println!("  server RSS at end: {:.1} MiB", rss_mib(pid).unwrap_or(f64::NAN));
        }
        Ok::<_, BoxError>(())
    });
    if let Some(mut s) = spawned {
        let _ = Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status();
        let _ = s.child.wait();
    }
    result
}
