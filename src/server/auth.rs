//! The authentication layer (`--auth`): every request but health checks and reflection
//! names its caller (`auth::Caller`, put in the request's extensions for the handlers'
//! `Access`), or is answered 401 with a `WWW-Authenticate` challenge (UNAUTHENTICATED
//! for gRPC) before it reaches a handler. With auth off every request is `Anyone`'s.

use http::header;

use crate::auth::{Authenticator, Caller};

use super::around::{BoxFuture, Request, Response, Step};

/// Paths served to anyone even with auth on: probes and service discovery.
fn is_open(path: &str) -> bool {
    path == "/health"
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

#[derive(Clone)]
pub(crate) struct Authenticate {
    pub(crate) authenticator: Authenticator,
    /// `/metrics` has its own token (`--metrics-token`): it checks that itself.
    pub(crate) metrics_has_token: bool,
}

impl Step for Authenticate {
    fn step<S>(&self, mut req: Request, mut inner: S) -> BoxFuture<Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
    {
        let authenticator = self.authenticator.clone();
        let path = req.uri().path();
        let enabled = authenticator.policy().enabled;
        let open = !enabled || is_open(path) || (path == "/metrics" && self.metrics_has_token);
        Box::pin(async move {
            if open {
                // With auth on, an open path gets no caller at all: a handler there that
                // reached for the store would be refused, not handed everything.
                if !enabled {
                    req.extensions_mut().insert(Caller::Anyone);
                }
                return inner.call(req).await;
            }
            let credentials = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            match authenticator.authenticate(credentials.as_deref()).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(e) => {
                    crate::metrics::global()
                        .auth_failures
                        .get_or_create(&[("reason", "unauthenticated".to_string())])
                        .inc();
                    Ok(super::error_answer(&req, e))
                }
            }
        })
    }
}
