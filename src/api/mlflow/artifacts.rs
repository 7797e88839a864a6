//! The artifact proxy (`MlflowArtifactsService`): upload (PUT, raw body, streamed to
//! disk), download (GET, streamed from disk), list (GET `?path=`: basenames, `{}` for an
//! empty or missing directory or a file) and delete. Traversal outside the store is
//! refused with MLflow's "Invalid path". Writes are recorded in the event log.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::State;
use super::json;
use crate::api::http::error_response;
use crate::domain::{Command, Error};

#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    path: Option<String>,
}

pub(super) async fn list(
    AxumState(state): AxumState<Arc<State>>,
    Query(q): Query<ListQuery>,
) -> Response {
    let dir = q.path.unwrap_or_default();
    match state.artifacts.list(&dir).await {
        Ok(files) => axum::Json(json::page(
            "files",
            files.iter().map(|f| json::file_info(f, "")).collect(),
            None,
        ))
        .into_response(),
        Err(e) => error_response(e),
    }
}

pub(super) async fn download(
    AxumState(state): AxumState<Arc<State>>,
    Path(path): Path<String>,
) -> Response {
    match state.artifacts.open(&path).await {
        Ok((file, size)) => {
            let name = path
                .rsplit('/')
                .next()
                .unwrap_or("artifact")
                .replace('"', "");
            let body =
                Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
            (
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
                .into_response()
        }
        Err(e) => error_response(e),
    }
}

pub(super) async fn upload(
    AxumState(state): AxumState<Arc<State>>,
    Path(path): Path<String>,
    body: Body,
) -> Response {
    let result: Result<(), Error> = async {
        let size = state
            .artifacts
            .write(&path, body.into_data_stream())
            .await?;
        state
            .store
            .submit(Command::RecordArtifact {
                path: path.clone(),
                size,
                deleted: false,
            })
            .await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => axum::Json(json!({})).into_response(),
        Err(e) => error_response(e),
    }
}

pub(super) async fn delete(
    AxumState(state): AxumState<Arc<State>>,
    Path(path): Path<String>,
) -> Response {
    let result: Result<(), Error> = async {
        state.artifacts.delete(&path).await?;
        state
            .store
            .submit(Command::RecordArtifact {
                path: path.clone(),
                size: 0,
                deleted: true,
            })
            .await?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => axum::Json(json!({})).into_response(),
        Err(e) => error_response(e),
    }
}
