//! The import endpoints `arbor import` writes through (`/api/arbor/v1/import/...`):
//! runs keep their ids and times and may arrive before their parents; experiments keep
//! their times and merge by name; asking again changes nothing; bad ids change nothing.
//! And floats arrive exactly: a value logged over REST comes back bit for bit.

use crate::common;
use common::Answer;

use arbor::pb;
use common::{TestServer, rest};
use serde_json::json;

async fn head_seq(server: &TestServer) -> String {
    let (status, body) = common::http(server.addr, "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    String::from_utf8(body)
        .expect("utf-8")
        .lines()
        .find(|l| l.starts_with("arbor_log_head_seq "))
        .expect("head seq")
        .to_string()
}

async fn import_run(
    server: &TestServer,
    run_id: &str,
    exp: &str,
    parent: Option<&str>,
) -> serde_json::Value {
    let mut tags = vec![json!({"key": "team", "value": "a"})];
    if let Some(p) = parent {
        tags.push(json!({"key": "mlflow.parentRunId", "value": p}));
    }
    let (status, body) = rest(
        server.addr,
        "POST",
        "/api/arbor/v1/import/run",
        Some(json!({"run_id": run_id, "experiment_id": exp, "run_name": run_id, "user_id": "u", "start_time": 1000, "tags": tags})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A grandchild, then its parent, then the root: once all are in, the tree is whole
/// (roots, depths, children), whatever the order; importing again creates nothing and
/// writes nothing; the projections equal a rebuild from the log.
#[tokio::test]
async fn runs_keep_their_ids_and_may_arrive_before_their_parents() {
    let server = TestServer::start().await;
    let (status, body) = rest(
        server.addr,
        "POST",
        "/api/arbor/v1/import/experiment",
        Some(
            json!({"name": "imported", "creation_time": 1234, "last_update_time": 5678,
                    "tags": [{"key": "origin", "value": "mlflow"}]}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let exp = body["experiment_id"].as_str().expect("id").to_string();
    let (_, got) = rest(
        server.addr,
        "GET",
        &format!("/api/2.0/mlflow/experiments/get?experiment_id={exp}"),
        None,
    )
    .await;
    assert_eq!(got["experiment"]["creation_time"], json!(1234));
    assert_eq!(got["experiment"]["last_update_time"], json!(5678));
    assert_eq!(
        got["experiment"]["tags"],
        json!([{"key": "origin", "value": "mlflow"}])
    );
    // The same name is the same experiment; Default is Default.
    let (_, again) = rest(
        server.addr,
        "POST",
        "/api/arbor/v1/import/experiment",
        Some(json!({"name": "imported"})),
    )
    .await;
    assert_eq!(again["experiment_id"], json!(exp));
    let (_, default) = rest(
        server.addr,
        "POST",
        "/api/arbor/v1/import/experiment",
        Some(json!({"name": "Default"})),
    )
    .await;
    assert_eq!(default["experiment_id"], json!("0"));

    let (root, child, grandchild) = (
        "a0000000000000000000000000000001",
        "b0000000000000000000000000000002",
        "c0000000000000000000000000000003",
    );
    let first = import_run(&server, grandchild, &exp, Some(child)).await;
    assert_eq!(first["created"], json!(true));
    assert_eq!(first["run"]["info"]["run_id"], json!(grandchild));
    assert_eq!(first["run"]["info"]["start_time"], json!(1000));
    import_run(&server, child, &exp, Some(root)).await;
    import_run(&server, root, &exp, None).await;

    let mut h =
        arbor::pb::hierarchy_service_client::HierarchyServiceClient::new(server.channel().await);
    let tree = h
        .get_run_tree(pb::GetRunTreeRequest {
            run_id: root.into(),
            ..Default::default()
        })
        .await
        .answer()
        .root
        .expect("root");
    let child_node = &tree.children[0];
    assert_eq!(
        child_node.info.as_ref().map(|i| i.run_id.as_str()),
        Some(child)
    );
    let gc = &child_node.children[0];
    let gc_info = gc.info.as_ref().expect("info");
    assert_eq!(
        (
            gc_info.run_id.as_str(),
            gc_info.depth,
            gc_info.root_run_id.as_str()
        ),
        (grandchild, 2, root)
    );

    let before = head_seq(&server).await;
    let again = import_run(&server, grandchild, &exp, Some(child)).await;
    assert_eq!(again["created"], json!(false));
    assert_eq!(
        head_seq(&server).await,
        before,
        "a second import wrote events"
    );
    server.stop_and_check_rebuild().await;
}

/// Ids that are not letters, digits, `-` and `_` are refused with MLflow's error code,
/// and nothing is written.
#[tokio::test]
async fn bad_import_ids_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let before = head_seq(&server).await;
    for bad in ["", "../x", "a b", &"x".repeat(300)] {
        let (status, body) = rest(
            server.addr,
            "POST",
            "/api/arbor/v1/import/run",
            Some(json!({"run_id": bad, "experiment_id": "0"})),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(
            body["error_code"],
            json!("INVALID_PARAMETER_VALUE"),
            "{bad}"
        );
    }
    let (status, _) = rest(
        server.addr,
        "POST",
        "/api/arbor/v1/import/run",
        Some(json!({"run_id": "abc", "experiment_id": "42"})),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(head_seq(&server).await, before);
    server.stop().await;
}

/// Values logged over MLflow REST come back bit for bit (JSON floats are parsed
/// exactly: 1/11 once came back one ulp off).
#[tokio::test]
async fn metric_values_round_trip_exactly_over_rest() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let run = common::new_run_id(&mut c, pb::CreateRunRequest::default()).await;
    let values = [
        1.0 / 11.0,
        0.1 + 0.2,
        1e-300,
        123_456_789.123_456_78,
        -2.0 / 3.0,
        f64::MAX,
    ];
    for (i, v) in values.iter().enumerate() {
        let body = format!(
            r#"{{"run_id":"{run}","key":"x","value":{},"timestamp":1,"step":{i}}}"#,
            serde_json::to_string(v).expect("json")
        );
        let (status, _) = common::http(
            server.addr,
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            Some("application/json"),
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 200);
    }
    let history = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: run,
            metric_key: "x".into(),
            ..Default::default()
        })
        .await
        .answer()
        .metrics;
    let got: Vec<u64> = history.iter().map(|m| m.value.to_bits()).collect();
    let want: Vec<u64> = values.iter().map(|v| v.to_bits()).collect();
    assert_eq!(got, want);
    server.stop().await;
}
