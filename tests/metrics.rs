//! `/metrics`: a scrape in Prometheus' text format shows requests by surface, route and
//! status, committed events and points, commit and flush histograms, and the gauges read
//! at scrape time (store size, free disk, health, memory, file descriptors, sessions).

mod common;

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
