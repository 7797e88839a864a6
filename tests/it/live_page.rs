//! What Arbor's live page stands on, against a real server: its files compiled into the
//! binary, and the sampled history that a chart loads before the stream continues it.
//! The page itself runs in headless Chromium in `tests/python/test_live_page.py`.

use crate::common;

use arbor::pb;
use common::{TestServer, http, rest};

/// `/arbor/` serves the page and its modules (also at `/` without MLflow's UI).
#[tokio::test]
async fn the_page_and_its_modules_are_served_from_the_binary() {
    let s = TestServer::start().await;
    for path in ["/", "/arbor/"] {
        let (status, body) = http(s.addr, "GET", path, None, b"").await;
        assert_eq!(status, 200, "{path}");
        let page = String::from_utf8(body).unwrap();
        assert!(
            page.contains(r#"<script type="module" src="/arbor/app.js">"#),
            "{page}"
        );
    }
    for module in [
        "app.js",
        "api.js",
        "live.js",
        "tree.js",
        "chart.js",
        "runpage.js",
    ] {
        let (status, body) = http(s.addr, "GET", &format!("/arbor/{module}"), None, b"").await;
        assert_eq!(status, 200, "{module}");
        let text = String::from_utf8(body).unwrap();
        // Every module the page imports is one the server has.
        for line in text.lines().filter(|l| l.starts_with("import ")) {
            let file = line.split('"').nth(1).unwrap().trim_start_matches("./");
            let (status, _) = http(s.addr, "GET", &format!("/arbor/{file}"), None, b"").await;
            assert_eq!(status, 200, "{module} imports {file}");
        }
    }
    let (status, _) = http(s.addr, "GET", "/arbor/nope.js", None, b"").await;
    assert_eq!(status, 404);
    let (status, _) = http(s.addr, "GET", "/arbor/../Cargo.toml", None, b"").await;
    assert_eq!(status, 404);
    s.stop().await;
}

async fn log_steps(
    s: &TestServer,
    run: &str,
    key: &str,
    steps: std::ops::Range<i64>,
    value: impl Fn(i64) -> f64,
) {
    let mut c = s.client().await;
    let all: Vec<i64> = steps.collect();
    for chunk in all.chunks(1000) {
        c.log_batch(pb::LogBatchRequest {
            run_id: run.into(),
            metrics: chunk
                .iter()
                .map(|&step| pb::Metric {
                    key: key.into(),
                    value: value(step),
                    timestamp: 1_000 + step,
                    step,
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// A long history comes back reduced to the points a chart can show, keeping each
/// slice's first, last, lowest and highest point; short ranges come back whole.
#[tokio::test]
async fn sampled_history_keeps_the_shape_of_the_curve() {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let run = common::new_run_id(&mut c, pb::CreateRunRequest::default()).await;
    log_steps(&s, &run, "loss", 0..10_000, |step| match step {
        5_001 => 1e9,
        7_003 => -1e9,
        8_000 => f64::NAN,
        _ => 1.0 / (1 + step) as f64,
    })
    .await;
    let url = |q: &str| format!("/api/arbor/v1/metrics/sampled?run_id={run}&metric_key=loss{q}");
    let (status, got) = rest(s.addr, "GET", &url("&max_points=400"), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["total"], 10_000);
    assert_eq!(got["sampled"], true);
    let points = got["points"].as_array().unwrap();
    assert!(points.len() <= 400, "{} points", points.len());
    let steps: Vec<i64> = points.iter().map(|p| p["step"].as_i64().unwrap()).collect();
    for must in [0, 5_001, 7_003, 9_999] {
        assert!(steps.contains(&must), "step {must} kept");
    }
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "in step order");
    let spike = points.iter().find(|p| p["step"] == 5_001).unwrap();
    assert_eq!(spike["value"], 1e9);
    assert!(
        got["seq"].as_u64().unwrap() > 10,
        "the sequence number it is as of"
    );

    let (_, zoomed) = rest(s.addr, "GET", &url("&min_x=8000&max_x=8009"), None).await;
    assert_eq!(zoomed["sampled"], false);
    let values: Vec<&serde_json::Value> = zoomed["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["value"])
        .collect();
    assert_eq!(values.len(), 10);
    assert_eq!(values[0], "NaN", "true values, NaN as text");

    for (q, status, code) in [
        ("&max_points=3", 400, "INVALID_PARAMETER_VALUE"),
        ("&x_axis=epoch", 400, "INVALID_PARAMETER_VALUE"),
        ("&min_x=5&max_x=4", 400, "INVALID_PARAMETER_VALUE"),
    ] {
        let (got, body) = rest(s.addr, "GET", &url(q), None).await;
        assert_eq!(
            (got, body["error_code"].as_str()),
            (status, Some(code)),
            "{q}: {body}"
        );
    }
    let (got, body) = rest(
        s.addr,
        "GET",
        "/api/arbor/v1/metrics/sampled?run_id=nope&metric_key=loss",
        None,
    )
    .await;
    assert_eq!(
        (got, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let (got, _) = rest(
        s.addr,
        "GET",
        &format!("/api/arbor/v1/metrics/sampled?run_id={run}"),
        None,
    )
    .await;
    assert_eq!(got, 400, "metric_key is required");
    s.stop().await;
}
