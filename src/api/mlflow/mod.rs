//! MLflow's tracking REST API, so the official `mlflow` client works unmodified:
//! `/api/2.0/mlflow/...` and `/ajax-api/2.0/mlflow/...` (the tracking and logged-model
//! RPCs), the artifact proxy `/api/2.0/mlflow-artifacts/artifacts/...`, and `/version`.
//! Every write goes through the same committer and event log as gRPC.

mod artifacts;
mod handlers;
pub(crate) mod json;
mod models;
mod request;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::api::http::error_response;
use crate::artifacts::ArtifactStore;
use crate::domain::Error;
use crate::store::Store;

/// The version `/version` reports. MLflow's client gates features on it; 3.3 is before
/// span logging (3.4), which Arbor does not serve, and after everything it does.
pub const MLFLOW_COMPATIBLE_VERSION: &str = "3.3.2";
/// Largest JSON request body. A full `log-batch` is about 150 KB; artifact uploads
/// stream and are not bound by this.
const JSON_BODY_LIMIT: usize = 16 * 1024 * 1024;

pub(crate) struct State {
    pub store: Store,
    pub artifacts: ArtifactStore,
}

pub fn router(store: Store) -> axum::Router {
    let state = Arc::new(State {
        artifacts: store.artifacts().clone(),
        store,
    });
    let mut router =
        axum::Router::new().route("/version", get(|| async { MLFLOW_COMPATIBLE_VERSION }));
    for prefix in ["/api/2.0", "/ajax-api/2.0"] {
        router = router
            .route(&format!("{prefix}/mlflow/{{*path}}"), any(rpc))
            .route(
                &format!("{prefix}/mlflow-artifacts/artifacts"),
                get(artifacts::list),
            )
            .route(
                &format!("{prefix}/mlflow-artifacts/artifacts/{{*path}}"),
                get(artifacts::download)
                    .put(artifacts::upload)
                    .delete(artifacts::delete),
            );
    }
    router
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .with_state(state)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"))
}

async fn rpc(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let params = if method == Method::GET || body.iter().all(u8::is_ascii_whitespace) {
            request::Params::from_query(query.as_deref().unwrap_or(""))
        } else {
            if !is_json(&headers) {
                return Err(Error::BadRequest(
                    "Bad Request. Content-Type must be application/json.".into(),
                ));
            }
            request::Params::from_body(&body)?
        };
        handlers::dispatch(&state, method.as_str(), &path, params).await
    }
    .await;
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(e),
    }
}
