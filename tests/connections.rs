//! Hostile and careless connections and requests: body limits set by flags; idle keep-alive connections and headers sent a
//! byte at a time are closed after the idle timeout while open streams are not; running
//! out of file descriptors backs off (logged, not spinning) and the server answers again
//! once clients leave; the default connection limit stays below the descriptor limit.
//! Each test runs the real binary (under `prlimit` where it needs a small fd limit).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arbor::pb::{self, watch_metrics_request::Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `arbor serve` on port 0 with `extra` flags, optionally under `prlimit --nofile=N`,
/// stderr into `log`. Returns the process and its address.
fn serve(dir: &Path, extra: &[&str], nofile: Option<u32>, log: &Path) -> (Child, SocketAddr) {
    let bin = env!("CARGO_BIN_EXE_arbor");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("ARBOR_LOG", "warn")
        .env("ARBOR_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    let mut child = cmd.spawn().expect("spawn arbor");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read address");
    let addr = line
        .trim()
        .strip_prefix("arbor listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    (child, addr)
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(path)
        .expect("log")
        .read_to_string(&mut s)
        .expect("read log");
    s
}

/// Reads until the peer closes the connection (EOF or reset); panics after `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

/// With `--idle-timeout-secs 1`: a keep-alive connection after its request is closed;
/// 100 connections sending their headers a byte at a time are all closed; a watch
/// stream quiet for longer than the timeout stays open and delivers the next point.
#[tokio::test]
async fn idle_connections_and_slow_headers_are_closed_but_streams_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("arbor.log");
    let (mut child, addr) = serve(
        &dir.path().join("data"),
        &["--idle-timeout-secs", "1"],
        None,
        &log,
    );

    // A watch stream opened first, quiet through everything below.
    let mut tracking =
        pb::tracking_service_client::TrackingServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    let run_id = common::new_run_id(
        &mut tracking,
        pb::CreateRunRequest {
            experiment_id: "0".into(),
            ..Default::default()
        },
    )
    .await;
    let mut watcher =
        pb::watch_service_client::WatchServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    let mut stream = watcher
        .watch_metrics(pb::WatchMetricsRequest {
            scope: Some(Scope::RunId(run_id.clone())),
            keys: vec![],
            from_seq: None,
        })
        .await
        .expect("watch")
        .into_inner();

    // An idle keep-alive connection.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut first = [0u8; 64];
    let n = idle.read(&mut first).await.expect("response");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    // 100 slow senders, a byte every 200 ms.
    let mut slow = Vec::new();
    for _ in 0..100 {
        slow.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let request = b"GET /health HTTP/1.1\r\nhost: a-very-slow-client\r\n\r\n";
    let trickle = tokio::spawn(async move {
        'bytes: for &byte in request {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut closed = 0;
            for s in &mut slow {
                if s.write_all(&[byte]).await.is_err() {
                    closed += 1;
                }
            }
            if closed == slow.len() {
                break 'bytes;
            }
        }
        let mut left_open = 0;
        for s in &mut slow {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => {}
                _ => left_open += 1,
            }
        }
        left_open
    });
    closed_within(&mut idle, Duration::from_secs(30)).await;
    assert_eq!(
        trickle.await.expect("slow clients"),
        0,
        "slow clients left open"
    );

    // The stream was quiet for seconds, well past the timeout; it still delivers.
    tracking
        .log_metric(pb::LogMetricRequest {
            run_id: run_id.clone(),
            key: "loss".into(),
            value: 0.5,
            timestamp: 1,
            step: 1,
        })
        .await
        .expect("log");
    loop {
        let msg = stream
            .message()
            .await
            .expect("the stream is still open")
            .expect("the stream did not end");
        if msg.series.iter().any(|s| s.key == "loss") {
            break;
        }
    }
    drop((stream, watcher, tracking));
    assert!(common::terminate(&mut child));
}

/// Opens `n` connections (each sends nothing) and returns once `enough` of them are
/// established: connections beyond what the server takes and its listen backlog holds
/// stay in the kernel's SYN retries. Dropping the crowd drops all of them.
struct Crowd {
    streams: Vec<tokio::net::TcpStream>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Crowd {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn hold(addr: SocketAddr, n: usize, enough: usize) -> Crowd {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks = (0..n)
        .map(|_| {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                    let _ = tx.send(s);
                }
            })
        })
        .collect();
    drop(tx);
    let mut streams = Vec::with_capacity(n);
    while streams.len() < enough {
        streams.push(rx.recv().await.expect("connections are established"));
    }
    Crowd { streams, tasks }
}

async fn health_ok(addr: SocketAddr) {
    let (status, _) = common::http(addr, "GET", "/health", None, b"").await;
    assert_eq!(status, 200);
}

/// Polls the log until it holds `needle`, for at most 30 s.
async fn await_log(log: &Path, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = read_log(log);
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log never said {needle:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With 256 file descriptors and a connection limit above that, 350 clients make
/// accept fail with EMFILE: the server says so in its log (once, not in a loop), keeps
/// serving the connections it has, and answers new clients once the crowd leaves.
#[tokio::test]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("arbor.log");
    let (mut child, addr) = serve(
        &dir.path().join("data"),
        &["--max-connections", "1000", "--idle-timeout-secs", "600"],
        Some(256),
        &log,
    );
    let mut working = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let crowd = hold(addr, 350, 250).await;
    let text = await_log(&log, "out of file descriptors").await;
    assert!(
        text.matches("accepting a connection failed").count() <= 3,
        "accept failures are logged at most every few seconds:\n{text}"
    );
    // A connection accepted before the crowd is still served.
    working
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut buf = [0u8; 64];
    let n = working.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    drop(crowd);
    health_ok(addr).await;
    assert!(common::terminate(&mut child));
}

/// Without `--max-connections` the limit is derived from the descriptor limit: 350
/// clients against 256 descriptors never make accept fail; the extra ones wait, and
/// everyone is answered once the first ones leave.
#[tokio::test]
async fn the_default_connection_limit_stays_below_the_descriptor_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("arbor.log");
    let (mut child, addr) = serve(&dir.path().join("data"), &[], Some(256), &log);
    let crowd = hold(addr, 350, 250).await;
    assert!(crowd.streams.len() >= 250);
    // A request from a client beyond the limit waits for a slot and is then answered.
    let late = tokio::spawn(async move { health_ok(addr).await });
    drop(crowd);
    late.await.expect("the late client is answered");
    assert!(common::terminate(&mut child));
    let text = read_log(&log);
    assert!(!text.contains("accepting a connection failed"), "{text}");
}

/// `--max-json-body-mb` and `--max-grpc-message-mb` bound request sizes: a body over the
/// limit is refused with the flag named (gRPC: an error), one under it is taken.
#[tokio::test]
async fn request_size_limits_are_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("arbor.log");
    let (mut child, addr) = serve(
        &dir.path().join("data"),
        &["--max-json-body-mb", "1", "--max-grpc-message-mb", "1"],
        None,
        &log,
    );
    let mut c =
        pb::tracking_service_client::TrackingServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    let run_id = common::new_run_id(
        &mut c,
        pb::CreateRunRequest {
            experiment_id: "0".into(),
            ..Default::default()
        },
    )
    .await;
    let body = |n: usize| {
        serde_json::json!({"run_id": run_id, "key": "k", "value": "x".repeat(n)}).to_string()
    };
    let (status, out) = common::http(
        addr,
        "POST",
        "/api/2.0/mlflow/runs/set-tag",
        Some("application/json"),
        body(2 << 20).as_bytes(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&out).contains("--max-json-body-mb"));
    let (status, _) = common::http(
        addr,
        "POST",
        "/api/2.0/mlflow/runs/set-tag",
        Some("application/json"),
        body(500_000).as_bytes(),
    )
    .await;
    assert_eq!(status, 200);

    let tag = |n: usize| pb::SetTagRequest {
        run_id: run_id.clone(),
        key: "g".into(),
        value: "y".repeat(n),
    };
    c.set_tag(tag(2 << 20))
        .await
        .expect_err("a 2 MiB message is over the limit");
    c.set_tag(tag(500_000))
        .await
        .expect("a 0.5 MiB message is under it");
    drop(c);
    assert!(common::terminate(&mut child));
}
