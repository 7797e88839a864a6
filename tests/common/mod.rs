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
