//! Arbor's live page: plain HTML, CSS and JavaScript modules from `web/`, compiled into
//! the binary, served at `/arbor/` (and at `/` when no MLflow UI is configured). The page
//! uses only the public APIs: MLflow's REST, `/api/arbor/v1/...` and the SSE stream.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page's files: (name, media type, contents).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../../web/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../web/style.css"),
    ),
    ("app.js", JS, include_bytes!("../../../web/app.js")),
    ("api.js", JS, include_bytes!("../../../web/api.js")),
    ("live.js", JS, include_bytes!("../../../web/live.js")),
    ("tree.js", JS, include_bytes!("../../../web/tree.js")),
    ("chart.js", JS, include_bytes!("../../../web/chart.js")),
    ("runpage.js", JS, include_bytes!("../../../web/runpage.js")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../../web/favicon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The routes; `at_root` also serves the page at `/`.
pub fn router(at_root: bool) -> axum::Router {
    let router = axum::Router::new()
        .route("/arbor", get(|| async { Redirect::permanent("/arbor/") }))
        .route("/arbor/", get(|| async { file("index.html") }))
        .route(
            "/arbor/{name}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        );
    if at_root {
        router.route("/", get(|| async { file("index.html") }))
    } else {
        router
    }
}

fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        // The files change with the binary and are small: browsers ask again each time
        // (a 304 costs as much as the file).
        Some((_, media_type, body)) => (
            [
                (header::CONTENT_TYPE, *media_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
