//! `/metrics`: a scrape in Prometheus' text format shows requests by surface, route and
//! status, committed events and points, commit and flush histograms, and the gauges read
//! at scrape time (store size, free disk, health, memory, file descriptors, sessions).

use crate::common;

use std::collections::BTreeMap;

use arbor::pb;
use common::TestServer;

/// Every sample line of a scrape: `name{labels}` to value.
async fn scrape(server: &TestServer) -> BTreeMap<String, f64> {
    let (status, body) = common::http(server.addr, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("utf-8");
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text:\n{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("a sample line");
            (name.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

/// Requests over both surfaces and a batch of points show in the next scrape; the
/// gauges hold real readings.
#[tokio::test]
async fn a_scrape_shows_requests_commits_and_the_process() {
    let server = TestServer::start().await;
    let before = scrape(&server).await;
    let mut c = server.client().await;
    let run_id = common::new_run_id(
        &mut c,
        pb::CreateRunRequest {
            experiment_id: "0".into(),
            ..Default::default()
        },
    )
    .await;
    c.log_batch(pb::LogBatchRequest {
        run_id: run_id.clone(),
        metrics: (0..5)
            .map(|i| pb::Metric {
                key: "loss".into(),
                value: f64::from(i),
                timestamp: 1,
                step: i64::from(i),
            })
            .collect(),
        ..Default::default()
    })
    .await
    .expect("log batch");
    let missing = c
        .get_run(pb::GetRunRequest {
            run_id: "nope".into(),
        })
        .await
        .expect_err("no such run");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let (status, _) = common::rest(
        server.addr,
        "GET",
        &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let after = scrape(&server).await;

    let grpc_batch = r#"arbor_requests_total{surface="grpc",route="/arbor.v1.TrackingService/LogBatch",status="0"}"#;
    assert!(get(&after, grpc_batch) >= 1.0);
    let not_found = r#"arbor_requests_total{surface="grpc",route="/arbor.v1.TrackingService/GetRun",status="5"}"#;
    assert!(get(&after, not_found) >= 1.0);
    let rest_get =
        r#"arbor_requests_total{surface="mlflow",route="/api/2.0/mlflow/runs/get",status="200"}"#;
    assert!(get(&after, rest_get) >= 1.0);
    assert!(
        get(
            &after,
            r#"arbor_request_duration_seconds_count{surface="mlflow",route="/api/2.0/mlflow/runs/get"}"#
        ) >= 1.0
    );
    let delta = |key: &str| get(&after, key) - before.get(key).copied().unwrap_or(0.0);
    assert!(delta("arbor_points_committed_total") >= 5.0);
    assert!(delta("arbor_events_committed_total") >= 2.0);
    assert!(delta("arbor_commit_duration_seconds_count") >= 2.0);
    assert!(delta("arbor_flush_duration_seconds_count") >= 2.0);
    assert!(get(&after, "arbor_log_head_seq") >= 3.0);
    assert!(get(&after, "arbor_store_bytes") > 0.0);
    assert!(get(&after, "arbor_disk_free_bytes") > 0.0);
    assert_eq!(get(&after, "arbor_healthy"), 1.0);
    assert!(get(&after, "process_resident_memory_bytes") > 1e6);
    assert!(get(&after, "process_open_fds") > 3.0);
    assert!(get(&after, "arbor_connections_open") >= 1.0);
    assert!(get(&after, "arbor_watch_lag_events") >= 0.0);
    drop(c);
    server.stop().await;
}

/// With `--metrics-token`, a scrape without the token (or with another) is 401 with a
/// `WWW-Authenticate` challenge; with it, the metrics.
#[tokio::test]
async fn metrics_token_protects_the_scrape() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_arbor"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--metrics-token", "s3cret-scrape"]);
    let (mut child, addr) = common::start_process(cmd);
    let scrape = |auth: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    };
    let none = scrape("").await;
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(
        none.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{none}"
    );
    let wrong = scrape("Authorization: Bearer s3cret-scrapE\r\n").await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let right = scrape("Authorization: Bearer s3cret-scrape\r\n").await;
    assert!(right.starts_with("HTTP/1.1 200"), "{right}");
    assert!(right.contains("arbor_log_head_seq"), "{right}");
    // The rest of the server is as open as before.
    let (status, _) = common::http(addr, "GET", "/health", None, b"").await;
    assert_eq!(status, 200);
    assert!(common::terminate(&mut child));
}

/// With `--auth`, `/metrics` asks for a user like every route (or only for its own
/// token when `--metrics-token` is set), and the scrape counts the refused requests.
#[tokio::test]
async fn with_auth_the_scrape_needs_credentials_and_counts_refusals() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let get = |addr: std::net::SocketAddr, auth: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    };
    use base64::Engine;
    let basic = format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode("admin:admin-pass-1")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_arbor"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--auth", "--admin-password", "admin-pass-1"]);
    let (mut child, addr) = common::start_process(cmd);
    let anonymous = get(addr, String::new()).await;
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    let scraped = get(addr, basic.clone()).await;
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    let refused = scraped
        .lines()
        .find(|l| l.starts_with("arbor_auth_failures_total{reason=\"unauthenticated\"}"))
        .unwrap_or_else(|| panic!("no refusals counted:\n{scraped}"));
    assert!(refused.ends_with(" 1"), "{refused}");
    assert!(common::terminate(&mut child));

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_arbor"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--auth", "--admin-password", "admin-pass-1"])
        .args(["--metrics-token", "scrape-token"]);
    let (mut child, addr) = common::start_process(cmd);
    let by_token = get(addr, "Authorization: Bearer scrape-token\r\n".into()).await;
    assert!(by_token.starts_with("HTTP/1.1 200"), "{by_token}");
    let by_user = get(addr, basic).await;
    assert!(by_user.starts_with("HTTP/1.1 401"), "{by_user}");
    let (status, _) =
        common::http(addr, "GET", "/api/2.0/mlflow/experiments/search", None, b"").await;
    assert_eq!(status, 401, "the token opens /metrics only");
    assert!(common::terminate(&mut child));
}
