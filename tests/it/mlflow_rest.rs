//! MLflow's REST wire rules against a real server over raw HTTP: JSON shapes and
//! presence, error codes and statuses, what the server accepts, artifacts, and that
//! REST and gRPC see one store and one event log.

use crate::common;
use common::Answer;

use arbor::pb::{self, watch_metrics_request::Scope, watch_service_client::WatchServiceClient};
use common::{TestServer, http, rest};
use serde_json::{Value, json};

async fn create_run(s: &TestServer, exp: &str) -> String {
    let (status, body) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/create",
        Some(json!({"experiment_id": exp, "start_time": 1_700_000_000_000i64})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["run"]["info"]["run_id"].as_str().unwrap().to_string()
}

/// REST responses follow MLflow's JSON: enums as names, int64 as numbers, NaN as a string and ±infinity as ±f64::MAX, unset fields absent.
#[tokio::test]
async fn responses_follow_mlflows_json_rules() {
    let s = TestServer::start().await;
    let run = create_run(&s, "0").await;
    let (_, body) = rest(
        s.addr,
        "GET",
        &format!("/api/2.0/mlflow/runs/get?run_id={run}"),
        None,
    )
    .await;
    let info = &body["run"]["info"];
    assert_eq!(info["run_id"], run);
    assert_eq!(info["run_uuid"], run);
    assert_eq!(info["status"], "RUNNING", "enums as names");
    assert!(info["start_time"].is_i64(), "int64 as a JSON number");
    assert!(info.get("end_time").is_none(), "no end_time while running");
    assert_eq!(
        body["run"]["inputs"],
        json!({}),
        "inputs present even when empty"
    );
    assert!(body["run"].get("outputs").is_none());

    let (status, _) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        Some(json!({"run_id": run, "metrics": [
            {"key": "a", "value": "NaN", "timestamp": 1, "step": 0},
            {"key": "b", "value": "Infinity", "timestamp": "2", "step": "3"},
            {"key": "c", "value": "-Infinity", "timestamp": 1}
        ]})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = rest(
        s.addr,
        "GET",
        &format!("/api/2.0/mlflow/runs/get?run_uuid={run}"),
        None,
    )
    .await;
    let metrics: std::collections::HashMap<String, Value> = body["run"]["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["key"].as_str().unwrap().to_string(), m.clone()))
        .collect();
    assert_eq!(metrics["a"]["value"], "NaN");
    // Infinities come back as MLflow's stores keep them: ±f64::MAX.
    assert_eq!(metrics["b"]["value"], json!(f64::MAX));
    assert_eq!(metrics["b"]["step"], 3);
    assert_eq!(metrics["c"]["value"], json!(-f64::MAX));

    let (_, body) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/update",
        Some(json!({"runId": run, "status": 3, "end_time": "1700000000500"})),
    )
    .await;
    assert_eq!(
        body["run_info"]["status"], "FINISHED",
        "camelCase names and enum numbers accepted"
    );
    assert_eq!(body["run_info"]["end_time"], 1_700_000_000_500i64);

    // Pages: the token is absent on the last page.
    let (_, page) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/search",
        Some(json!({"experiment_ids": ["0"], "max_results": 1})),
    )
    .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert!(page.get("next_page_token").is_none());
    let (_, none) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/search",
        Some(json!({"experiment_ids": ["0"], "filter": "params.x = 'y'"})),
    )
    .await;
    assert_eq!(none, json!({}), "an empty result is an empty object");
    // GET with repeated query keys.
    let (status, exps) = rest(
        s.addr,
        "GET",
        "/api/2.0/mlflow/experiments/search?max_results=10&view_type=ALL",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(exps["experiments"][0]["experiment_id"], "0");
    // A double-encoded JSON body is accepted, as MLflow does.
    let (status, _) = http(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/set-tag",
        Some("application/json"),
        json!(json!({"run_id": run, "key": "k", "value": "v"}).to_string())
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = http(s.addr, "GET", "/version", None, b"").await;
    assert_eq!(
        (status, String::from_utf8(body).unwrap()),
        (
            200,
            arbor::api::mlflow::MLFLOW_COMPATIBLE_VERSION.to_string()
        )
    );
    s.stop_and_check_rebuild().await;
}

/// Bad requests get MLflow's error_code and a 4xx, never a status the client retries.
#[tokio::test]
async fn errors_have_mlflows_codes_and_never_a_retried_status() {
    let s = TestServer::start().await;
    let run = create_run(&s, "0").await;
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        (
            "GET",
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=nope",
            None,
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "GET",
            "/api/2.0/mlflow/experiments/get?experiment_id=77",
            None,
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "GET",
            "/api/2.0/mlflow/experiments/get?experiment_id=x",
            None,
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/2.0/mlflow/experiments/create",
            Some(json!({"name": "Default"})),
            400,
            "RESOURCE_ALREADY_EXISTS",
        ),
        (
            "POST",
            "/api/2.0/mlflow/experiments/create",
            Some(json!({})),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            Some(json!({"run_id": run, "key": "m", "value": 1})),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            Some(json!({"run_id": run, "key": "m", "value": 1, "timestamp": 1, "step": "foo"})),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            Some(json!({"run_id": run, "key": "m", "value": "abc", "timestamp": 1})),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/2.0/mlflow/runs/log-parameter",
            Some(json!({"run_id": "0".repeat(32), "key": "k", "value": "v"})),
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "POST",
            "/api/2.0/mlflow/runs/search",
            Some(json!({"experiment_ids": ["0"], "filter": "a = b OR"})),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "POST",
            "/api/2.0/mlflow/runs/search",
            Some(json!({"experiment_ids": ["0"], "max_results": 50001})),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "GET",
            "/api/2.0/mlflow/metrics/get-history?run_id=x",
            None,
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "GET",
            "/api/2.0/mlflow/metrics/get-history-bulk-interval?metric_key=m",
            None,
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "GET",
            "/api/2.0/mlflow/no/such/thing",
            None,
            404,
            "ENDPOINT_NOT_FOUND",
        ),
        (
            "GET",
            "/api/2.0/mlflow/logged-models/m-nope",
            None,
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, json) = rest(s.addr, method, path, body.clone()).await;
        assert_eq!(
            (got, json["error_code"].as_str().unwrap_or("")),
            (status, code),
            "{method} {path} {body:?}: {json}"
        );
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let err = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        Some(json!({"run_id": run, "key": "m", "value": 1})),
    )
    .await
    .1;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Missing value for required parameter 'timestamp'"),
        "{err}"
    );
    // Malformed bodies: 400 BAD_REQUEST, never a status the client retries.
    for (ct, body) in [
        (Some("application/json"), &b"{not json"[..]),
        (Some("text/plain"), &br#"{"name":"x"}"#[..]),
        (Some("application/json"), &b"[1,2]"[..]),
    ] {
        let (status, out) = http(
            s.addr,
            "POST",
            "/api/2.0/mlflow/experiments/create",
            ct,
            body,
        )
        .await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&out));
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["error_code"], "BAD_REQUEST");
    }
    s.stop().await;
}

/// The artifact proxy streams uploads and downloads, lists and deletes, and refuses paths outside the store.
#[tokio::test]
async fn artifacts_stream_list_delete_and_refuse_traversal() {
    let s = TestServer::start().await;
    let run = create_run(&s, "0").await;
    let base = format!("/api/2.0/mlflow-artifacts/artifacts/0/{run}/artifacts");
    let big: Vec<u8> = (0..(12 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let (status, _) = http(
        s.addr,
        "PUT",
        &format!("{base}/data/big.bin"),
        Some("application/octet-stream"),
        &big,
    )
    .await;
    assert_eq!(status, 200);
    http(s.addr, "PUT", &format!("{base}/a.txt"), None, b"alpha").await;
    let (status, got) = http(s.addr, "GET", &format!("{base}/data/big.bin"), None, b"").await;
    assert_eq!(status, 200);
    assert!(got == big, "the download equals the upload");
    let (_, listing) = rest(
        s.addr,
        "GET",
        &format!("/api/2.0/mlflow-artifacts/artifacts?path=0/{run}/artifacts"),
        None,
    )
    .await;
    assert_eq!(
        listing,
        json!({"files": [{"path": "a.txt", "is_dir": false, "file_size": 5}, {"path": "data", "is_dir": true}]})
    );
    for empty in [
        format!("0/{run}/artifacts/a.txt"),
        format!("0/{run}/artifacts/missing"),
    ] {
        let (_, listing) = rest(
            s.addr,
            "GET",
            &format!("/api/2.0/mlflow-artifacts/artifacts?path={empty}"),
            None,
        )
        .await;
        assert_eq!(listing, json!({}), "a file or a missing path lists as {{}}");
    }
    // The tracking API's listing of a run.
    let (_, listing) = rest(
        s.addr,
        "GET",
        &format!("/api/2.0/mlflow/artifacts/list?run_id={run}&path=data"),
        None,
    )
    .await;
    assert_eq!(
        listing["files"],
        json!([{"path": "data/big.bin", "is_dir": false, "file_size": big.len()}])
    );
    assert_eq!(
        listing["root_uri"],
        format!("mlflow-artifacts:/0/{run}/artifacts")
    );
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "0%2F..%2F..%2Fx",
        "%2Fetc%2Fpasswd",
        "a%5C..%5Cb",
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let (status, out) = rest(
                s.addr,
                method,
                &format!("/api/2.0/mlflow-artifacts/artifacts/{bad}"),
                None,
            )
            .await;
            assert_eq!(
                (status, out["message"].as_str().unwrap_or("")),
                (400, "Invalid path"),
                "{method} {bad}"
            );
        }
        let (status, _) = rest(
            s.addr,
            "GET",
            &format!("/api/2.0/mlflow-artifacts/artifacts?path={bad}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "list {bad}");
    }
    let (status, _) = rest(s.addr, "DELETE", &format!("{base}/data"), None).await;
    assert_eq!(status, 200);
    let (status, _) = http(s.addr, "GET", &format!("{base}/data/big.bin"), None, b"").await;
    assert_eq!(status, 404);
    // Uploads are in the change feed.
    let mut w = WatchServiceClient::new(s.channel().await);
    let mut feed = w
        .watch_events(pb::WatchEventsRequest {
            from_seq: Some(1),
            experiment_id: String::new(),
        })
        .await
        .answer();
    let mut written = Vec::new();
    while written.len() < 2 {
        if let Some(pb::event::Payload::ArtifactWritten(a)) =
            feed.message().await.unwrap().unwrap().payload
        {
            assert_eq!(a.run_id, run);
            written.push((a.path, a.size));
        }
    }
    assert_eq!(
        written[0],
        (format!("0/{run}/artifacts/data/big.bin"), big.len() as u64)
    );
    s.stop().await;
}

/// A write over REST is seen over gRPC and by watchers: one store, one log.
#[tokio::test]
async fn rest_and_grpc_share_one_store_and_one_log() {
    let s = TestServer::start().await;
    let run = create_run(&s, "0").await;
    let mut w = WatchServiceClient::new(s.channel().await);
    let mut stream = w
        .watch_metrics(pb::WatchMetricsRequest {
            scope: Some(Scope::RunId(run.clone())),
            keys: vec![],
            from_seq: None,
        })
        .await
        .answer();
    stream.message().await.unwrap().unwrap();
    rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        Some(json!({"run_id": run, "key": "loss", "value": 0.5, "timestamp": 10, "step": 1})),
    )
    .await;
    let msg = stream.message().await.unwrap().unwrap();
    assert_eq!(
        (msg.series[0].key.as_str(), msg.series[0].values[0]),
        ("loss", 0.5),
        "a REST write on a gRPC stream"
    );
    let mut c = s.client().await;
    c.log_metric(pb::LogMetricRequest {
        run_id: run.clone(),
        key: "loss".into(),
        value: 0.25,
        timestamp: 20,
        step: 2,
    })
    .await
    .unwrap();
    let (_, history) = rest(
        s.addr,
        "GET",
        &format!("/api/2.0/mlflow/metrics/get-history?run_id={run}&metric_key=loss"),
        None,
    )
    .await;
    assert_eq!(
        history["metrics"].as_array().unwrap().len(),
        2,
        "a gRPC write in a REST read"
    );
    s.stop_and_check_rebuild().await;
}

/// get-history-bulk-interval samples per run; the legacy log-model and run outputs are stored.
#[tokio::test]
async fn bulk_interval_legacy_log_model_and_outputs() {
    let s = TestServer::start().await;
    let (a, b) = (create_run(&s, "0").await, create_run(&s, "0").await);
    for run in [&a, &b] {
        let metrics: Vec<Value> = (0..10)
            .map(|i| json!({"key": "m", "value": i, "timestamp": i, "step": i}))
            .collect();
        rest(
            s.addr,
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            Some(json!({"run_id": run, "metrics": metrics})),
        )
        .await;
    }
    let (status, body) = rest(s.addr, "GET", &format!("/api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids={a}&run_ids={b}&metric_key=m&start_step=2&end_step=8&max_results=4"), None).await;
    assert_eq!(status, 200, "{body}");
    let pts = body["metrics"].as_array().unwrap();
    let steps_a: Vec<i64> = pts
        .iter()
        .filter(|p| p["run_id"] == a.as_str())
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps_a.len(), 4);
    assert_eq!((steps_a[0], steps_a[3]), (2, 8), "first and last kept");
    let (status, _) = rest(s.addr, "GET", &format!("/api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids={a}&metric_key=m&start_step=5"), None).await;
    assert_eq!(status, 400);

    for model in [
        json!({"flavors": {"sklearn": {}}}),
        json!({"flavors": {"pyfunc": {}}}),
    ] {
        let (status, _) = rest(
            s.addr,
            "POST",
            "/api/2.0/mlflow/runs/log-model",
            Some(json!({"run_id": a, "model_json": model.to_string()})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (_, run) = rest(
        s.addr,
        "GET",
        &format!("/api/2.0/mlflow/runs/get?run_id={a}"),
        None,
    )
    .await;
    let history = run["run"]["data"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "mlflow.log-model.history")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let history: Vec<Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(history.len(), 2);

    let (status, _) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/outputs",
        Some(json!({"run_id": a, "models": [{"model_id": "m-1", "step": 3}]})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, run) = rest(
        s.addr,
        "GET",
        &format!("/api/2.0/mlflow/runs/get?run_id={a}"),
        None,
    )
    .await;
    assert_eq!(
        run["run"]["outputs"],
        json!({"model_outputs": [{"model_id": "m-1", "step": 3}]})
    );
    s.stop_and_check_rebuild().await;
}

/// Dataset inputs are stored once per role, searchable, and listed by search-datasets.
#[tokio::test]
async fn log_inputs_are_stored_searchable_and_summarised() {
    let s = TestServer::start().await;
    let run = create_run(&s, "0").await;
    let dataset = json!({"name": "toy", "digest": "abc123", "source_type": "local", "source": "{\"uri\": \"x\"}"});
    let body = json!({"run_id": run, "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "training"}], "dataset": dataset}]});
    for _ in 0..2 {
        let (status, out) = rest(
            s.addr,
            "POST",
            "/api/2.0/mlflow/runs/log-inputs",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 200, "{out}");
    }
    let (_, got) = rest(
        s.addr,
        "GET",
        &format!("/api/2.0/mlflow/runs/get?run_id={run}"),
        None,
    )
    .await;
    let inputs = got["run"]["inputs"]["dataset_inputs"].as_array().unwrap();
    assert_eq!(
        inputs.len(),
        1,
        "the same dataset in the same role is recorded once"
    );
    assert_eq!(inputs[0]["dataset"]["digest"], "abc123");
    let (_, found) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/search",
        Some(json!({"experiment_ids": ["0"], "filter": "dataset.context = 'training'"})),
    )
    .await;
    assert_eq!(found["runs"].as_array().unwrap().len(), 1);
    let (_, sums) = rest(
        s.addr,
        "POST",
        "/ajax-api/2.0/mlflow/experiments/search-datasets",
        Some(json!({"experiment_ids": ["0"]})),
    )
    .await;
    assert_eq!(
        sums,
        json!({"dataset_summaries": [{"experiment_id": "0", "name": "toy", "digest": "abc123", "context": "training"}]})
    );
    let (status, out) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/log-inputs",
        Some(json!({"run_id": run, "datasets": [{"dataset": {"name": "n"}}]})),
    )
    .await;
    assert_eq!(
        (status, out["error_code"].as_str().unwrap()),
        (400, "INVALID_PARAMETER_VALUE")
    );
    s.stop_and_check_rebuild().await;
}

/// An upload onto a directory, or below a file, is a 400 and leaves no temporary file;
/// symbolic links inside the artifact root are never followed, by any verb.
#[tokio::test]
async fn artifact_uploads_refuse_directories_files_as_parents_and_links() {
    let s = TestServer::start().await;
    let run = create_run(&s, "0").await;
    let base = format!("/api/2.0/mlflow-artifacts/artifacts/0/{run}/artifacts");
    let (status, _) = http(s.addr, "PUT", &format!("{base}/d/f.txt"), None, b"x").await;
    assert_eq!(status, 200);
    for bad in ["d", "d/f.txt/below"] {
        let (status, body) = http(s.addr, "PUT", &format!("{base}/{bad}"), None, b"payload").await;
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    let root = s.dir.path().join("artifacts");
    let leftovers: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".upload-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A link planted inside the store, pointing outside it.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
    let run_dir = root.join("0").join(&run).join("artifacts");
    std::os::unix::fs::symlink(outside.path(), run_dir.join("link")).unwrap();
    for (method, path) in [
        ("GET", format!("{base}/link/secret.txt")),
        ("PUT", format!("{base}/link/planted.txt")),
        ("DELETE", format!("{base}/link/secret.txt")),
        (
            "GET",
            format!("/api/2.0/mlflow-artifacts/artifacts?path=0/{run}/artifacts/link"),
        ),
    ] {
        let (status, body) = http(s.addr, method, &path, None, b"x").await;
        assert_eq!(
            status,
            400,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert!(outside.path().join("secret.txt").exists());
    assert!(!outside.path().join("planted.txt").exists());
    s.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
