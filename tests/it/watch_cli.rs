//! `arbor watch` (piped: one line per point) against a real server, through a TCP proxy
//! that the test cuts mid-stream: the watcher reconnects by itself and prints every
//! point exactly once, in order.

use crate::common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use arbor::pb;
use common::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

struct Proxy {
    addr: std::net::SocketAddr,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let tracked = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tracked.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { addr, conns }
    }

    /// Drops every open connection, as a network failure would.
    fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

async fn log(
    c: &mut pb::tracking_service_client::TrackingServiceClient<tonic::transport::Channel>,
    run: &str,
    from: i64,
    to: i64,
) {
    let metrics = (from..to)
        .map(|s| pb::Metric {
            key: "loss".into(),
            value: s as f64 / 10.0,
            timestamp: s,
            step: s,
        })
        .collect();
    c.log_batch(pb::LogBatchRequest {
        run_id: run.into(),
        metrics,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// `arbor watch` reconnects through a cut connection and prints every point exactly once, in order.
#[tokio::test]
async fn the_terminal_watcher_resumes_after_a_dropped_connection() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let run = common::new_run_id(&mut c, pb::CreateRunRequest::default()).await;
    let proxy = Proxy::start(server.addr).await;

    let mut watcher = tokio::process::Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args([
            "watch",
            "--run",
            &run,
            "--from-seq",
            "0",
            "--server",
            &format!("http://{}", proxy.addr),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut read = async |n: usize, seen: &mut Vec<(u64, i64)>| {
        for _ in 0..n {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("watcher output ended");
            let f: Vec<&str> = line.split('\t').collect();
            assert_eq!(f.len(), 6, "{line}");
            assert_eq!(f[1], run);
            assert_eq!(f[2], "loss");
            seen.push((f[0].parse().unwrap(), f[3].parse().unwrap()));
        }
    };

    log(&mut c, &run, 0, 10).await;
    read(10, &mut seen).await;
    proxy.cut();
    log(&mut c, &run, 10, 20).await;
    log(&mut c, &run, 20, 30).await;
    read(20, &mut seen).await;

    let steps: Vec<i64> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        steps,
        (0..30).collect::<Vec<_>>(),
        "every point once, in order"
    );
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "sequence numbers never go back"
    );

    watcher.kill().await.unwrap();
    let mut stderr = String::new();
    watcher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("connection lost") && stderr.contains("resuming from seq"),
        "{stderr}"
    );
    server.stop().await;
}
