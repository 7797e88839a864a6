//! Artifacts. The run listing (`/mlflow/artifacts/list`), and the artifact proxy
//! (`MlflowArtifactsService` under `/mlflow-artifacts/`): upload (PUT, raw body, streamed
//! to disk), download (GET, streamed from disk), list (GET `?path=`: basenames, `{}`
//! for an empty or missing directory or a file) and delete. Traversal outside the store
//! is refused with MLflow's "Invalid path". Writes are recorded in the event log.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::request::{self, Mlflow};
use super::response::{Empty, File, Files};
use super::runs::run_id;
use super::{Routes, Shared, json};
use crate::domain::Error;

/// Read-ahead of a download: large enough that a big file streams in few reads.
const DOWNLOAD_CHUNK_BYTES: usize = 1 << 20;

pub(super) fn listing_routes() -> Routes {
    Routes::new().route("/artifacts/list", get(list_run))
}

pub(super) fn proxy_routes() -> Routes {
    Routes::new().route("/artifacts", get(list)).route(
        "/artifacts/{*path}",
        get(download).put(upload).delete(delete),
    )
}

/// The path under the artifact root of an `mlflow-artifacts:/...` URI.
pub(super) fn artifact_rel(uri: &str) -> Result<String, Error> {
    uri.strip_prefix("mlflow-artifacts:/")
        .map(|p| p.trim_start_matches('/').to_string())
        .ok_or_else(|| Error::invalid(format!("artifacts at {uri} are not served by this server")))
}

/// The files in `sub` below the artifact root `root_uri`, named relative to `sub`'s parent
/// listing, as MLflow lists them.
pub(super) async fn list_under(
    state: &Shared,
    root_uri: &str,
    sub: &str,
) -> Result<Response, Error> {
    let rel = artifact_rel(root_uri)?;
    let dir = if sub.is_empty() {
        rel
    } else {
        format!("{rel}/{sub}")
    };
    let files = state.artifacts.list(&dir).await?;
    json(&Files {
        root_uri: Some(root_uri),
        files: files.iter().map(|f| File::listed(f, sub)).collect(),
    })
}

#[derive(Deserialize, Debug)]
struct ListRunRequest {
    #[serde(default, deserialize_with = "request::string", alias = "runId")]
    run_id: Option<String>,
    #[serde(default, deserialize_with = "request::string", alias = "runUuid")]
    run_uuid: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    path: Option<String>,
}

async fn list_run(state: Shared, Mlflow(r): Mlflow<ListRunRequest>) -> Result<Response, Error> {
    let run = state.store.get_run(&run_id(r.run_id, r.run_uuid)?)?;
    list_under(&state, &run.artifact_uri, &r.path.unwrap_or_default()).await
}

#[derive(Deserialize)]
struct ListQuery {
    path: Option<String>,
}

async fn list(state: Shared, Query(q): Query<ListQuery>) -> Result<Response, Error> {
    let files = state.artifacts.list(&q.path.unwrap_or_default()).await?;
    json(&Files {
        root_uri: None,
        files: files.iter().map(|f| File::listed(f, "")).collect(),
    })
}

async fn download(state: Shared, Path(path): Path<String>) -> Result<Response, Error> {
    let (file, size) = state.artifacts.open(&path).await?;
    let name = path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .replace('"', "");
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        DOWNLOAD_CHUNK_BYTES,
    ));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

async fn upload(state: Shared, Path(path): Path<String>, body: Body) -> Result<Json<Empty>, Error> {
    let size = state
        .artifacts
        .write(&path, body.into_data_stream())
        .await?;
    state.store.record_artifact(path, size, false).await?;
    Ok(Json(Empty {}))
}

async fn delete(state: Shared, Path(path): Path<String>) -> Result<Json<Empty>, Error> {
    state.artifacts.delete(&path).await?;
    state.store.record_artifact(path, 0, true).await?;
    Ok(Json(Empty {}))
}
