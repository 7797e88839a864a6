//! Accepting connections so that clients cannot take the server down: at most
//! `max_connections` open at once (the rest wait in the listen backlog), accept errors
//! such as running out of file descriptors (EMFILE, ENFILE) back off instead of spinning
//! and are logged at most every few seconds, and a connection with no request in flight
//! for `idle_timeout` is closed: a keep-alive connection left open, or request headers
//! trickling in a byte at a time. A connection with a request in hand (a long upload,
//! an open watch stream) is never idle.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};

/// File descriptors kept for everything but connections (the database, artifact files,
/// logs) when the connection limit is derived from the process's descriptor limit.
const RESERVED_FDS: u64 = 64;
/// The longest pause between accept attempts after accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// At most one log line per this long about failing accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);
/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on accepted connections, so dead peers are noticed and dropped.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// What the accept loop enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Largest MLflow JSON request body.
    pub max_json_body_bytes: usize,
    /// Largest gRPC request message.
    pub max_grpc_message_bytes: usize,
    /// Requests handled at once (until their response head); more wait.
    pub max_concurrent_requests: usize,
    /// How long a request body may stall, and the grace before it must keep up the
    /// minimum rate (`body::MIN_BODY_BYTES_PER_SEC`).
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_json_body_bytes: crate::api::mlflow::JSON_BODY_LIMIT,
            max_grpc_message_bytes: DEFAULT_MAX_GRPC_MESSAGE_BYTES,
            max_concurrent_requests: 512,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// Largest gRPC request by default. A full `LogBatch` is about 40 KB; this leaves room
/// for long tag values without letting one request take much memory.
pub const DEFAULT_MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long a connection may sit with no request in flight.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a request body may stall by default.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

impl Limits {
    /// The default connection limit: what the descriptor limit leaves after a reserve,
    /// after raising the soft limit to the hard one (as Go's runtime does), so that the
    /// limit, not the kernel, is what a crowd of clients meets.
    pub fn default_max_connections() -> usize {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if let (Some(cur), Some(max)) = (limit.current, limit.maximum)
            && cur < max
        {
            limit.current = Some(max);
            if setrlimit(Resource::Nofile, limit).is_err() {
                limit.current = Some(cur);
            }
        }
        let fds = limit.current.unwrap_or(65_536);
        usize::try_from(fds.saturating_sub(RESERVED_FDS).clamp(16, 65_536)).unwrap_or(16)
    }
}

/// Accepted connections as a stream for tonic's server; accepting stops (and the
/// listener closes) when the stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    limits: Limits,
    tls: Option<super::tls::Tls>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(accept_loop(listener, limits, tls, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    limits: Limits,
    tls: Option<super::tls::Tls>,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::ZERO;
    let mut last_log: Option<Instant> = None;
    let mut unlogged = 0u64;
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = tx.closed() => return,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = Duration::ZERO;
                let _ = stream.set_nodelay(true);
                let _ = rustix::net::sockopt::set_socket_keepalive(&stream, true);
                let _ = rustix::net::sockopt::set_tcp_keepidle(&stream, TCP_KEEPALIVE);
                crate::metrics::global().connections_accepted.inc();
                match tls.as_ref().and_then(super::tls::Tls::acceptor) {
                    None => {
                        let conn = Conn::new(Io::Plain(stream), permit, &limits);
                        if tx.send(Ok(conn)).await.is_err() {
                            return;
                        }
                    }
                    // The handshake runs on its own task, bounded, so that a client that
                    // never finishes it holds only its own slot.
                    Some(acceptor) => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let shaken = tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            )
                            .await;
                            match shaken {
                                Ok(Ok(tls)) => {
                                    let conn = Conn::new(Io::Tls(Box::new(tls)), permit, &limits);
                                    let _ = tx.send(Ok(conn)).await;
                                }
                                Ok(Err(e)) => {
                                    crate::metrics::global().tls_handshake_failures.inc();
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                }
                                Err(_) => {
                                    crate::metrics::global().tls_handshake_failures.inc();
                                    tracing::debug!("TLS handshake timed out");
                                }
                            }
                        });
                    }
                }
            }
            // The peer gave up before we took the connection: nothing to report.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                drop(permit);
                crate::metrics::global().accept_errors.inc();
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                unlogged += 1;
                if last_log.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY) {
                    let hint = if matches!(e.raw_os_error(), Some(24 | 23)) {
                        " (out of file descriptors: raise `ulimit -n` or lower --max-connections)"
                    } else {
                        ""
                    };
                    tracing::warn!(
                        error = %e,
                        failures = unlogged,
                        pause_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                        "accepting a connection failed{hint}; backing off"
                    );
                    last_log = Some(Instant::now());
                    unlogged = 0;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// Whether a connection has requests in hand, and since when it has had none.
pub(crate) struct Activity {
    active: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveRequest(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        self.idle_since.lock().ok().map(|t| *t)
    }
}

/// A request in hand on its connection, until its response body has been sent.
pub(crate) struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.idle_since.lock() {
            *t = Instant::now();
        }
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What each request learns of its connection (tonic puts it in the extensions).
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub(crate) activity: Arc<Activity>,
    /// The connection's share of the request slots (`limit::share`): one HTTP/2
    /// connection cannot take them all.
    pub(crate) slots: Arc<Semaphore>,
}

/// An accepted connection: holds its slot under the limit, and ends itself with a
/// `TimedOut` read error once idle for too long.
pub(crate) struct Conn {
    stream: Io,
    _slot: OwnedSemaphorePermit,
    activity: Arc<Activity>,
    requests: Arc<Semaphore>,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Conn {
    fn new(stream: Io, slot: OwnedSemaphorePermit, limits: &Limits) -> Self {
        crate::metrics::global().connections_open.inc();
        Self {
            stream,
            _slot: slot,
            activity: Arc::new(Activity::new()),
            requests: Arc::new(Semaphore::new(super::limit::share(
                limits.max_concurrent_requests,
            ))),
            idle_timeout: limits.idle_timeout,
            timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        }
    }

    /// `Ready` once the connection has been idle for the timeout; otherwise arms the
    /// timer for the moment it would be.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let deadline = match self.activity.idle_since() {
                Some(since) => since + self.idle_timeout,
                None => now + self.idle_timeout,
            };
            if deadline <= now {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

/// A connection's bytes: plain TCP, or TLS over it.
pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        crate::metrics::global().connections_open.dec();
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(r) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        match this.poll_idle(cx) {
            Poll::Ready(()) => Poll::Ready(Err({
                crate::metrics::global().idle_connections_closed.inc();
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "closing a connection idle for longer than --idle-timeout",
                )
            })),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            activity: self.activity.clone(),
            slots: self.requests.clone(),
        }
    }
}

/// Marks each request active on its connection until its response body is done, so
/// that the idle timeout never closes a connection in the middle of a request or an
/// open stream.
#[derive(Clone, Copy, Default)]
pub(crate) struct TrackActivity;

impl super::around::Around for TrackActivity {
    type Carry = Option<ActiveRequest>;

    fn before<B>(
        &self,
        req: &http::Request<B>,
    ) -> Result<Self::Carry, Box<super::around::Response>> {
        Ok(req
            .extensions()
            .get::<ConnInfo>()
            .map(|info| info.activity.begin()))
    }

    fn after(active: Self::Carry, response: super::around::Response) -> super::around::Response {
        match active {
            Some(active) => response.map(|body| {
                tonic::body::Body::new(Guarded {
                    inner: body,
                    _active: active,
                })
            }),
            None => response,
        }
    }
}

/// A response body that keeps its request active until it is dropped.
struct Guarded {
    inner: tonic::body::Body,
    _active: ActiveRequest,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
