//! One process, one port: the gRPC services (tracking, health, reflection) and the HTTP
//! routes share a listener; requests are told apart by path and content type.

mod around;
mod auth;
mod body;
mod conn;
mod cors;
mod current;
mod hosts;
mod inflight;
mod limit;
mod observe;
mod tls;

pub use conn::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_GRPC_MESSAGE_BYTES, Limits};
pub use cors::Cors;
pub use hosts::AllowedHosts;
pub use tls::{Tls, TlsFiles};

use std::future::Future;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use crate::api::grpc::{HierarchyApi, TrackingApi, WatchApi};
use crate::pb::hierarchy_service_server::HierarchyServiceServer;
use crate::pb::tracking_service_server::TrackingServiceServer;
use crate::pb::watch_service_server::WatchServiceServer;
use crate::store::Store;

/// How long shutdown waits for requests in hand before it closes the store anyway.
/// Writes take milliseconds; this bounds a stuck client's hold on shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a server serves beyond the APIs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// MLflow's web UI, when one was found.
    pub mlflow_ui: Option<crate::api::mlflow::ui::MlflowUi>,
    /// Connection limit and idle timeout.
    pub limits: Limits,
    /// The host names requests may carry (default: any).
    pub allowed_hosts: AllowedHosts,
    /// Cross-origin access (default: off).
    pub cors: Cors,
    /// TLS for every connection (default: plain TCP).
    pub tls: Option<Tls>,
    /// The bearer token `/metrics` asks for (default: none, open).
    pub metrics_token: Option<String>,
    /// Authentication and permissions (default: off).
    pub auth: crate::auth::Policy,
}

/// Serves until `shutdown` completes, then stops accepting, lets in-flight requests
/// finish, commits and flushes every acknowledged write, and returns.
pub async fn run(
    listener: TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    serve(listener, store, Options::default(), shutdown).await
}

/// `run`, with `options`.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TrackingServiceServer<TrackingApi>>()
        .await;
    health_reporter
        .set_serving::<WatchServiceServer<WatchApi>>()
        .await;
    health_reporter
        .set_serving::<HierarchyServiceServer<HierarchyApi>>()
        .await;
    let health_task = tokio::spawn(report_health(store.clone(), health_reporter));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let tracking = TrackingServiceServer::new(TrackingApi::new(store.clone()))
        .max_decoding_message_size(options.limits.max_grpc_message_bytes);

    let http = crate::api::arbor::router(store.clone())
        .merge(crate::api::mlflow::router(store.clone()))
        .merge(crate::api::arbor::page::router(options.mlflow_ui.is_none()))
        .merge(crate::api::mlflow::ui::router(options.mlflow_ui))
        .layer(axum::Extension(crate::api::mlflow::JsonBodyLimit(
            options.limits.max_json_body_bytes,
        )))
        .layer(axum::Extension(crate::api::arbor::MetricsToken(
            options.metrics_token.clone(),
        )))
        .fallback(fallback);
    let routes = tonic::service::Routes::from(http)
        .add_service(tracking)
        .add_service(WatchServiceServer::new(WatchApi::new(store.clone())))
        .add_service(HierarchyServiceServer::new(HierarchyApi::new(
            store.clone(),
        )))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let in_flight = inflight::InFlight::default();
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(around::Layer(in_flight.clone()))
        .layer(around::Layer(conn::TrackActivity))
        .layer(around::Layer(observe::Observe))
        .layer(around::Layer(options.allowed_hosts.clone()))
        .layer(around::Layer(options.cors.clone()))
        // Current before authenticating: users are events too.
        .layer(around::StepLayer(current::Current {
            store: store.clone(),
        }))
        .layer(around::StepLayer(auth::Authenticate {
            authenticator: crate::auth::Authenticator::new(store.clone(), options.auth),
            metrics_has_token: options.metrics_token.is_some(),
        }))
        // Bodies are read before a request takes a slot, so waiting for one holds none.
        .layer(around::StepLayer(body::Gate {
            timeout: options.limits.body_timeout,
            max_json_body_bytes: options.limits.max_json_body_bytes,
            max_grpc_message_bytes: options.limits.max_grpc_message_bytes,
        }))
        .layer(around::StepLayer(limit::Limit::new(
            options.limits.max_concurrent_requests,
        )))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            conn::incoming(listener, options.limits, options.tls.clone()),
            async {
                let _ = stopped.await;
            },
        );
    tokio::pin!(server);
    let served = tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            let _ = stop_accepting.send(());
            // Idle keep-alive connections are not waited for; requests in hand are.
            tokio::select! {
                r = &mut server => r,
                () = in_flight.idle() => Ok(()),
                () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                    tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; closing anyway");
                    Ok(())
                }
            }
        }
    };
    health_task.abort();
    store.close().await;
    served?;
    Ok(())
}

/// Keeps `grpc.health.v1` in step with the store's health (the overall service `""`
/// and each Arbor service).
async fn report_health(store: Store, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut last = ServingStatus::Serving;
    let mut every = tokio::time::interval(crate::store::HEALTH_CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let health = store.health();
        let now = match &health {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if now == last {
            continue;
        }
        match &health {
            Ok(()) => tracing::info!("healthy again: serving"),
            Err(why) => tracing::warn!("not serving: {why}"),
        }
        for name in [
            "",
            <TrackingServiceServer<TrackingApi> as tonic::server::NamedService>::NAME,
            <WatchServiceServer<WatchApi> as tonic::server::NamedService>::NAME,
            <HierarchyServiceServer<HierarchyApi> as tonic::server::NamedService>::NAME,
        ] {
            reporter.set_service_status(name, now).await;
        }
        last = now;
    }
}

/// Unknown paths: `UNIMPLEMENTED` for gRPC clients (a bare 404 confuses them), 404
/// otherwise.
async fn fallback(req: axum::extract::Request) -> Response {
    if is_grpc(req.headers()) {
        tonic::Status::unimplemented(format!("unknown method {}", req.uri().path()))
            .into_http::<axum::body::Body>()
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

/// Whether a request speaks gRPC (by its content type).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A request refused by a layer before any handler: the gRPC status for gRPC clients,
/// MLflow's error JSON with its HTTP status otherwise.
fn error_answer<B>(req: &http::Request<B>, e: crate::domain::Error) -> around::Response {
    if is_grpc(req.headers()) {
        return tonic::Status::from(e).into_http::<tonic::body::Body>();
    }
    let response = crate::api::mlflow::error_response(e);
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, tonic::body::Body::new(body))
}
