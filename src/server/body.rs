//! Request bodies must arrive in time. A body may stall (no byte arriving) for at most
//! `--body-timeout-secs`, and past that grace it must keep up `MIN_BODY_BYTES_PER_SEC` on
//! average; one that does not is answered 408 (gRPC: DEADLINE_EXCEEDED) and, on
//! HTTP/1.1, its connection closed.
//!
//! Bodies of a bounded size (MLflow's JSON, a unary gRPC message) are read here in full
//! before the request goes on to take a request slot (`limit`), so a crowd of clients
//! that send headers and then trickle or withhold their bodies holds connections, not
//! the slots that every other client and the handlers need. Artifact uploads, which
//! have no size bound, stream on to their handler under the same clock. Client
//! streams (`LogMetricStream`, reflection) are messages over time, not a body to
//! wait for: a training loop may pause between points as long as it likes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::BoxError;
use super::around::{BoxFuture, Request, Response, Step};

/// The average rate a body must keep up once its grace (`--body-timeout-secs`) is over:
/// slow enough for any real link (a 16 MiB body may take 17 minutes), fast enough that
/// trickling a body a byte at a time ends in seconds.
pub(crate) const MIN_BODY_BYTES_PER_SEC: u64 = 16 * 1024;

/// gRPC methods whose request is a stream of messages (client or bidirectional
/// streaming): their body may pause, and they take no request slot.
const STREAMING_REQUESTS: &[&str] = &[
    "/arbor.v1.TrackingService/LogMetricStream",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Whether the request's body is a client stream.
pub(crate) fn streams_request<B>(req: &http::Request<B>) -> bool {
    STREAMING_REQUESTS.contains(&req.uri().path())
}

/// Whether the request is an artifact upload, streamed to its file as it arrives.
fn is_upload<B>(req: &http::Request<B>) -> bool {
    let path = req.uri().path();
    req.method() == http::Method::PUT
        && (path.starts_with("/api/2.0/mlflow-artifacts/artifacts/")
            || path.starts_with("/ajax-api/2.0/mlflow-artifacts/artifacts/"))
}

/// When a body must have arrived by, given what it has sent so far.
#[derive(Debug, Clone, Copy)]
struct Clock {
    timeout: Duration,
    started: Instant,
    last_byte: Instant,
    received: u64,
}

impl Clock {
    fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            timeout,
            started: now,
            last_byte: now,
            received: 0,
        }
    }

    fn got(&mut self, bytes: usize) {
        if bytes > 0 {
            self.received = self.received.saturating_add(bytes as u64);
            self.last_byte = Instant::now();
        }
    }

    /// The earlier of: a stall of `timeout` since the last byte, and the time the
    /// bytes so far buy at the minimum rate after the grace.
    fn deadline(&self) -> Instant {
        let earned = Duration::from_millis(
            self.received
                .saturating_mul(1000)
                .checked_div(MIN_BODY_BYTES_PER_SEC)
                .unwrap_or(u64::MAX),
        );
        let by_rate = self.started + self.timeout.saturating_add(earned);
        by_rate.min(self.last_byte + self.timeout)
    }
}

/// The error a body that came too slowly ends with.
#[derive(Debug)]
pub(crate) struct TooSlow {
    received: u64,
    timeout: Duration,
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body stalled or arrived too slowly ({} bytes received; a body may pause {} s at most and must then keep up {} KiB/s, see --body-timeout-secs)",
            self.received,
            self.timeout.as_secs(),
            MIN_BODY_BYTES_PER_SEC / 1024
        )
    }
}

impl std::error::Error for TooSlow {}

/// A request body under the clock: ends with `TooSlow` once it misses its deadline.
pub(crate) struct Deadline<B> {
    inner: B,
    clock: Clock,
    timer: Pin<Box<Sleep>>,
}

impl<B> Deadline<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        let clock = Clock::new(timeout);
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep_until(clock.deadline())),
            clock,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.clock.got(data.len());
                    let deadline = this.clock.deadline();
                    this.timer.as_mut().reset(deadline);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            crate::metrics::global().body_timeouts.inc();
            return Poll::Ready(Some(Err(Box::new(TooSlow {
                received: this.clock.received,
                timeout: this.clock.timeout,
            }))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body read here, handed on: what was read, then (for one over the size bound) the
/// rest as it arrives, and the trailers if any came.
struct Replayed<B> {
    read: Option<Bytes>,
    rest: Option<Deadline<B>>,
    trailers: Option<HeaderMap>,
}

impl<B> Body for Replayed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(read) = this.read.take()
            && !read.is_empty()
        {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        if let Some(rest) = this.rest.as_mut() {
            match Pin::new(rest).poll_frame(cx) {
                Poll::Ready(None) => this.rest = None,
                other => return other,
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.read.as_ref().is_none_or(Bytes::is_empty)
            && self.rest.is_none()
            && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.read, &self.rest) {
            (Some(read), None) => SizeHint::with_exact(read.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Reads `body` up to `cap` bytes: the whole of it, or (over the bound) what was read
/// and the rest, for the handler to refuse with its own limit's message.
async fn read<B>(mut body: Deadline<B>, cap: usize) -> Result<Replayed<B>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut read = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame?.into_data() {
            Ok(data) => {
                read.extend_from_slice(&data);
                if read.len() > cap {
                    return Ok(Replayed {
                        read: Some(read.freeze()),
                        rest: Some(body),
                        trailers: None,
                    });
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    Ok(Replayed {
        read: Some(read.freeze()),
        rest: None,
        trailers,
    })
}

/// Reads bodies before their requests go on: what it needs to know of the limits.
#[derive(Clone, Copy)]
pub(crate) struct Gate {
    pub(crate) timeout: Duration,
    pub(crate) max_json_body_bytes: usize,
    pub(crate) max_grpc_message_bytes: usize,
}

impl Step for Gate {
    fn step<S>(&self, req: Request, mut inner: S) -> BoxFuture<Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
    {
        // Client streams pause freely; a body already at its end (a GET) has nothing to
        // wait for.
        if streams_request(&req) || req.body().is_end_stream() {
            return Box::pin(inner.call(req));
        }
        let timeout = self.timeout;
        if is_upload(&req) {
            let req = req.map(|b| tonic::body::Body::new(Deadline::new(b, timeout)));
            return Box::pin(inner.call(req));
        }
        let cap = if super::is_grpc(req.headers()) {
            // One message and its 5-byte frame header.
            self.max_grpc_message_bytes.saturating_add(5)
        } else {
            self.max_json_body_bytes
        };
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            match read(Deadline::new(body, timeout), cap).await {
                Ok(body) => {
                    let req = http::Request::from_parts(parts, tonic::body::Body::new(body));
                    inner.call(req).await
                }
                Err(e) => Ok(refuse(parts, e)),
            }
        })
    }
}

/// The answer to a request whose body did not arrive: 408 / DEADLINE_EXCEEDED, and an
/// HTTP/1.1 connection closed (its unread body would otherwise be read next as a
/// request).
fn refuse(parts: http::request::Parts, e: BoxError) -> Response {
    let http1 = parts.version < http::Version::HTTP_2;
    let req = http::Request::from_parts(parts, ());
    let error = if e.is::<TooSlow>() {
        crate::domain::Error::RequestTimeout(e.to_string())
    } else {
        crate::domain::Error::BadRequest(format!("the request body could not be read: {e}"))
    };
    let mut response = super::error_answer(&req, error);
    if http1 {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body may stall for the timeout; past it, each 16 KiB received buys a second,
    /// and a stall after a burst still ends it one timeout after its last byte.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_stalls_and_the_minimum_rate() {
        let t = Duration::from_secs(3);
        let mut clock = Clock::new(t);
        let start = clock.started;
        assert_eq!(clock.deadline(), start + t);
        tokio::time::advance(Duration::from_secs(2)).await;
        clock.got(1);
        // One byte buys nothing at 16 KiB/s: the grace still ends at 3 s.
        assert_eq!(clock.deadline(), start + t);
        clock.got(16 * 1024 * 10 - 1);
        // 160 KiB buy 10 s past the grace, but a stall still ends it 3 s after now.
        assert_eq!(clock.deadline(), start + Duration::from_secs(2) + t);
        tokio::time::advance(Duration::from_secs(2)).await;
        clock.got(1);
        assert_eq!(clock.deadline(), start + Duration::from_secs(4) + t);
    }

    /// A body over the bound is handed on whole: what was read, then the rest.
    #[tokio::test]
    async fn a_body_over_the_bound_is_handed_on_whole() {
        use http_body_util::BodyExt;
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..10)
            .map(|i| Ok(Frame::data(Bytes::from(vec![i; 100]))))
            .collect();
        let body = http_body_util::StreamBody::new(tokio_stream::iter(chunks));
        let replayed = read(Deadline::new(body, Duration::from_secs(5)), 250)
            .await
            .expect("read");
        assert!(replayed.rest.is_some(), "over the bound");
        let all = replayed.collect().await.expect("collect").to_bytes();
        assert_eq!(all.len(), 1000);
        assert_eq!(all[999], 9);
    }
}
