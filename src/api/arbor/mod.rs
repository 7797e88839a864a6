//! Arbor's own HTTP routes on the shared port: `/health`, `/metrics`, and under
//! `/api/arbor/v1` the live stream for browsers (SSE), backups, the run tree and sampled
//! histories, API tokens and the import endpoints; the live page at `/live`. Errors
//! answer in MLflow's shape (`api::mlflow::error`), as every HTTP route does.

mod backup;
mod import;
mod live;
pub mod page;
mod stream;
mod tokens;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::Store;

type Routes = axum::Router<Store>;

pub fn router(store: Store) -> axum::Router {
    let v1 = Routes::new()
        .route("/stream", axum::routing::get(stream::stream))
        .route("/backup", axum::routing::get(backup::backup))
        .merge(tokens::routes())
        .merge(import::routes())
        .merge(live::routes());
    axum::Router::new()
        .route("/health", axum::routing::get(health))
        .route("/metrics", axum::routing::get(metrics))
        .nest("/api/arbor/v1", v1)
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
