//! Replicas on one PostgreSQL (`--store postgres://...`), with the real database:
//! read-your-writes and streams across replicas, one child from concurrent
//! GetOrCreateChildRun on two replicas, concurrent schema migrations, a replica killed
//! mid-write, PostgreSQL cut off under load and back, a replica that was down catching
//! up, and `migrate-store` both ways. Each test makes databases of its own beside
//! `ARBOR_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`).

use crate::common;
use common::Answer;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arbor::pb::{
    self, hierarchy_service_client::HierarchyServiceClient,
    tracking_service_client::TrackingServiceClient, watch_metrics_request::Scope,
    watch_service_client::WatchServiceClient,
};
use arbor::store::StoreConfig;
use common::TestServer;
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

type Tracking = TrackingServiceClient<Channel>;

/// A new, empty database for one shared log.
async fn fresh_log() -> String {
    common::new_database(&common::postgres_base()).await
}

/// A query on the database `url` names.
async fn query(url: &str, sql: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("these tests need PostgreSQL at {url}: {e}"));
    let driver = tokio::spawn(connection);
    let rows = client.query(sql, &[]).await.expect("query");
    drop(client);
    let _ = driver.await;
    rows
}

/// The shared log is gap-free from 1: returns its length.
async fn assert_gap_free(url: &str) -> i64 {
    let row = &query(
        url,
        "SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0) FROM arbor_log",
    )
    .await[0];
    let (count, min, max): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (min, max),
        (1, count),
        "the log is 1..={count} without a gap"
    );
    count
}

async fn replica(url: &str) -> TestServer {
    replica_in(tempfile::tempdir().expect("tempdir"), url).await
}

async fn replica_in(dir: tempfile::TempDir, url: &str) -> TestServer {
    let config = StoreConfig {
        shared_log: Some(url.to_string()),
        ..StoreConfig::default()
    };
    TestServer::start_with(dir, &config).await
}

async fn new_run(c: &mut Tracking, exp: &str) -> String {
    common::new_run_id(
        c,
        pb::CreateRunRequest {
            experiment_id: exp.into(),
            ..Default::default()
        },
    )
    .await
}

fn point(key: &str, step: i64) -> pb::Metric {
    pb::Metric {
        key: key.into(),
        value: step as f64,
        timestamp: 1000 + step,
        step,
    }
}

async fn steps_of(c: &mut Tracking, run: &str, key: &str) -> Vec<i64> {
    let mut steps: Vec<i64> = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: run.into(),
            metric_key: key.into(),
            ..Default::default()
        })
        .await
        .answer()
        .metrics
        .iter()
        .map(|m| m.step)
        .collect();
    steps.sort_unstable();
    steps
}

/// A watch of one run's metrics on `server`.
async fn watch(
    server: &TestServer,
    run: &str,
    from_seq: Option<u64>,
) -> tonic::Streaming<pb::WatchMetricsResponse> {
    WatchServiceClient::new(server.channel().await)
        .watch_metrics(pb::WatchMetricsRequest {
            scope: Some(Scope::RunId(run.to_string())),
            keys: vec![],
            from_seq,
        })
        .await
        .answer()
}

/// The next message with points, past the one that says where the stream starts.
async fn next_points(
    stream: &mut tonic::Streaming<pb::WatchMetricsResponse>,
) -> pb::WatchMetricsResponse {
    loop {
        let m = stream.message().await.unwrap().expect("open");
        if !m.series.is_empty() {
            return m;
        }
    }
}

fn steps_in(m: &pb::WatchMetricsResponse) -> impl Iterator<Item = i64> + '_ {
    m.series.iter().flat_map(|s| s.steps.iter().copied())
}

/// What one replica writes, the other reads at once, over gRPC and REST: experiments,
/// runs, params, tags, histories, searches, the run tree; users are shared too.
#[tokio::test]
async fn a_write_through_one_replica_is_read_through_the_other() {
    let url = fresh_log().await;
    let a = replica(&url).await;
    let b = replica(&url).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let exp = common::create_experiment(&mut ca, "shared").await;
    let got = cb
        .get_experiment_by_name(pb::GetExperimentByNameRequest {
            experiment_name: "shared".into(),
        })
        .await
        .answer();
    assert_eq!(got.experiment.unwrap().experiment_id, exp);
    let parent = new_run(&mut cb, &exp).await;
    for step in 0..50 {
        // Alternate replicas: each write is decided on the whole log.
        let c = if step % 2 == 0 { &mut ca } else { &mut cb };
        c.log_batch(pb::LogBatchRequest {
            run_id: parent.clone(),
            metrics: vec![point("loss", step)],
            params: if step == 0 {
                vec![pb::Param {
                    key: "lr".into(),
                    value: "0.1".into(),
                }]
            } else {
                vec![]
            },
            ..Default::default()
        })
        .await
        .expect("log");
        // Read back through the other replica, immediately.
        let other = if step % 2 == 0 { &mut cb } else { &mut ca };
        assert_eq!(
            steps_of(other, &parent, "loss").await,
            (0..=step).collect::<Vec<_>>()
        );
    }
    // A param is immutable whichever replica is asked to change it.
    let err = ca
        .log_param(pb::LogParamRequest {
            run_id: parent.clone(),
            key: "lr".into(),
            value: "0.2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // A child made through REST on A is found by B's search and run tree.
    let (status, child) = common::rest(
        a.addr,
        "POST",
        "/api/2.0/mlflow/runs/create",
        Some(json!({"experiment_id": exp, "run_name": "child",
                    "tags": [{"key": "mlflow.parentRunId", "value": parent}]})),
    )
    .await;
    assert_eq!(status, 200, "{child}");
    let child = child["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let (status, found) = common::rest(
        b.addr,
        "POST",
        "/api/2.0/mlflow/runs/search",
        Some(json!({"experiment_ids": [exp],
                    "filter": format!("tags.mlflow.rootRunId = '{parent}' and params.lr = '0.1'")})),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["runs"].as_array().map(Vec::len), Some(1), "{found}");
    let tree = HierarchyServiceClient::new(b.channel().await)
        .get_run_tree(pb::GetRunTreeRequest {
            run_id: parent.clone(),
            ..Default::default()
        })
        .await
        .answer();
    let children: Vec<String> = tree
        .root
        .unwrap()
        .children
        .iter()
        .map(|n| n.info.as_ref().unwrap().run_id.clone())
        .collect();
    assert_eq!(children, vec![child]);
    a.stop().await;
    b.stop().await;
    assert_gap_free(&url).await;
}

/// GetOrCreateChildRun asked at once through two replicas creates one child.
#[tokio::test]
async fn concurrent_get_or_create_child_run_on_two_replicas_creates_one_child() {
    let url = fresh_log().await;
    let a = replica(&url).await;
    let b = replica(&url).await;
    let mut ca = a.client().await;
    let parent = new_run(&mut ca, "0").await;
    let (ha, hb) = (
        HierarchyServiceClient::new(a.channel().await),
        HierarchyServiceClient::new(b.channel().await),
    );
    let mut calls = Vec::new();
    for i in 0..24 {
        let mut h = if i % 2 == 0 { ha.clone() } else { hb.clone() };
        let req = pb::GetOrCreateChildRunRequest {
            parent_run_id: parent.clone(),
            run_name: format!("stage-{}", i % 3),
            ..Default::default()
        };
        calls.push(tokio::spawn(async move {
            h.get_or_create_child_run(req).await.answer()
        }));
    }
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for call in calls {
        let answer = call.await.unwrap();
        ids.insert(answer.run.unwrap().info.unwrap().run_id);
        created += usize::from(answer.created);
    }
    assert_eq!(ids.len(), 3, "one child per name");
    assert_eq!(created, 3, "each created once");
    a.stop().await;
    b.stop().await;
}

/// A watcher on B gets the points written through A, in order, once each; one that
/// reconnects with from_seq = last + 1, to either replica, misses and repeats nothing.
#[tokio::test]
async fn streams_cross_replicas_and_resume_on_either() {
    let url = fresh_log().await;
    let a = replica(&url).await;
    let b = replica(&url).await;
    let mut ca = a.client().await;
    let run = new_run(&mut ca, "0").await;
    let mut on_b = watch(&b, &run, None).await;
    for step in 0..30 {
        ca.log_batch(pb::LogBatchRequest {
            run_id: run.clone(),
            metrics: vec![point("loss", step)],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut last = 0;
    while seen.len() < 20 {
        let m = next_points(&mut on_b).await;
        assert!(m.seq > last);
        last = m.seq;
        seen.extend(steps_in(&m));
    }
    drop(on_b);
    // Resume on A from where B's stream stopped.
    let mut on_a = watch(&a, &run, Some(last + 1)).await;
    while seen.len() < 30 {
        let m = next_points(&mut on_a).await;
        assert!(m.seq > last);
        last = m.seq;
        seen.extend(steps_in(&m));
    }
    assert_eq!(
        seen,
        (0..30).collect::<Vec<_>>(),
        "every point once, in order"
    );
    drop(on_a);
    a.stop().await;
    b.stop().await;
}

/// Replicas starting at once on an empty database: the schema is migrated once and the
/// Default experiment created once.
#[test]
fn replicas_starting_at_once_migrate_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = runtime.block_on(fresh_log());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores: Vec<_> = std::thread::scope(|s| {
        let opening: Vec<_> = dirs
            .iter()
            .map(|d| {
                let url = url.clone();
                s.spawn(move || {
                    arbor::store::Store::open(
                        d.path(),
                        &StoreConfig {
                            shared_log: Some(url),
                            ..StoreConfig::default()
                        },
                    )
                })
            })
            .collect();
        opening
            .into_iter()
            .map(|h| h.join().unwrap().expect("open"))
            .collect()
    });
    runtime.block_on(async {
        for s in &stores {
            assert_eq!(s.get_experiment("0").unwrap().name, "Default");
            s.close().await;
        }
        let migrations = query(&url, "SELECT count(*) FROM arbor_schema_history").await;
        assert_eq!(migrations[0].get::<_, i64>(0), 1);
        assert_eq!(assert_gap_free(&url).await, 1, "one Default experiment");
    });
}

/// Writers on two replica processes; one is SIGKILLed mid-write. Every acknowledged
/// point is there, the log has no gap, the other replica keeps serving, and the killed
/// one, restarted on its old cache, catches up and streams from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_write_loses_nothing_acknowledged() {
    let url = fresh_log().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let start = |dir: &std::path::Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_arbor"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--store", &url])
            .arg("--data-dir")
            .arg(dir);
        common::start_process(cmd)
    };
    let (mut pa, addr_a) = start(dirs[0].path());
    let (mut pb_, addr_b) = start(dirs[1].path());
    let connect = |addr: SocketAddr| async move {
        TrackingServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect")
    };
    let run = new_run(&mut connect(addr_a).await, "0").await;
    // Four writers, two per replica, each its own key; acknowledged steps recorded.
    let acked: Arc<Mutex<Vec<BTreeSet<i64>>>> = Arc::new(Mutex::new(vec![BTreeSet::new(); 4]));
    let tried: Arc<Mutex<Vec<BTreeSet<i64>>>> = Arc::new(Mutex::new(vec![BTreeSet::new(); 4]));
    let stop = Arc::new(AtomicBool::new(false));
    let (enough_tx, enough) = tokio::sync::watch::channel(0usize);
    let enough_tx = Arc::new(enough_tx);
    let mut writers = Vec::new();
    for w in 0..4 {
        let addr = if w % 2 == 0 { addr_a } else { addr_b };
        let (acked, tried, stop, run, enough_tx) = (
            acked.clone(),
            tried.clone(),
            stop.clone(),
            run.clone(),
            enough_tx.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            let key = format!("w{w}");
            for step in 0.. {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                tried.lock().unwrap()[w].insert(step);
                let r = c
                    .log_batch(pb::LogBatchRequest {
                        run_id: run.clone(),
                        metrics: vec![point(&key, step)],
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => {
                        let total: usize = {
                            let mut a = acked.lock().unwrap();
                            a[w].insert(step);
                            a.iter().map(BTreeSet::len).sum()
                        };
                        enough_tx.send_replace(total);
                    }
                    // The killed replica's writers stop at their first failure.
                    Err(_) => return,
                }
            }
        }));
    }
    let mut seen = enough.clone();
    seen.wait_for(|&n| n >= 200).await.unwrap();
    pa.kill().expect("SIGKILL");
    pa.wait().expect("reaped");
    // B's writers go on: 200 more acknowledgements.
    let now = *seen.borrow();
    seen.wait_for(|&n| n >= now + 200).await.unwrap();
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap();
    }
    let mut cb = connect(addr_b).await;
    let acked = acked.lock().unwrap().clone();
    let tried = tried.lock().unwrap().clone();
    for w in 0..4 {
        let steps = steps_of(&mut cb, &run, &format!("w{w}")).await;
        let unique: BTreeSet<i64> = steps.iter().copied().collect();
        assert_eq!(unique.len(), steps.len(), "writer {w}: no point twice");
        assert!(
            acked[w].is_subset(&unique),
            "writer {w}: every acknowledged point is there"
        );
        assert!(
            unique.is_subset(&tried[w]),
            "writer {w}: nothing that was not sent"
        );
    }
    assert!(acked[1].len() + acked[3].len() >= 200, "B kept serving");
    let events = assert_gap_free(&url).await;
    // A comes back on its old cache, catches up, and a watcher from the start sees all.
    let (mut pa2, addr_a2) = start(dirs[0].path());
    let mut ca = connect(addr_a2).await;
    for w in 0..4 {
        assert_eq!(
            steps_of(&mut ca, &run, &format!("w{w}")).await,
            steps_of(&mut cb, &run, &format!("w{w}")).await
        );
    }
    let mut stream = WatchServiceClient::connect(format!("http://{addr_a2}"))
        .await
        .unwrap()
        .watch_events(pb::WatchEventsRequest {
            from_seq: Some(1),
            ..Default::default()
        })
        .await
        .answer();
    for seq in 1..=u64::try_from(events).unwrap() {
        let ev = stream.message().await.unwrap().expect("open");
        assert_eq!(
            ev.seq, seq,
            "the change feed on the restarted replica has no gap"
        );
    }
    drop(stream);
    assert!(common::terminate(&mut pa2));
    assert!(common::terminate(&mut pb_));
}

/// A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones
/// closed at once) and restore.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                // Checked and recorded under the lock `cut` takes, so no pipe opened as
                // the cut comes can outlive it.
                let mut open = open2.lock().unwrap();
                if !up2.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                open.push(pipe.abort_handle());
            }
        });
        Proxy {
            addr,
            up,
            open,
            task,
        }
    }

    fn cut(&self) {
        let mut open = self.open.lock().unwrap();
        self.up.store(false, Ordering::Release);
        for pipe in open.drain(..) {
            pipe.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::Release);
    }
}

/// PostgreSQL cut off under load: writes fail with UNAVAILABLE (503 over REST) while it
/// is away, /health says so, and once it is back everything resumes without a restart;
/// every acknowledged point is there once and the log has no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_under_load_fails_writes_cleanly_and_recovers() {
    let url = fresh_log().await;
    let (server_part, db) = url.rsplit_once('/').unwrap();
    let target: SocketAddr = server_part
        .rsplit_once('@')
        .map_or(server_part, |(_, h)| h)
        .trim_start_matches("postgres://")
        .parse()
        .unwrap_or_else(|_| "127.0.0.1:5432".parse().unwrap());
    let proxy = Proxy::start(target).await;
    let through_proxy = format!("postgres://postgres@{}/{db}", proxy.addr);
    let server = replica(&through_proxy).await;
    let mut c = server.client().await;
    let run = new_run(&mut c, "0").await;
    // Load: a writer logging steps as fast as it can, recording what was acknowledged.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (progress_tx, progress) = tokio::sync::watch::channel(0usize);
    let writer = {
        let (acked, failures, stop, run, mut c) = (
            acked.clone(),
            failures.clone(),
            stop.clone(),
            run.clone(),
            c.clone(),
        );
        tokio::spawn(async move {
            let mut step = 0;
            while !stop.load(Ordering::Acquire) {
                let r = c
                    .log_batch(pb::LogBatchRequest {
                        run_id: run.clone(),
                        metrics: vec![point("loss", step)],
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => {
                        acked.lock().unwrap().insert(step);
                    }
                    Err(e) => failures.lock().unwrap().push(e.code()),
                }
                step += 1;
                progress_tx.send_replace(usize::try_from(step).unwrap_or(0));
            }
            step
        })
    };
    let mut p = progress.clone();
    p.wait_for(|&n| n >= 100).await.unwrap();
    proxy.cut();
    // A write that finds PostgreSQL gone is refused with UNAVAILABLE, and from then on
    // health says why.
    let err = loop {
        match c
            .log_batch(pb::LogBatchRequest {
                run_id: run.clone(),
                metrics: vec![point("probe", 0)],
                ..Default::default()
            })
            .await
        {
            Err(e) => break e,
            // Acknowledged before the cut reached this connection: try again.
            Ok(_) => continue,
        }
    };
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let (status, body) = common::http(server.addr, "GET", "/health", None, b"").await;
    assert_eq!(status, 503);
    assert!(
        String::from_utf8_lossy(&body).contains("PostgreSQL"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, body) = common::rest(
        server.addr,
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        Some(json!({"run_id": run, "key": "probe", "value": 1, "timestamp": 1, "step": 1})),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error_code"], "TEMPORARILY_UNAVAILABLE");
    // The writer keeps failing meanwhile.
    let failed_before = failures.lock().unwrap().len();
    let now = *p.borrow();
    p.wait_for(|&n| n >= now + 20).await.unwrap();
    assert!(failures.lock().unwrap().len() >= failed_before + 19);
    assert!(
        failures
            .lock()
            .unwrap()
            .iter()
            .all(|&code| code == Code::Unavailable)
    );
    proxy.restore();
    // Writes resume without a restart.
    let before = acked.lock().unwrap().len();
    let mut resumed = progress.clone();
    resumed
        .wait_for(|_| acked.lock().unwrap().len() >= before + 100)
        .await
        .unwrap();
    stop.store(true, Ordering::Release);
    writer.await.unwrap();
    // Health comes back once the listener has reconnected (it retries with back-off).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, _) = common::http(server.addr, "GET", "/health", None, b"").await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let steps = steps_of(&mut c, &run, "loss").await;
    let unique: BTreeSet<i64> = steps.iter().copied().collect();
    assert_eq!(unique.len(), steps.len(), "no point twice");
    assert!(
        acked.lock().unwrap().is_subset(&unique),
        "every acknowledged point"
    );
    server.stop().await;
    proxy.task.abort();
    assert_gap_free(&url).await;
}

/// A replica that was stopped while another wrote catches up when it starts, and a
/// watcher on it resumes from its last sequence number without a gap.
#[tokio::test]
async fn a_replica_that_was_down_catches_up_and_its_watchers_resume() {
    let url = fresh_log().await;
    let a = replica(&url).await;
    let b = replica(&url).await;
    let mut ca = a.client().await;
    let run = new_run(&mut ca, "0").await;
    ca.log_batch(pb::LogBatchRequest {
        run_id: run.clone(),
        metrics: (0..10).map(|s| point("loss", s)).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut on_b = watch(&b, &run, Some(1)).await;
    let first = next_points(&mut on_b).await;
    assert_eq!(
        steps_in(&first).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    drop(on_b);
    let dir = b.stop().await;
    for s in 10..1000 {
        ca.log_batch(pb::LogBatchRequest {
            run_id: run.clone(),
            metrics: vec![point("loss", s)],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let b = replica_in(dir, &url).await;
    let mut cb = b.client().await;
    assert_eq!(
        steps_of(&mut cb, &run, "loss").await,
        (0..1000).collect::<Vec<_>>()
    );
    let mut on_b = watch(&b, &run, Some(first.seq + 1)).await;
    let mut steps = Vec::new();
    let mut last = first.seq;
    while steps.len() < 990 {
        let m = next_points(&mut on_b).await;
        assert!(m.seq > last, "resumed after {}, got {}", first.seq, m.seq);
        last = m.seq;
        steps.extend(steps_in(&m));
    }
    assert_eq!(steps, (10..1000).collect::<Vec<_>>());
    drop(on_b);
    a.stop().await;
    b.stop().await;
}

/// A sled store moves into PostgreSQL (with its artifacts) and replicas serve it as it
/// was; the shared store moves back out into a new data directory that checks intact.
/// A copy into a database holding another log is refused; a repeated copy resumes.
#[tokio::test]
async fn migrate_store_moves_a_log_both_ways() {
    let own = TestServer::start_on_sled(tempfile::tempdir().unwrap()).await;
    let mut c = own.client().await;
    let exp = common::create_experiment(&mut c, "moved").await;
    let run = new_run(&mut c, &exp).await;
    c.log_batch(pb::LogBatchRequest {
        run_id: run.clone(),
        metrics: (0..500).map(|s| point("loss", s)).collect(),
        params: vec![pb::Param {
            key: "lr".into(),
            value: "0.1".into(),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let artifact = format!("/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/notes.txt");
    let (status, _) = common::http(own.addr, "PUT", &artifact, None, b"hello").await;
    assert_eq!(status, 200);
    let dir = own.stop().await;
    let url = fresh_log().await;
    let shared_artifacts = tempfile::tempdir().unwrap();
    let (ok, out) = common::arbor_cli(&[
        "migrate-store",
        "--from",
        dir.path().to_str().unwrap(),
        "--to",
        &url,
        "--artifacts",
        shared_artifacts.path().to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("1 artifact files"), "{out}");
    let events = assert_gap_free(&url).await;
    // Again: nothing left to copy.
    let (ok, out) = common::arbor_cli(&[
        "migrate-store",
        "--from",
        dir.path().to_str().unwrap(),
        "--to",
        &url,
    ])
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("copied 0 events"), "{out}");
    // A replica on it serves the store as it was, artifacts from the shared directory.
    let replica = TestServer::start_with(
        tempfile::tempdir().unwrap(),
        &StoreConfig {
            shared_log: Some(url.clone()),
            artifacts_dir: Some(shared_artifacts.path().to_path_buf()),
            ..StoreConfig::default()
        },
    )
    .await;
    let mut cr = replica.client().await;
    assert_eq!(
        steps_of(&mut cr, &run, "loss").await,
        (0..500).collect::<Vec<_>>()
    );
    let (status, body) = common::http(replica.addr, "GET", &artifact, None, b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    cr.log_batch(pb::LogBatchRequest {
        run_id: run.clone(),
        metrics: vec![point("loss", 500)],
        ..Default::default()
    })
    .await
    .unwrap();
    replica.stop().await;
    assert_eq!(assert_gap_free(&url).await, events + 1);
    // The sled store cannot go into a database that now holds more than it.
    let (ok, out) = common::arbor_cli(&[
        "migrate-store",
        "--from",
        dir.path().to_str().unwrap(),
        "--to",
        &url,
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("another store"), "{out}");
    // And back out into a store of its own.
    let back = tempfile::tempdir().unwrap();
    let back_dir = back.path();
    let (ok, out) = common::arbor_cli(&[
        "migrate-store",
        "--from",
        &url,
        "--to",
        back_dir.to_str().unwrap(),
        "--artifacts",
        shared_artifacts.path().to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{out}");
    let (ok, out) = common::arbor_cli(&["check", "--data-dir", back_dir.to_str().unwrap()]).await;
    assert!(ok, "{out}");
    let own = TestServer::start_on_sled(back).await;
    let mut c = own.client().await;
    assert_eq!(
        steps_of(&mut c, &run, "loss").await,
        (0..=500).collect::<Vec<_>>()
    );
    let (status, body) = common::http(own.addr, "GET", &artifact, None, b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    own.stop().await;
}
