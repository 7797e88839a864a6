//! Entry points for the coverage-guided fuzz targets in `fuzz/` and for their regression
//! tests (`tests/it/fuzz_regressions.rs`). Each takes arbitrary bytes and must not panic,
//! hang or abort; refusing the input with an error is the expected outcome. Where there
//! is more to hold than "no panic", it is asserted here, so a fuzzer finds it too.

use std::sync::OnceLock;

use prost::Message;

use crate::db::kv::Pending;
use crate::domain::commands::CreateRun;
use crate::paging as page;
use crate::pb;

/// A page token: decoding never panics, and a token that decodes re-encodes to one that
/// decodes to the same position.
pub fn page_token(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = page::decode_offset(token);
    // The first page is written as offset 0.
    let same = |p: page::Position| match p {
        page::Position::Start => page::Position::Offset(0),
        p => p,
    };
    if let Ok(position) = page::decode(token) {
        let again = page::decode(&page::encode(position.clone()));
        assert_eq!(
            again.ok().map(same),
            Some(same(position)),
            "token {token:?} does not round-trip"
        );
    }
}

/// MLflow's filter and order-by language: the first line is a filter, each later line
/// an order-by term; compiled for runs, experiments and logged models.
pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let filter = lines.next().unwrap_or_default();
    let order_by: Vec<String> = lines.map(str::to_string).collect();
    let _ = crate::search::validate_run_search(filter, &order_by);
    let _ = crate::search::validate_experiment_search(filter, &order_by);
    let _ = crate::search::compile_model_filter(filter);
}

/// Stored events as replay meets them: length-delimited `arbor.v1.Event`s, each
/// projected (without committing) over a scratch database, as `rebuild` and `check`
/// do with every event of a log.
pub fn replay(data: &[u8]) {
    static SCRATCH: OnceLock<sled::Tree> = OnceLock::new();
    let tree = SCRATCH.get_or_init(|| {
        sled::Config::new()
            .temporary(true)
            .open()
            .and_then(|db| db.open_tree("arbor"))
            .expect("a scratch database")
    });
    let mut pending = Pending::new(tree);
    let mut rest = data;
    while !rest.is_empty() {
        let Ok(ev) = pb::Event::decode_length_delimited(&mut rest) else {
            return;
        };
        let _ = crate::projection::apply(&ev, &mut pending);
    }
}

/// The MLflow REST endpoints a `rest` input can address by its first byte.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/experiments/create"),
    ("GET", "/experiments/get"),
    ("GET", "/experiments/get-by-name"),
    ("POST", "/experiments/search"),
    ("POST", "/experiments/update"),
    ("POST", "/experiments/set-experiment-tag"),
    ("POST", "/runs/create"),
    ("GET", "/runs/get"),
    ("POST", "/runs/update"),
    ("POST", "/runs/search"),
    ("POST", "/runs/log-metric"),
    ("POST", "/runs/log-parameter"),
    ("POST", "/runs/set-tag"),
    ("POST", "/runs/delete-tag"),
    ("POST", "/runs/log-batch"),
    ("POST", "/runs/log-inputs"),
    ("POST", "/runs/outputs"),
    ("GET", "/metrics/get-history"),
    ("GET", "/metrics/get-history-bulk-interval"),
    ("POST", "/logged-models"),
    ("POST", "/logged-models/search"),
    ("POST", "/experiments/search-datasets"),
    ("GET", "/artifacts/list"),
    ("POST", "/runs/delete"),
];

struct RestTarget {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    run_id: String,
}

/// Where `rest` keeps its store: one directory per process. Statics are never dropped,
/// so whoever runs `rest` removes it when done (the regression test and `scripts/fuzz`
/// do).
pub fn rest_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("arbor-fuzz-{}", std::process::id()))
}

/// One MLflow REST request through the real router and a real store: the first byte
/// picks the endpoint, the rest is the JSON body (or the query string of a GET). `@run`
/// and `@exp` in it stand for a run and an experiment that exist. Whatever the input,
/// the answer is never a 5xx: bad input is the client's error, and MLflow's client
/// retries 5xx for minutes.
pub fn rest(data: &[u8]) {
    static TARGET: OnceLock<RestTarget> = OnceLock::new();
    let target = TARGET.get_or_init(|| {
        let dir = rest_data_dir();
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::store::Store::open(&dir, &crate::store::StoreConfig::default())
            .expect("a store");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let run_id = runtime
            .block_on(store.submit(CreateRun {
                experiment_id: "0".into(),
                ..Default::default()
            }))
            .expect("a run")
            .run_id;
        RestTarget {
            router: crate::api::mlflow::router(store),
            runtime,
            run_id,
        }
    });
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let (method, path) = ENDPOINTS[usize::from(first) % ENDPOINTS.len()];
    let text = String::from_utf8_lossy(body)
        .replace("@run", &target.run_id)
        .replace("@exp", "0");
    let request = if method == "GET" {
        let query: String = form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let query = query.replace("%3D", "=").replace("%26", "&");
        axum::http::Request::get(format!("/api/2.0/mlflow{path}?{query}"))
            .body(axum::body::Body::empty())
    } else {
        axum::http::Request::post(format!("/api/2.0/mlflow{path}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(text.into_bytes()))
    };
    let Ok(request) = request else {
        return;
    };
    let status = target.runtime.block_on(async {
        use tower::ServiceExt;
        let response = target
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        status
    });
    assert!(
        !status.is_server_error(),
        "{method} {path} answered {status} to {:?}",
        String::from_utf8_lossy(body)
    );
}
