//! One shape for the server's request layers (requests in flight, connection activity,
//! metrics, the Host allowlist, CORS): each looks at a request before it goes in, may answer it itself,
//! and may adjust the response that comes out. `Around` is that shape; `Layer` makes a
//! tower layer of one, so the service plumbing is written once.

use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) type Response = http::Response<tonic::body::Body>;

pub(crate) trait Around: Clone + Send + Sync + 'static {
    /// What `before` hands to `after`.
    type Carry: Send + 'static;
    /// Looks at the request: `Err` answers it here and it goes no further; `Ok` lets it
    /// through.
    fn before<B>(&self, req: &http::Request<B>) -> Result<Self::Carry, Box<Response>>;
    /// Adjusts the response of a request that went through.
    fn after(carry: Self::Carry, response: Response) -> Response;
}

/// `around` as a tower layer.
#[derive(Clone, Copy, Default)]
pub(crate) struct Layer<A>(pub(crate) A);

impl<S, A: Around> tower::Layer<S> for Layer<A> {
    type Service = Wrapped<S, A>;

    fn layer(&self, inner: S) -> Wrapped<S, A> {
        Wrapped {
            inner,
            around: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Wrapped<S, A> {
    inner: S,
    around: A,
}

pub(crate) type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, A> tower::Service<http::Request<B>> for Wrapped<S, A>
where
    S: tower::Service<http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
    A: Around,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.around.before(&req) {
            Err(answer) => Box::pin(async move { Ok(*answer) }),
            Ok(carry) => {
                let fut = self.inner.call(req);
                Box::pin(async move { Ok(A::after(carry, fut.await?)) })
            }
        }
    }
}

/// A request as the server's layers see it.
pub(crate) type Request = http::Request<tonic::body::Body>;

/// The shape of the layers that must wait before a request goes in (read-your-writes,
/// authentication, reading the body, taking a request slot): `step` gets the request
/// and the inner service, ready to be called once, and answers for it.
pub(crate) trait Step: Clone + Send + Sync + 'static {
    fn step<S>(&self, req: Request, inner: S) -> BoxFuture<Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static;
}

/// `step` as a tower layer.
#[derive(Clone)]
pub(crate) struct StepLayer<A>(pub(crate) A);

impl<S, A: Clone> tower::Layer<S> for StepLayer<A> {
    type Service = Stepped<S, A>;

    fn layer(&self, inner: S) -> Stepped<S, A> {
        Stepped {
            inner,
            step: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Stepped<S, A> {
    inner: S,
    step: A,
}

impl<S, A> tower::Service<Request> for Stepped<S, A>
where
    A: Step,
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The clone is not ready; the ready one goes with this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        self.step.step(req, inner)
    }
}
