//! MLflow's own web UI, served from the user's installed `mlflow` package: `index.html`
//! at `/` and the React build at `/static-files/...`, as `mlflow server` serves them,
//! plus the small endpoints the app calls at start (UI telemetry, answered as disabled)
//! and empty answers for the pages of features Arbor does not have (traces, the model
//! registry), so those pages show their empty state. Without a UI, `/` is Arbor's own
//! page, which also says how to turn MLflow's on.

use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::domain::Error;

/// How long browsers may keep a file of the build: its names carry a content hash, so a
/// new build has new names (what mlflow's server sends).
const STATIC_MAX_AGE_SECONDS: u32 = 2_419_200;

/// Where the UI comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiSource {
    /// The `mlflow` package that this Python interpreter imports.
    Auto { python: String },
    /// A `build` folder (the one holding `index.html`).
    Path(PathBuf),
}

/// A located UI build.
#[derive(Debug, Clone)]
pub struct MlflowUi {
    pub build: PathBuf,
    /// The `mlflow` package's version, when known.
    pub version: Option<String>,
}

impl MlflowUi {
    /// Finds the build folder, checking that it holds `index.html`.
    pub fn locate(source: &UiSource) -> Result<MlflowUi, String> {
        let (build, version) = match source {
            UiSource::Path(path) => (path.clone(), None),
            UiSource::Auto { python } => {
                let script = "import os, mlflow\n\
                    print(os.path.join(os.path.dirname(mlflow.__file__), 'server', 'js', 'build'))\n\
                    print(mlflow.__version__)";
                let out = std::process::Command::new(python)
                    .args(["-c", script])
                    .output()
                    .map_err(|e| format!("cannot run {python} to find the mlflow package: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "{python} cannot import mlflow (install the full `mlflow` package, not `mlflow-skinny`, or pass --mlflow-ui PATH): {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let mut lines = text.lines();
                let build = PathBuf::from(lines.next().unwrap_or_default().trim());
                (build, lines.next().map(|v| v.trim().to_string()))
            }
        };
        if !build.join("index.html").is_file() {
            return Err(format!(
                "no MLflow UI at {} (no index.html; `mlflow-skinny` ships without the UI)",
                build.display()
            ));
        }
        Ok(MlflowUi { build, version })
    }
}

pub(crate) fn router(ui: Option<MlflowUi>) -> axum::Router {
    let telemetry = axum::Router::new()
        .route(
            "/ui-telemetry",
            get(|| async {
                Json(json!({
                    "disable_ui_telemetry": true,
                    "disable_ui_events": [],
                    "ui_rollout_percentage": 0
                }))
            })
            .post(|| async { Json(json!({ "status": "disabled" })) }),
        )
        // Pages of features Arbor does not have ask for lists; an empty list shows the
        // page's empty state rather than an error.
        .route("/traces/search", get(empty).post(empty))
        .route("/{*rest}", get(feature_off).post(feature_off));
    let router = axum::Router::new().nest("/ajax-api/3.0/mlflow", telemetry);
    match ui {
        Some(ui) => router.merge(
            axum::Router::new()
                .route("/", get(index))
                .route("/static-files/{*path}", get(static_file))
                .with_state(std::sync::Arc::new(ui)),
        ),
        // Without a UI, `/` is Arbor's own page (`api::arbor::page`).
        None => router,
    }
}

pub(super) async fn empty() -> Json<serde_json::Value> {
    Json(json!({}))
}

/// MLflow's answer when a feature is not there.
async fn feature_off(UrlPath(rest): UrlPath<String>) -> Error {
    Error::EndpointNotFound(format!("No API endpoint /ajax-api/3.0/mlflow/{rest}"))
}

async fn index(State(ui): State<std::sync::Arc<MlflowUi>>) -> Response {
    match tokio::fs::read(ui.build.join("index.html")).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        Err(e) => Error::Storage(sled::Error::Io(e)).into_response(),
    }
}

async fn static_file(
    State(ui): State<std::sync::Arc<MlflowUi>>,
    UrlPath(path): UrlPath<String>,
) -> Response {
    if crate::artifacts::check_path(&path).is_err() || path.is_empty() {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let file = ui.build.join(&path);
    match tokio::fs::read(&file).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, content_type(&file)),
                (
                    header::CACHE_CONTROL,
                    &format!("public, max-age={STATIC_MAX_AGE_SECONDS}"),
                ),
            ],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// The media type of a file of the build, by its extension.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
