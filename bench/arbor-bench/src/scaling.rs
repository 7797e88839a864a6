//! `--workloads scaling`: how cost grows with the size of the store, on one server that
//! grows through the sizes: at each run count (10k, 100k, 1M by default) the rate of
//! creating the runs that took it there, searches (a)–(d) and GetRunTree; at each
//! history length (100k, 1M, 10M points in one metric) GetMetricHistory over gRPC and
//! REST, paged as the clients page; then a sustained LogBatch ingest with disk bytes per
//! point, RSS and p99 write latency sampled along the way (read from `/metrics`). Run on
//! demand, not in CI; `--json` keeps the figures for `bench/scaling_plot.py`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arbor::pb;
use serde_json::{Value, json};

use super::{
    BATCH, BoxError, batch, connect, median, ms, new_run, page_all_runs, page_history, percentile,
    populate, run_tree_median, timed_search,
};
use crate::rest::RestClient;

pub struct ScalingOptions {
    pub runs: Vec<usize>,
    pub history: Vec<usize>,
    pub ingest_points: usize,
    pub sample_secs: u64,
}

/// A gauge of the server's `/metrics`.
async fn gauge(rest: &mut RestClient, name: &str) -> Result<f64, BoxError> {
    let text = rest.text("/metrics").await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| format!("/metrics has no {name}").into())
}

async fn experiment(url: &str, name: &str) -> Result<String, BoxError> {
    let mut c = connect(url).await?;
    Ok(c.create_experiment(pb::CreateExperimentRequest {
        name: format!("{name}-{}", uuid::Uuid::new_v4().simple()),
        ..Default::default()
    })
    .await?
    .into_inner()
    .experiment_id)
}

async fn runs_at(url: &str, exp: &str, roots: &[String], total: usize) -> Result<Value, BoxError> {
    let mut c = connect(url).await?;
    let root = &roots[roots.len() / 2];
    let (a, _) = timed_search(
        &mut c,
        exp,
        &format!("tags.mlflow.rootRunId = '{root}'"),
        &[],
        1000,
        10,
    )
    .await?;
    let (b, _) = timed_search(
        &mut c,
        exp,
        "params.lr = '0.01' and metrics.loss < 0.5",
        &["metrics.loss ASC"],
        100,
        5,
    )
    .await?;
    let (cc, _) = timed_search(
        &mut c,
        exp,
        "tags.mlflow.runName ILIKE '%child_1%'",
        &[],
        1000,
        3,
    )
    .await?;
    let t = Instant::now();
    let seen = page_all_runs(&mut c, exp).await?;
    let d = t.elapsed();
    if seen != total {
        return Err(format!("paging saw {seen} of {total} runs").into());
    }
    let tree = run_tree_median(url, root, 10).await?;
    Ok(json!({
        "search_a_ms": ms(a), "search_b_ms": ms(b), "search_c_ms": ms(cc),
        "search_d_ms": ms(d), "run_tree_ms": ms(tree),
    }))
}

async fn history_at(
    url: &str,
    c: &mut super::Client,
    run: &str,
    points: usize,
) -> Result<Value, BoxError> {
    // gRPC, paged by the server's default (25,000, MLflow's client page).
    // Long histories are read once: each pass of 10M points pages 400 times.
    let passes = if points >= 1_000_000 { 1 } else { 3 };
    let mut grpc = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        let got = page_history(c, run, "loss").await?;
        grpc.push(t.elapsed());
        if got != points {
            return Err(format!("gRPC history returned {got} of {points} points").into());
        }
    }
    // REST, as the mlflow client pages it.
    let mut rest = RestClient::connect(url).await?;
    let mut times = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        let got = crate::rest::read_history(&mut rest, run, "loss").await?;
        times.push(t.elapsed());
        if got != points {
            return Err(format!("REST history returned {got} of {points} points").into());
        }
    }
    Ok(json!({ "points": points, "grpc_ms": ms(median(grpc)), "rest_ms": ms(median(times)) }))
}

/// The 99th percentile of the latencies (null when there are none).
fn p99_ms(lat: Vec<Duration>) -> Option<f64> {
    (!lat.is_empty()).then(|| ms(percentile(&lat, 990)))
}

/// Sustained ingest: 8 clients send 1,000-point batches until `total` points, and every
/// `every` the points so far, the interval's rate and p99 batch latency, the store's
/// bytes and the server's RSS are sampled.
async fn ingest(
    url: &str,
    exp: &str,
    total: usize,
    every: Duration,
) -> Result<Vec<Value>, BoxError> {
    const CLIENTS: usize = 8;
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let per_client = total.div_ceil(CLIENTS * BATCH);
    let mut rest = RestClient::connect(url).await?;
    let base = gauge(&mut rest, "arbor_points_committed_total").await?;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = connect(url).await?;
        let run = new_run(&mut c, exp).await?;
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..per_client {
                let req = batch(&run, "loss", b * BATCH);
                let t = Instant::now();
                c.log_batch(req).await?;
                latencies.lock().expect("latencies").push(t.elapsed());
            }
            Ok::<_, BoxError>(())
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut last_points, mut last_t) = (0.0, started);
    loop {
        // Every `every`, and once more when the clients finish, so that the last interval
        // is the time the last points took, not a whole period.
        let due = Instant::now() + every;
        while Instant::now() < due && !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(100).min(every)).await;
        }
        let done = tasks.iter().all(|t| t.is_finished());
        let lat = std::mem::take(&mut *latencies.lock().expect("latencies"));
        let points = gauge(&mut rest, "arbor_points_committed_total").await? - base;
        let now = Instant::now();
        let sample = json!({
            "seconds": (now - started).as_secs_f64(),
            "points": points,
            "points_per_s": (points - last_points) / (now - last_t).as_secs_f64(),
            "p99_ms": p99_ms(lat),
            // 0 while sled swaps a file under the walk: not a size, so left out.
            "store_bytes": Some(gauge(&mut rest, "arbor_store_bytes").await?).filter(|&b| b > 0.0),
            "rss_mib": gauge(&mut rest, "process_resident_memory_bytes").await? / 1048576.0,
        });
        println!(
            "  ingest: {:>11.0} points, {:>9.0} points/s, p99 {:>6.1} ms, {:>6.1} B/point on disk, RSS {:.0} MiB",
            points,
            sample["points_per_s"].as_f64().unwrap_or(0.0),
            sample["p99_ms"].as_f64().unwrap_or(f64::NAN),
            sample["store_bytes"].as_f64().unwrap_or(f64::NAN) / points.max(1.0),
            sample["rss_mib"].as_f64().unwrap_or(0.0)
        );
        samples.push(sample);
        (last_points, last_t) = (points, now);
        if done {
            break;
        }
    }
    for t in tasks {
        t.await??;
    }
    Ok(samples)
}

pub async fn run(url: &str, opts: &ScalingOptions) -> Result<Value, BoxError> {
    println!("arbor-bench scaling against {url}");
    let exp = experiment(url, "scaling").await?;
    let mut sizes = opts.runs.clone();
    sizes.sort_unstable();
    let (mut have, mut roots, mut runs) = (0, Vec::new(), Vec::new());
    for &n in &sizes {
        let add = n.saturating_sub(have).div_ceil(100) * 100;
        let t = Instant::now();
        roots.extend(populate(url, &exp, add).await?);
        let rate = add as f64 / t.elapsed().as_secs_f64();
        have += add;
        let mut row = runs_at(url, &exp, &roots, have).await?;
        row["runs"] = json!(have);
        row["create_runs_per_s"] = json!(rate);
        println!("  {have} runs: {row}");
        runs.push(row);
    }
    let mut c = connect(url).await?;
    let run = new_run(&mut c, &exp).await?;
    let mut lengths = opts.history.clone();
    lengths.sort_unstable();
    let (mut logged, mut history) = (0, Vec::new());
    for &n in &lengths {
        while logged < n {
            c.log_batch(batch(&run, "loss", logged)).await?;
            logged += BATCH;
        }
        let row = history_at(url, &mut c, &run, logged).await?;
        println!("  history: {row}");
        history.push(row);
    }
    let ingest_exp = experiment(url, "scaling-ingest").await?;
    let ingest = ingest(
        url,
        &ingest_exp,
        opts.ingest_points,
        Duration::from_secs(opts.sample_secs),
    )
    .await?;
    Ok(json!({ "runs": runs, "history": history, "ingest": ingest }))
}
