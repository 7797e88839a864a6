//! The authentication layer (`--auth`): every request but health checks and reflection
//! names its caller (`auth::Caller`, put in the request's extensions for the handlers'
//! `Access`), or is answered 401 with a `WWW-Authenticate` challenge (UNAUTHENTICATED
//! for gRPC) before it reaches a handler. With auth off every request is `Anyone`'s.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::header;

use crate::auth::{Authenticator, Caller};

use super::around::Response;

/// Paths served to anyone even with auth on: probes and service discovery.
fn is_open(path: &str) -> bool {
    path == "/health"
        || path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

#[derive(Clone)]
pub(crate) struct Layer {
    pub(crate) authenticator: Authenticator,
    /// `/metrics` has its own token (`--metrics-token`): it checks that itself.
    pub(crate) metrics_has_token: bool,
}

impl<S> tower::Layer<S> for Layer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Authenticate<S> {
    inner: S,
    layer: Layer,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authenticate<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone is not ready; the ready one goes with this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authenticator = self.layer.authenticator.clone();
        let path = req.uri().path();
        let open = !authenticator.policy().enabled
            || is_open(path)
            || (path == "/metrics" && self.layer.metrics_has_token);
        let enabled = authenticator.policy().enabled;
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
