//! What protects a server that browsers can reach, on the real binary: the Host
//! allowlist against DNS rebinding (on loopback only loopback names are answered: 403
//! with MLflow's error shape for HTTP, PERMISSION_DENIED for gRPC; `--allowed-hosts`
//! names others), and CORS, off unless `--cors-allowed-origins` opens it to named origins.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request with the given Host header; returns the status line's code.
async fn status_with_host(addr: SocketAddr, host: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line")
}

fn serve(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbor"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra);
    common::start_process(cmd)
}

/// The loopback default answers loopback names and refuses others, over HTTP and gRPC.
#[tokio::test]
async fn on_loopback_only_loopback_names_are_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(dir.path(), &[]);
    let port = addr.port();
    for ok in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".into(),
    ] {
        assert_eq!(status_with_host(addr, &ok).await, 200, "{ok}");
    }
    for bad in [format!("evil.example:{port}"), "127.0.0.1.nip.io".into()] {
        assert_eq!(status_with_host(addr, &bad).await, 403, "{bad}");
    }
    let (status, json) = {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"POST /api/2.0/mlflow/experiments/create HTTP/1.1\r\nHost: rebound.example\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"name\":\"x\"}\n")
            .await
            .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (out.split(' ').nth(1).unwrap_or_default().to_string(), body)
    };
    assert_eq!(status, "403");
    assert!(json.contains("PERMISSION_DENIED"), "{json}");
    // Nothing was created.
    let (_, found) = common::rest(
        addr,
        "GET",
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=x",
        None,
    )
    .await;
    assert_eq!(found["error_code"], "RESOURCE_DOES_NOT_EXIST", "{found}");

    // gRPC with a foreign :authority.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .origin("http://evil.example:80".parse().expect("uri"))
        .connect()
        .await
        .expect("connect");
    let err = arbor::pb::tracking_service_client::TrackingServiceClient::new(channel)
        .get_experiment(arbor::pb::GetExperimentRequest {
            experiment_id: "0".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(common::terminate(&mut child));
}

/// SIGHUP without TLS does nothing (`systemctl reload` must not stop the server).
#[tokio::test]
async fn sighup_without_tls_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(dir.path(), &[]);
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("SIGHUP");
    // Served after the signal: a request on a new connection, answered in full.
    assert_eq!(status_with_host(addr, "localhost").await, 200);
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the server exited"
    );
    assert!(common::terminate(&mut child));
}

/// `--allowed-hosts` replaces the default: named hosts and subdomains pass, others not.
#[tokio::test]
async fn allowed_hosts_names_the_server_s_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(
        dir.path(),
        &["--allowed-hosts", "tracking.corp.example,*.mesh.local"],
    );
    assert_eq!(status_with_host(addr, "tracking.corp.example").await, 200);
    assert_eq!(
        status_with_host(addr, "arbor.ns.mesh.local:5000").await,
        200
    );
    assert_eq!(status_with_host(addr, "localhost").await, 403);
    assert!(common::terminate(&mut child));
}

/// A raw request with extra header lines; returns the whole response head, lower-cased.
async fn head_of(addr: SocketAddr, method: &str, headers: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!(
            "{method} /health HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Without the flag no cross-origin header is ever sent; with it, listed origins get
/// preflight answers and the header on responses, other origins nothing.
#[tokio::test]
async fn cors_is_off_unless_origins_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(dir.path(), &[]);
    let head = head_of(addr, "GET", "Origin: https://evil.example\r\n").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("access-control-"), "{head}");
    let head = head_of(
        addr,
        "OPTIONS",
        "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n",
    )
    .await;
    assert!(!head.contains("access-control-"), "{head}");
    assert!(common::terminate(&mut child));

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) = serve(
        dir.path(),
        &["--cors-allowed-origins", "https://dash.example"],
    );
    let head = head_of(
        addr,
        "OPTIONS",
        "Origin: https://dash.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 204"), "{head}");
    assert!(
        head.contains("access-control-allow-origin: https://dash.example"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: content-type"),
        "{head}"
    );
    let head = head_of(addr, "GET", "Origin: https://dash.example\r\n").await;
    assert!(
        head.contains("access-control-allow-origin: https://dash.example"),
        "{head}"
    );
    let head = head_of(addr, "GET", "Origin: https://evil.example\r\n").await;
    assert!(!head.contains("access-control-"), "{head}");
    assert!(common::terminate(&mut child));
}
