//! Test harness: a real Arbor server on `127.0.0.1:0` with its own temporary data
//! directory, and a generated gRPC client for it. The listener is bound before the
//! server task starts, so a client can connect at once: no sleeps.

#![allow(dead_code)]

use std::net::SocketAddr;

use arbor::pb::tracking_service_client::TrackingServiceClient;
use arbor::store::{Store, StoreConfig};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir")).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        let store = Store::open(dir.path(), &StoreConfig::default()).expect("open store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            arbor::server::run(listener, store, async {
                let _ = rx.await;
            })
            .await
            .expect("server");
        });
        TestServer {
            addr,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(&self) -> TrackingServiceClient<Channel> {
        TrackingServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    /// Shuts down gracefully and hands back the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Stops the server and checks that rebuilding every projection from the log changes
    /// nothing: live state equals the state derived from the log.
    pub async fn stop_and_check_rebuild(self) {
        let dir = self.stop().await;
        let report = arbor::store::rebuild(dir.path(), &StoreConfig::default()).expect("rebuild");
        assert_eq!(
            report.keys_changed, 0,
            "rebuild changed projections: {report:?}"
        );
        assert!(report.events > 0);
    }
}

pub fn code(status: &tonic::Status) -> tonic::Code {
    status.code()
}

/// A plain HTTP/1.1 exchange over a fresh connection: (status, body). Handles
/// Content-Length and chunked bodies; enough for testing the REST surface.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let headers = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .expect("status")
        .parse()
        .expect("status code");
    let mut rest = raw[split + 4..].to_vec();
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)
                .expect("hex size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = rest[nl + 2 + size + 2..].to_vec();
        }
        rest = out;
    }
    (status, rest)
}

/// A JSON exchange with the MLflow REST API.
pub async fn rest(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let ct = (!bytes.is_empty()).then_some("application/json");
    let (status, out) = http(addr, method, path, ct, &bytes).await;
    let json = if out.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&out).into()))
    };
    (status, json)
}

/// Creates an experiment and returns its id.
pub async fn create_experiment(c: &mut TrackingServiceClient<Channel>, name: &str) -> String {
    c.create_experiment(arbor::pb::CreateExperimentRequest {
        name: name.into(),
        ..Default::default()
    })
    .await
    .expect("create experiment")
    .into_inner()
    .experiment_id
}
