//! The endpoints MLflow's web UI calls, against a real server: the landing page without
//! a UI, GraphQL with MLflow's shapes and errors, the artifact viewer and uploader, the
//! bulk history the charts read, and the UI's start-up calls. (tests/python drives the
//! UI itself in Chromium.)

use crate::common;

use common::{TestServer, http, rest};
use serde_json::{Value, json};

async fn run_with_points(s: &TestServer) -> String {
    let (_, body) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/create",
        Some(json!({"experiment_id": "0", "run_name": "r", "start_time": 1_700_000_000_000i64})),
    )
    .await;
    let run = body["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let (status, _) = rest(
        s.addr,
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        Some(
            json!({"run_id": run, "params": [{"key": "lr", "value": "0.1"}], "metrics": [
                {"key": "loss", "value": 1.0, "timestamp": 3, "step": 0},
                {"key": "loss", "value": "NaN", "timestamp": 4, "step": 1},
            ]}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    run
}

async fn graphql(s: &TestServer, query: &str, variables: Value) -> (u16, Value) {
    rest(
        s.addr,
        "POST",
        "/graphql",
        Some(json!({"query": query, "variables": variables, "operationName": "Op"})),
    )
    .await
}

/// Without a UI, `/` is Arbor's live page, which says how to turn MLflow's UI on.
#[tokio::test]
async fn the_landing_page_explains_how_to_get_the_ui() {
    let s = TestServer::start().await;
    let (status, body) = http(s.addr, "GET", "/", None, b"").await;
    assert_eq!(status, 200);
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("--mlflow-ui auto"), "{page}");
    let (status, _) = http(s.addr, "GET", "/static-files/index.html", None, b"").await;
    assert_eq!(status, 404, "no build, no static files");
    s.stop().await;
}

/// GraphQL answers GetRun, SearchRuns and GetExperiment with MLflow's type names,
/// int64 as strings and NaN as null, and errors as MLflow's server does.
#[tokio::test]
async fn graphql_answers_with_mlflows_shapes() {
    let s = TestServer::start().await;
    let run = run_with_points(&s).await;
    let (status, got) = graphql(
        &s,
        "query Op($data: MlflowGetRunInput!) { mlflowGetRun(input: $data) { run { info { runName } } } }",
        json!({"data": {"runId": run}}),
    )
    .await;
    assert_eq!(status, 200);
    let answer = &got["data"]["mlflowGetRun"];
    assert_eq!(answer["__typename"], "MlflowGetRunResponse");
    assert_eq!(answer["apiError"], Value::Null);
    let r = &answer["run"];
    assert_eq!(r["__typename"], "MlflowRunExtension");
    assert_eq!(r["info"]["runName"], "r");
    assert_eq!(r["info"]["status"], "RUNNING");
    assert_eq!(r["info"]["startTime"], "1700000000000");
    assert_eq!(r["experiment"]["name"], "Default");
    assert_eq!(
        r["data"]["params"][0],
        json!({"__typename": "MlflowParam", "key": "lr", "value": "0.1"})
    );
    assert_eq!(r["data"]["metrics"][0]["value"], Value::Null, "NaN is null");
    assert_eq!(r["data"]["metrics"][0]["step"], "1");

    let (_, got) = graphql(
        &s,
        "query Op($data: MlflowSearchRunsInput!) { mlflowSearchRuns(input: $data) { runs { info { runId } } } }",
        json!({"data": {"experimentIds": ["0"], "filter": "params.lr = '0.1'"}}),
    )
    .await;
    assert_eq!(
        got["data"]["mlflowSearchRuns"]["runs"][0]["info"]["runId"],
        run
    );

    let (_, got) = graphql(
        &s,
        "query Op($input: MlflowGetExperimentInput!) { mlflowGetExperiment(input: $input) { experiment { name } } }",
        json!({"input": {"experimentId": "0"}}),
    )
    .await;
    assert_eq!(
        got["data"]["mlflowGetExperiment"]["experiment"]["__typename"],
        "MlflowExperiment"
    );

    // An error, as MLflow's server gives it: the field null, the message in `errors`.
    let (status, got) = graphql(
        &s,
        "query Op($data: MlflowGetRunInput!) { mlflowGetRun(input: $data) { run { info { runId } } } }",
        json!({"data": {"runId": "0".repeat(32)}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got["data"]["mlflowGetRun"], Value::Null);
    assert!(
        got["errors"][0].as_str().unwrap().contains("not found"),
        "{got}"
    );
    // A root field Arbor does not answer is a GraphQL error, not a wrong answer.
    let (status, got) = graphql(
        &s,
        "query Op { mlflowListArtifacts { files { path } } }",
        json!({}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        got["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("mlflowGetRun")
    );
    s.stop_and_check_rebuild().await;
}

/// The UI uploads small files with upload-artifact and reads them back with get-artifact
/// (as attachments, typed by name); paths leaving the run are refused.
#[tokio::test]
async fn the_artifact_viewer_and_uploader_work() {
    let s = TestServer::start().await;
    let run = run_with_points(&s).await;
    let (status, _) = http(
        s.addr,
        "POST",
        &format!("/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run}&path=notes/a.txt"),
        Some("application/octet-stream"),
        b"hello",
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = http(
        s.addr,
        "GET",
        &format!("/get-artifact?path=notes/a.txt&run_uuid={run}"),
        None,
        b"",
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    let (status, body) = rest(
        s.addr,
        "GET",
        &format!("/get-artifact?path=../../x&run_uuid={run}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Invalid path"))
    );
    let (status, body) = rest(
        s.addr,
        "POST",
        &format!("/ajax-api/2.0/mlflow/upload-artifact?run_uuid={run}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("Request must specify path."))
    );
    s.stop_and_check_rebuild().await;
}

/// The charts' get-history-bulk returns each run's points with its run id, and the
/// UI's start-up calls get MLflow's answers.
#[tokio::test]
async fn bulk_history_and_start_up_calls() {
    let s = TestServer::start().await;
    let run = run_with_points(&s).await;
    let (status, body) = rest(
        s.addr,
        "GET",
        &format!("/ajax-api/2.0/mlflow/metrics/get-history-bulk?run_id={run}&metric_key=loss"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let metrics = body["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2);
    assert!(metrics.iter().all(|m| m["run_id"] == run.as_str()));
    let (_, body) = rest(
        s.addr,
        "GET",
        "/ajax-api/2.0/mlflow/metrics/get-history-bulk?metric_key=loss",
        None,
    )
    .await;
    assert_eq!(
        body["message"],
        "GetMetricHistoryBulk request must specify at least one run_id."
    );
    let (_, body) = rest(s.addr, "GET", "/ajax-api/3.0/mlflow/ui-telemetry", None).await;
    assert_eq!(body["disable_ui_telemetry"], true);
    let (status, body) = rest(
        s.addr,
        "POST",
        "/ajax-api/2.0/mlflow/registered-models/search",
        Some(json!({})),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = rest(s.addr, "GET", "/ajax-api/3.0/mlflow/no-such-feature", None).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("ENDPOINT_NOT_FOUND"))
    );
    s.stop_and_check_rebuild().await;
}

/// `--mlflow-ui PATH` naming no UI build stops the server at start with the reason.
#[test]
fn a_ui_path_without_a_build_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(["serve", "--listen", "127.0.0.1:0", "--mlflow-ui"])
        .arg(dir.path().join("nothing-here"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no MLflow UI at"), "{stderr}");
}
