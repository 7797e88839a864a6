//! Read-your-writes across replicas of a shared log: before a request reaches a handler,
//! this replica takes in every event committed (by any replica) before the request
//! arrived. A client that wrote through one replica and reads through another sees its
//! write. Probes, metrics and the page's static files go straight through; a replica on
//! a store of its own is always current.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::store::Store;

use super::around::Response;

/// Paths that read nothing of the log.
fn needs_nothing(path: &str) -> bool {
    path == "/health"
        || path == "/version"
        || path == "/metrics"
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.")
        || path.starts_with("/static-files/")
        || (path.starts_with("/arbor/") && path.contains('.'))
}

#[derive(Clone)]
pub(crate) struct Layer {
    pub(crate) store: Store,
}

impl<S> tower::Layer<S> for Layer {
    type Service = Current<S>;

    fn layer(&self, inner: S) -> Current<S> {
        Current {
            inner,
            store: self.store.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Current<S> {
    inner: S,
    store: Store,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Current<S>
where
    S: tower::Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !self.store.is_shared() || needs_nothing(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        // The clone is not ready; the ready one goes with this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        Box::pin(async move {
            match store.current().await {
                Ok(()) => inner.call(req).await,
                Err(e) => Ok(refuse(&req, e)),
            }
        })
    }
}

/// 503 in MLflow's error shape, or UNAVAILABLE for gRPC.
fn refuse<B>(req: &http::Request<B>, e: crate::domain::Error) -> Response {
    let e = match e {
        e @ crate::domain::Error::Unavailable(_) => e,
        other => crate::domain::Error::Unavailable(other.to_string()),
    };
    super::error_answer(req, e)
}
