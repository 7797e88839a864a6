//! Hostile and careless connections and requests: body limits set by flags; idle keep-alive connections and headers sent a
//! byte at a time are closed after the idle timeout while open streams are not; running
//! out of file descriptors backs off (logged, not spinning) and the server answers again
//! once clients leave; the default connection limit stays below the descriptor limit.
//! Each test runs the real binary (under `prlimit` where it needs a small fd limit).

use crate::common;
use common::Answer;

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
        .answer();

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

/// A gauge or counter from `/metrics` (the first series of that name).
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (status, body) = common::http(addr, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            let rest = rest.strip_prefix("_total").unwrap_or(rest);
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Polls `/metrics` until `name` is at least `at_least`, for at most 60 s.
async fn await_metric(addr: SocketAddr, name: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = metric(addr, name).await;
        if now >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {now}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fails instead of hanging: what a slot-starved server would do to `f`.
async fn answered<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} was not answered while bodies stalled"))
}

/// With `--max-concurrent-requests 8`, 520 connections that send the headers of a
/// log-metric request and one byte of its 100-byte body hold no request slot: while
/// they all wait, health checks (HTTP and gRPC) and a well-behaved client (REST and
/// gRPC) are answered; after the body timeout each of them is answered 408 and its
/// connection closed.
#[tokio::test]
async fn stalled_request_bodies_take_no_slots_and_are_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("arbor.log");
    let (mut child, addr) = serve(
        &dir.path().join("data"),
        &[
            "--max-concurrent-requests",
            "8",
            "--body-timeout-secs",
            "15",
            "--idle-timeout-secs",
            "3",
        ],
        None,
        &log,
    );
    let mut stalled = Vec::new();
    for _ in 0..520 {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            b"POST /api/2.0/mlflow/runs/log-metric HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .expect("send");
        stalled.push(s);
    }
    // Every one of them is in the server, waiting for its body (and the scrape itself).
    await_metric(addr, "arbor_requests_in_flight", 521.0).await;

    answered("/health", health_ok(addr)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = answered(
        "gRPC health",
        health.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    .answer()
    .status;
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let (status, created) = answered(
        "REST",
        common::rest(
            addr,
            "POST",
            "/api/2.0/mlflow/experiments/create",
            Some(serde_json::json!({"name": "served"})),
        ),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let mut c =
        pb::tracking_service_client::TrackingServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    let run_id = answered(
        "gRPC",
        common::new_run_id(
            &mut c,
            pb::CreateRunRequest {
                experiment_id: created["experiment_id"].as_str().expect("id").into(),
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(!run_id.is_empty());

    // Then every stalled request is ended: 408, and the connection closed.
    for mut s in stalled {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut answer))
            .await
            .expect("the stalled request was ended")
            .expect("read");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("DEADLINE_EXCEEDED"), "{text}");
    }
    assert!(metric(addr, "arbor_request_body_timeouts").await >= 520.0);
    health_ok(addr).await;
    assert!(common::terminate(&mut child));
}

/// One connection holds at most half the request slots: four uploads stalled on one
/// HTTP/2 connection against `--max-concurrent-requests 4` hold two, and another
/// client is answered while they wait.
#[tokio::test]
async fn one_connection_cannot_take_every_slot() {
    use http_body_util::StreamBody;
    use hyper::body::{Bytes, Frame};
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("arbor.log");
    let (mut child, addr) = serve(
        &dir.path().join("data"),
        &[
            "--max-concurrent-requests",
            "4",
            "--body-timeout-secs",
            "120",
        ],
        None,
        &log,
    );
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    let connection = tokio::spawn(conn);
    let mut bodies = Vec::new();
    let mut uploads = Vec::new();
    for i in 0..4 {
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first bytes"))))
            .await
            .expect("send");
        bodies.push(tx);
        let req = hyper::Request::put(format!(
            "http://{addr}/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/f{i}"
        ))
        .body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .expect("request");
        sender.ready().await.expect("ready");
        uploads.push(tokio::spawn(sender.send_request(req)));
    }
    await_metric(addr, "arbor_requests_in_flight", 5.0).await;
    let (status, _) = answered(
        "a second client",
        common::rest(
            addr,
            "GET",
            "/api/2.0/mlflow/experiments/search?max_results=10",
            None,
        ),
    )
    .await;
    assert_eq!(status, 200);
    // The uploads finish once their bodies end.
    drop(bodies);
    for u in uploads {
        let res = u.await.expect("task").expect("response");
        assert_eq!(res.status(), 200);
    }
    drop(sender);
    let _ = connection.await;
    assert!(common::terminate(&mut child));
}

/// Out of file descriptors, an artifact that exists is not "not found": a download and a
/// listing answer 503 saying why (logged), and both work again once descriptors are free.
#[tokio::test]
async fn artifacts_out_of_file_descriptors_answer_503_not_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("arbor.log");
    let (mut child, addr) = serve(
        &dir.path().join("data"),
        &["--max-connections", "1000", "--idle-timeout-secs", "600"],
        Some(256),
        &log,
    );
    let file = "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/a.txt";
    let list = "/api/2.0/mlflow-artifacts/artifacts?path=0/r/artifacts";
    let (status, _) = common::http(addr, "PUT", file, None, b"hello").await;
    assert_eq!(status, 200);
    // A connection accepted before the crowd, to ask on once descriptors run out: both
    // requests at once on the one connection, so no descriptor is freed between them.
    let mut working = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let crowd = hold(addr, 350, 250).await;
    await_log(&log, "out of file descriptors").await;
    working
        .write_all(
            format!(
                "GET {file} HTTP/1.1\r\nhost: localhost\r\n\r\nGET {list} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("send");
    let mut answer = Vec::new();
    working.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 503").count(), 2, "{text}");
    assert_eq!(text.matches("out of file descriptors").count(), 2, "{text}");
    drop(crowd);
    let (status, body) = common::http(addr, "GET", file, None, b"").await;
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    let (status, listed) = common::rest(addr, "GET", list, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["files"][0]["path"], "a.txt", "{listed}");
    assert!(common::terminate(&mut child));
    assert!(read_log(&log).contains("artifact store: out of resources"));
}
