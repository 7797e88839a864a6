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
use crate::auth::Need;
use crate::domain::Error;
use crate::domain::commands::RecordArtifact;

/// Read-ahead of a download: large enough that a big file streams in few reads.
const DOWNLOAD_CHUNK_BYTES: usize = 1 << 20;

pub(super) fn listing_routes() -> Routes {
    Routes::new()
        .route("/artifacts/list", get(list_run))
        // The UI's uploader and its logged-model file viewer.
        .route("/upload-artifact", axum::routing::post(upload_artifact))
        .route(
            "/logged-models/{id}/artifacts/files",
            get(logged_model_file),
        )
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
    let files = state
        .store
        .on_artifact_path(&dir, Need::Read)?
        .artifacts()
        .list(&dir)
        .await?;
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
    let id = run_id(r.run_id, r.run_uuid)?;
    let run = state.store.on_run(&id, Need::Read)?.get_run(&id)?;
    list_under(&state, &run.artifact_uri, &r.path.unwrap_or_default()).await
}

#[derive(Deserialize)]
struct ListQuery {
    path: Option<String>,
}

async fn list(state: Shared, Query(q): Query<ListQuery>) -> Result<Response, Error> {
    let path = q.path.unwrap_or_default();
    let files = state
        .store
        .on_artifact_path(&path, Need::Read)?
        .artifacts()
        .list(&path)
        .await?;
    json(&Files {
        root_uri: None,
        files: files.iter().map(|f| File::listed(f, "")).collect(),
    })
}

async fn download(state: Shared, Path(path): Path<String>) -> Result<Response, Error> {
    attachment(&state, &path, "application/octet-stream").await
}

/// The file at `rel` under the artifact root, streamed as an attachment (so a browser
/// never renders it on this origin) of `media_type`.
async fn attachment(state: &Shared, rel: &str, media_type: &str) -> Result<Response, Error> {
    let (file, size) = state
        .store
        .on_artifact_path(rel, Need::Read)?
        .artifacts()
        .open(rel)
        .await?;
    let name = rel
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
            (header::CONTENT_TYPE, media_type.to_string()),
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
    let store = state.store.on_artifact_path(&path, Need::Update)?;
    let size = store
        .artifacts()
        .write(&path, body.into_data_stream())
        .await?;
    store
        .submit(RecordArtifact {
            path,
            size,
            deleted: false,
        })
        .await?;
    Ok(Json(Empty {}))
}

/// MANAGE, as MLflow's auth app asks (`can_delete`): one call can remove a whole
/// experiment's artifacts.
async fn delete(state: Shared, Path(path): Path<String>) -> Result<Json<Empty>, Error> {
    let store = state.store.on_artifact_path(&path, Need::Delete)?;
    store.artifacts().delete(&path).await?;
    store
        .submit(RecordArtifact {
            path,
            size: 0,
            deleted: true,
        })
        .await?;
    Ok(Json(Empty {}))
}

/// The UI's artifact viewer, outside the `/mlflow/` RPCs.
pub(super) fn viewer_routes() -> Routes {
    Routes::new().route("/get-artifact", get(get_artifact))
}

/// Largest file the UI's `upload-artifact` takes, as MLflow.
const UI_UPLOAD_LIMIT: usize = 10 * 1024 * 1024;

#[derive(Deserialize)]
struct GetArtifactQuery {
    run_id: Option<String>,
    run_uuid: Option<String>,
    path: Option<String>,
}

/// A file under an artifact root, sent as an attachment with its media type guessed
/// from its name, as MLflow sends it.
async fn send_file(state: &Shared, root_uri: &str, path: &str) -> Result<Response, Error> {
    crate::artifacts::check_path(path)?;
    let rel = format!(
        "{}/{}",
        artifact_rel(root_uri)?,
        path.trim_start_matches('/')
    );
    let name = path.rsplit('/').next().unwrap_or_default();
    attachment(state, &rel, guess_media_type(name)).await
}

/// What MLflow's `_guess_mime_type` answers for the files people log most.
fn guess_media_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt" | "log" | "py" | "md" | "yaml" | "yml" | "mlmodel" | "cfg" | "ini") => {
            "text/plain"
        }
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

async fn get_artifact(state: Shared, Query(q): Query<GetArtifactQuery>) -> Result<Response, Error> {
    let run_id = run_id(q.run_id, q.run_uuid)?;
    let path = super::request::required("path", q.path)?;
    let run = state.store.on_run(&run_id, Need::Read)?.get_run(&run_id)?;
    send_file(&state, &run.artifact_uri, &path).await
}

#[derive(Deserialize)]
struct UploadQuery {
    run_uuid: Option<String>,
    path: Option<String>,
}

/// The UI's upload of a small file into a run's artifacts (MLflow's `upload-artifact`).
async fn upload_artifact(
    state: Shared,
    Query(q): Query<UploadQuery>,
    body: axum::body::Bytes,
) -> Result<Json<Empty>, Error> {
    let run_uuid = q
        .run_uuid
        .filter(|r| !r.is_empty())
        .ok_or_else(|| Error::invalid("Request must specify run_uuid."))?;
    let path = q
        .path
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::invalid("Request must specify path."))?;
    crate::artifacts::check_path(&path)?;
    if body.len() > UI_UPLOAD_LIMIT {
        return Err(Error::invalid(
            "Artifact size is too large. Max size is 10MB.",
        ));
    }
    if body.is_empty() {
        return Err(Error::invalid("Request must specify data."));
    }
    let run = state
        .store
        .on_run(&run_uuid, Need::Update)?
        .get_run(&run_uuid)?;
    let rel = format!("{}/{}", artifact_rel(&run.artifact_uri)?, path);
    let chunk: Result<axum::body::Bytes, std::convert::Infallible> = Ok(body);
    let store = state.store.on_artifact_path(&rel, Need::Update)?;
    let size = store
        .artifacts()
        .write(&rel, tokio_stream::iter([chunk]))
        .await?;
    store
        .submit(RecordArtifact {
            path: rel,
            size,
            deleted: false,
        })
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct ModelFileQuery {
    artifact_file_path: Option<String>,
}

async fn logged_model_file(
    state: Shared,
    Path(id): Path<String>,
    Query(q): Query<ModelFileQuery>,
) -> Result<Response, Error> {
    let path = q
        .artifact_file_path
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            Error::BadRequest(
                "Request must include the \"artifact_file_path\" query parameter.".into(),
            )
        })?;
    let model = state
        .store
        .on_logged_model(&id, Need::Read)?
        .get_logged_model(&id, false)?;
    send_file(&state, &model.artifact_uri, &path).await
}
