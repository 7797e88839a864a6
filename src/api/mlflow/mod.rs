//! MLflow's tracking REST API, so the official `mlflow` client works unmodified:
//! `/api/2.0/mlflow/...` and `/ajax-api/2.0/mlflow/...` (the tracking and logged-model
//! RPCs), the artifact proxy `/api/2.0/mlflow-artifacts/artifacts/...`, and `/version`.
//! One router per resource, typed requests (`request`) and responses (`response`);
//! every write goes through the same `Store` method, committer and event log as gRPC.

mod artifacts;
mod datasets;
mod error;
mod experiments;
mod graphql;
mod metrics;
pub(crate) mod models;
pub(crate) mod request;
pub use request::{JSON_BODY_LIMIT, JsonBodyLimit};
pub(crate) mod response;
pub(crate) mod runs;
pub mod ui;
pub(crate) mod users;

pub(crate) use error::{error_response, mlflow_error};

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::domain::{Error, KeyValue};
use crate::store::Store;

/// The MLflow version whose API Arbor serves, which `/version` reports: the client takes
/// its current code paths for it (it logs spans over OTLP only to a server of 3.4 or
/// later, say). What that version has and Arbor does not serve (traces, the registry) is
/// answered as `mlflow server` answers a feature it was not configured for.
pub const MLFLOW_COMPATIBLE_VERSION: &str = "3.17.2";

pub(crate) struct State {
    pub store: Store,
}

impl axum::extract::FromRef<Arc<State>> for Store {
    fn from_ref(state: &Arc<State>) -> Store {
        state.store.clone()
    }
}

/// What every handler works with: the store as its caller may use it.
pub(crate) struct Ctx {
    pub store: crate::auth::Access,
}

impl<S> axum::extract::FromRequestParts<S> for Ctx
where
    Store: axum::extract::FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        let crate::api::Authorized(store) =
            <crate::api::Authorized as axum::extract::FromRequestParts<_>>::from_request_parts(
                parts, state,
            )
            .await?;
        Ok(Ctx { store })
    }
}

pub(crate) type Shared = Ctx;
type Routes = Router<Arc<State>>;

pub fn router(store: Store) -> axum::Router {
    let state = Arc::new(State { store });
    let rpcs = Router::new()
        .merge(experiments::routes())
        .merge(runs::routes())
        .merge(metrics::routes())
        .merge(artifacts::listing_routes())
        .merge(datasets::routes())
        .merge(models::routes())
        .merge(users::routes())
        // No AI gateway is configured: answer as mlflow's server does then.
        .route(
            "/gateway-proxy",
            get(|| async { axum::Json(serde_json::json!({ "endpoints": [] })) })
                .post(|| async { axum::Json(serde_json::json!({ "endpoints": [] })) }),
        )
        // The model registry is not served; the UI's registry pages list nothing.
        .route("/registered-models/search", get(ui::empty).post(ui::empty))
        .route("/model-versions/search", get(ui::empty).post(ui::empty))
        .route("/{*path}", any(endpoint_not_found))
        .method_not_allowed_fallback(endpoint_not_found);
    let mut router = Router::new()
        .route("/version", get(|| async { MLFLOW_COMPATIBLE_VERSION }))
        .merge(artifacts::viewer_routes())
        .merge(graphql::routes());
    for prefix in ["/api/3.0", "/ajax-api/3.0"] {
        router = router.nest(&format!("{prefix}/mlflow"), users::v3_routes());
    }
    for prefix in ["/api/2.0", "/ajax-api/2.0"] {
        router = router.nest(&format!("{prefix}/mlflow"), rpcs.clone()).nest(
            &format!("{prefix}/mlflow-artifacts"),
            artifacts::proxy_routes(),
        );
    }
    router.with_state(state)
}

/// MLflow's answer to a path or method it does not serve.
async fn endpoint_not_found(method: Method, uri: Uri) -> Error {
    Error::EndpointNotFound(format!("No API endpoint {method} /mlflow{}", uri.path()))
}

/// A response written straight to bytes (no JSON tree in between), so that a page of
/// 50,000 runs or 100,000 points costs its text and little more; borrowed records are
/// written before they go away.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<Response, Error> {
    let body = serde_json::to_vec(v)
        .map_err(|e| Error::Corrupt(format!("cannot write a response: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A `{key, value}` of a request (tags, params).
#[derive(serde::Deserialize, Debug)]
pub(crate) struct KeyValueIn {
    #[serde(default, deserialize_with = "request::string")]
    pub key: Option<String>,
    #[serde(default, deserialize_with = "request::string")]
    pub value: Option<String>,
}

/// The `{key, value}` list `field` as domain pairs; a missing key is MLflow's "Missing
/// value" error naming it (`tags[2].key`).
pub(crate) fn key_values(field: &str, items: Vec<KeyValueIn>) -> Result<Vec<KeyValue>, Error> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, kv)| {
            Ok(KeyValue::new(
                request::required(&format!("{field}[{i}].key"), kv.key)?,
                kv.value.unwrap_or_default(),
            ))
        })
        .collect()
}
