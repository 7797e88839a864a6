//! Plain HTTP routes on the shared port: health, and the live stream for browsers.
//! Errors follow MLflow's shape, `{"error_code": ..., "message": ...}`.

mod backup;
pub mod page;
mod stream;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::Error;
use crate::store::Store;

pub fn router(store: Store) -> axum::Router {
    axum::Router::new()
        .route("/health", axum::routing::get(health))
        .route("/api/arbor/v1/stream", axum::routing::get(stream::stream))
        .route("/api/arbor/v1/backup", axum::routing::get(backup::backup))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(store)
}

/// `OK` while the store takes writes; otherwise 503 with the reason, so that a
/// supervisor or load balancer stops sending writes here (or restarts the server).
async fn health(axum::extract::State(store): axum::extract::State<Store>) -> Response {
    match store.health() {
        Ok(()) => "OK".into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("NOT_SERVING: {why}\n"),
        )
            .into_response(),
    }
}

/// The bearer token `/metrics` asks for (`--metrics-token`), put on every request by the
/// server; absent, the scrape is open like every other route.
#[derive(Clone, Default)]
pub struct MetricsToken(pub Option<String>);

/// Prometheus' scrape.
async fn metrics(
    axum::extract::State(store): axum::extract::State<Store>,
    token: Option<axum::Extension<MetricsToken>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(axum::Extension(MetricsToken(Some(want)))) = token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_secret(given.as_bytes(), want.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Bearer realm=\"arbor-metrics\"",
                )],
                "/metrics needs the token given to --metrics-token\n",
            )
                .into_response();
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::global().render(store.gauges()),
    )
        .into_response()
}

/// Compares two secrets in time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Handlers on every HTTP surface return `Result<_, Error>`; the error answers for itself
/// through the one mapping below.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        error_response(self)
    }
}

/// The one mapping from `domain::Error` to MLflow's error codes and HTTP statuses. Input
/// errors are never 5xx: MLflow's client retries those for minutes.
pub(crate) fn error_response(e: Error) -> Response {
    let (status, code, message) = mlflow_error(e);
    let mut response = (
        status,
        Json(serde_json::json!({ "error_code": code, "message": message })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static(crate::auth::CHALLENGE),
        );
    }
    response
}

/// MLflow's HTTP status, `error_code` and message for an error (the message bounded).
pub(crate) fn mlflow_error(e: Error) -> (StatusCode, &'static str, String) {
    let (status, code, message) = match e {
        Error::NotFound(m) => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", m),
        Error::InvalidArgument(m) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", m),
        Error::BadRequest(m) => (StatusCode::BAD_REQUEST, "BAD_REQUEST", m),
        Error::EndpointNotFound(m) => (StatusCode::NOT_FOUND, "ENDPOINT_NOT_FOUND", m),
        Error::AlreadyExists(m) => (StatusCode::BAD_REQUEST, "RESOURCE_ALREADY_EXISTS", m),
        Error::FailedPrecondition(m) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", m),
        Error::Unavailable(m) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARILY_UNAVAILABLE",
            m,
        ),
        Error::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", m),
        Error::PermissionDenied(m) => (StatusCode::FORBIDDEN, "PERMISSION_DENIED", m),
        Error::Closed => (
            StatusCode::SERVICE_UNAVAILABLE,
            "TEMPORARILY_UNAVAILABLE",
            "the server is shutting down".to_string(),
        ),
        Error::OutOfRange(m) => (StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", m),
        Error::RequestTimeout(m) => (StatusCode::REQUEST_TIMEOUT, "DEADLINE_EXCEEDED", m),
        Error::Internal(m) => {
            tracing::error!(error = %m, "internal error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "internal error; see the server log".to_string(),
            )
        }
        Error::Storage(e) => {
            tracing::error!(error = %e, "storage error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "storage failure; see the server log".to_string(),
            )
        }
        Error::Corrupt(m) => {
            tracing::error!(error = %m, "corrupt data");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "the data directory is damaged; see the server log".to_string(),
            )
        }
    };
    let message = crate::domain::bounded(&message, crate::domain::MAX_ERROR_MESSAGE_CHARS);
    (status, code, message)
}
