//! The durability contract against the real binary: every write acknowledged before a
//! SIGKILL is there after a restart, the log is gap-free, rebuilding it reproduces the
//! projections, SIGTERM shuts down cleanly with exit 0, and `arbor rebuild` works.

use crate::common;
use common::Answer;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use arbor::pb::{self, tracking_service_client::TrackingServiceClient};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_arbor");

/// Starts `arbor serve` on port 0 and reads the address it prints.
fn spawn_server(dir: &std::path::Path) -> (Child, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir);
    start(cmd)
}

/// The same, configured through `ARBOR_*` environment variables alone.
fn spawn_server_from_env(dir: &std::path::Path) -> (Child, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env("ARBOR_LISTEN", "127.0.0.1:0")
        .env("ARBOR_DATA_DIR", dir)
        .env("ARBOR_CACHE_MB", "16");
    start(cmd)
}

fn start(cmd: Command) -> (Child, SocketAddr) {
    common::start_process(cmd)
}

async fn client(addr: SocketAddr) -> TrackingServiceClient<tonic::transport::Channel> {
    TrackingServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a child's pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
}

/// What the writers saw acknowledged.
#[derive(Default)]
struct Acked {
    /// (writer, batch number) of every acknowledged LogBatch.
    batches: BTreeSet<(usize, i64)>,
    /// Run ids whose CreateRun was acknowledged, with the writer's param on each.
    runs: BTreeMap<String, String>,
}

const WRITERS: usize = 8;
const POINTS_PER_BATCH: i64 = 50;
/// Acknowledged batches to wait for before the kill; writers keep going past it.
const KILL_AFTER: usize = 300;

/// Every write acknowledged before a SIGKILL is there after a restart, no batch is half-written, and the log replays gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = spawn_server(dir.path());
    let mut c = client(addr).await;
    let run_id = common::new_run_id(&mut c, pb::CreateRunRequest::default()).await;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let enough = Arc::new(Notify::new());
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (mut c, run_id, acked, enough) =
            (c.clone(), run_id.clone(), acked.clone(), enough.clone());
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let result = if n % 10 == 9 {
                    // Every tenth write creates a run with a param, exercising other events.
                    let run = c
                        .create_run(pb::CreateRunRequest::default())
                        .await
                        .map(|r| r.into_inner().run.unwrap().info.unwrap().run_id);
                    match run {
                        Ok(id) => {
                            let v = format!("w{w}-{n}");
                            let logged = c
                                .log_param(pb::LogParamRequest {
                                    run_id: id.clone(),
                                    key: "p".into(),
                                    value: v.clone(),
                                })
                                .await;
                            let mut a = acked.lock().unwrap();
                            a.runs
                                .insert(id, if logged.is_ok() { v } else { String::new() });
                            logged.map(|_| ())
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    let metrics = (0..POINTS_PER_BATCH)
                        .map(|i| pb::Metric {
                            key: format!("w{w}"),
                            value: (n * POINTS_PER_BATCH + i) as f64,
                            timestamp: n * POINTS_PER_BATCH + i,
                            step: n * POINTS_PER_BATCH + i,
                        })
                        .collect();
                    let r = c
                        .log_batch(pb::LogBatchRequest {
                            run_id: run_id.clone(),
                            metrics,
                            ..Default::default()
                        })
                        .await;
                    if r.is_ok() {
                        let mut a = acked.lock().unwrap();
                        a.batches.insert((w, n));
                        if a.batches.len() == KILL_AFTER {
                            enough.notify_one();
                        }
                    }
                    r.map(|_| ())
                };
                if result.is_err() {
                    return;
                }
            }
        }));
    }
    enough.notified().await;
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.batches.len() >= KILL_AFTER);

    // Restart on the same directory: every acknowledged write is there.
    let (mut server, addr) = spawn_server(dir.path());
    let mut c = client(addr).await;
    for w in 0..WRITERS {
        let history = c
            .get_metric_history(pb::GetMetricHistoryRequest {
                run_id: run_id.clone(),
                metric_key: format!("w{w}"),
                max_results: Some(1_000_000),
                ..Default::default()
            })
            .await
            .answer()
            .metrics;
        let steps: BTreeSet<i64> = history.iter().map(|m| m.step).collect();
        for &(_, n) in acked.batches.iter().filter(|(aw, _)| *aw == w) {
            for i in 0..POINTS_PER_BATCH {
                assert!(
                    steps.contains(&(n * POINTS_PER_BATCH + i)),
                    "writer {w} batch {n} lost after SIGKILL"
                );
            }
        }
        // A batch is atomic: no batch is there in part.
        assert_eq!(steps.len() as i64 % POINTS_PER_BATCH, 0);
    }
    for (id, param) in &acked.runs {
        let run = c
            .get_run(pb::GetRunRequest { run_id: id.clone() })
            .await
            .answer()
            .run
            .unwrap();
        if !param.is_empty() {
            let params = run.data.unwrap().params;
            assert!(
                params.iter().any(|p| p.key == "p" && &p.value == param),
                "acknowledged param lost on {id}"
            );
        }
    }

    // SIGTERM: a clean exit, after which the log is gap-free and rebuilds to the same state.
    sigterm(&server);
    let status = server.wait().unwrap();
    assert!(status.success(), "graceful shutdown exit status {status:?}");
    let report = arbor::store::rebuild(dir.path(), &Default::default())
        .expect("log is gap-free and replays");
    assert_eq!(report.keys_changed, 0, "{report:?}");

    // The CLI does the same and says so.
    let out = Command::new(BIN)
        .args(["rebuild", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("rebuilt from {} events", report.events)),
        "{text}"
    );
    assert!(text.trim_end().ends_with("0 changed"), "{text}");
}

/// A store whose projections were wiped is rebuilt from its log when the server opens it.
#[tokio::test]
async fn projections_are_rebuilt_when_missing() {
    // Simulates an interrupted rebuild or a new projection version: the server notices on
    // open and re-derives everything from the log.
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = spawn_server(dir.path());
    let mut c = client(addr).await;
    let exp = c
        .create_experiment(pb::CreateExperimentRequest {
            name: "keep-me".into(),
            ..Default::default()
        })
        .await
        .answer()
        .experiment_id;
    sigterm(&server);
    assert!(server.wait().unwrap().success());
    arbor::store::with_database(dir.path(), |tree| {
        let projected: Vec<_> = tree
            .iter()
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k[0] != b'L')
            .collect();
        for k in projected {
            tree.remove(k).unwrap();
        }
    })
    .unwrap();
    let (mut server, addr) = spawn_server_from_env(dir.path());
    let mut c = client(addr).await;
    let e = c
        .get_experiment_by_name(pb::GetExperimentByNameRequest {
            experiment_name: "keep-me".into(),
        })
        .await
        .answer()
        .experiment
        .unwrap();
    assert_eq!(e.experiment_id, exp);
    sigterm(&server);
    assert!(server.wait().unwrap().success());
}

/// `--artifacts-dir` puts uploaded files there, not under the data directory.
#[tokio::test]
async fn artifacts_go_where_artifacts_dir_says() {
    let data = tempfile::tempdir().unwrap();
    let artifacts = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--artifacts-dir")
        .arg(artifacts.path());
    let (mut server, addr) = start(cmd);
    let (status, _) = common::http(
        addr,
        "PUT",
        "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/model.bin",
        None,
        b"weights",
    )
    .await;
    assert_eq!(status, 200);
    let stored = artifacts.path().join("0/r/artifacts/model.bin");
    assert_eq!(std::fs::read(&stored).unwrap(), b"weights");
    assert!(
        !data.path().join("artifacts").exists(),
        "nothing under the data directory"
    );
    let (status, body) = common::http(
        addr,
        "GET",
        "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/model.bin",
        None,
        b"",
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, &b"weights"[..]));
    sigterm(&server);
    assert!(server.wait().unwrap().success());
}
