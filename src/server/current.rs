//! Read-your-writes across replicas of a shared log: before a request reaches a handler,
//! this replica takes in every event committed (by any replica) before the request
//! arrived. A client that wrote through one replica and reads through another sees its
//! write. Probes, metrics and the page's static files go straight through; a replica on
//! a store of its own is always current.

use crate::store::Store;

use super::around::{BoxFuture, Request, Response, Step};

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
pub(crate) struct Current {
    pub(crate) store: Store,
}

impl Step for Current {
    fn step<S>(&self, req: Request, mut inner: S) -> BoxFuture<Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
    {
        if !self.store.is_shared() || needs_nothing(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
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
