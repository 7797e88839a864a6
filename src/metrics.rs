//! `/metrics`: the server's counters, histograms and gauges in Prometheus' (OpenMetrics)
//! text format. Counters and histograms are process-wide and updated where things
//! happen (requests in `server::observe`, commits in the committer, connections in
//! `server::conn`); gauges (store size, free disk, health, sessions, memory, file
//! descriptors) are read when scraped. docs/operating/metrics.md lists every metric.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels3 = [(&'static str, String); 3];
type Labels2 = [(&'static str, String); 2];
type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<Labels3, Counter>,
    pub(crate) request_seconds: Family<Labels2, Histogram, fn() -> Histogram>,
    pub(crate) commit_group_size: Histogram,
    pub(crate) commit_seconds: Histogram,
    pub(crate) flush_seconds: Histogram,
    pub(crate) events_committed: Counter,
    pub(crate) points_committed: Counter,
    pub(crate) writes_refused: Counter,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_accepted: Counter,
    pub(crate) accept_errors: Counter,
    pub(crate) idle_connections_closed: Counter,
    pub(crate) tls_handshake_failures: Counter,
    pub(crate) auth_failures: Family<[(&'static str, String); 1], Counter>,
    pub(crate) password_verifications: Counter,
    pub(crate) body_timeouts: Counter,
    pub(crate) requests_in_flight: Gauge,
    watch_sessions: Gauge,
    watch_lag: Gauge,
    log_head_seq: Gauge,
    store_bytes: Gauge,
    disk_free_bytes: Gauge,
    healthy: Gauge,
    resident_memory_bytes: Gauge,
    open_fds: Gauge,
    uptime_seconds: FloatGauge,
    started: std::time::Instant,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            commit_group_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: latency_histogram(),
            flush_seconds: latency_histogram(),
            events_committed: Counter::default(),
            points_committed: Counter::default(),
            writes_refused: Counter::default(),
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            accept_errors: Counter::default(),
            idle_connections_closed: Counter::default(),
            tls_handshake_failures: Counter::default(),
            auth_failures: Family::default(),
            password_verifications: Counter::default(),
            body_timeouts: Counter::default(),
            requests_in_flight: Gauge::default(),
            watch_sessions: Gauge::default(),
            watch_lag: Gauge::default(),
            log_head_seq: Gauge::default(),
            store_bytes: Gauge::default(),
            disk_free_bytes: Gauge::default(),
            healthy: Gauge::default(),
            resident_memory_bytes: Gauge::default(),
            open_fds: Gauge::default(),
            uptime_seconds: FloatGauge::default(),
            started: std::time::Instant::now(),
            registry: Registry::default(),
        };
        registry.register(
            "arbor_requests",
            "Requests answered, by surface (grpc, mlflow, http), route and status (HTTP status; gRPC status code for gRPC)",
            m.requests.clone(),
        );
        registry.register(
            "arbor_request_duration_seconds",
            "Time to the response's headers, by surface and route (for streams: until the stream opens)",
            m.request_seconds.clone(),
        );
        registry.register(
            "arbor_commit_group_size",
            "Write requests committed together in one atomic batch and flush",
            m.commit_group_size.clone(),
        );
        registry.register(
            "arbor_commit_duration_seconds",
            "Time to write one group's batch and flush it",
            m.commit_seconds.clone(),
        );
        registry.register(
            "arbor_flush_duration_seconds",
            "Time of making one group durable alone: the local flush, or with --store the PostgreSQL commit",
            m.flush_seconds.clone(),
        );
        registry.register(
            "arbor_events_committed",
            "Events appended to the log",
            m.events_committed.clone(),
        );
        registry.register(
            "arbor_points_committed",
            "Metric points appended to the log",
            m.points_committed.clone(),
        );
        registry.register(
            "arbor_writes_refused",
            "Write requests refused because the store is not taking writes (disk below its reserve, or a refused write)",
            m.writes_refused.clone(),
        );
        registry.register(
            "arbor_connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "arbor_connections_accepted",
            "Client connections accepted",
            m.connections_accepted.clone(),
        );
        registry.register(
            "arbor_accept_errors",
            "Failed accepts (out of file descriptors, say), each followed by a back-off",
            m.accept_errors.clone(),
        );
        registry.register(
            "arbor_idle_connections_closed",
            "Connections closed after --idle-timeout-secs with no request in flight",
            m.idle_connections_closed.clone(),
        );
        registry.register(
            "arbor_tls_handshake_failures",
            "TLS handshakes that failed or timed out (a client without a valid certificate, say)",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "arbor_auth_failures",
            "Requests refused by --auth: reason=unauthenticated (no or wrong credentials) or forbidden (no permission)",
            m.auth_failures.clone(),
        );
        registry.register(
            "arbor_password_verifications",
            "Argon2 password checks run (unknown users are checked against a dummy hash, so they count too)",
            m.password_verifications.clone(),
        );
        registry.register(
            "arbor_request_body_timeouts",
            "Requests ended because their body stalled or arrived slower than the minimum rate",
            m.body_timeouts.clone(),
        );
        registry.register(
            "arbor_requests_in_flight",
            "Requests being received or handled, streams included (waiting for a slot counts)",
            m.requests_in_flight.clone(),
        );
        registry.register(
            "arbor_watch_sessions",
            "Open watch streams (gRPC and SSE)",
            m.watch_sessions.clone(),
        );
        registry.register(
            "arbor_watch_lag_events",
            "Committed events the furthest-behind watch session has yet to hand to its client",
            m.watch_lag.clone(),
        );
        registry.register(
            "arbor_log_head_seq",
            "Sequence number of the last committed event",
            m.log_head_seq.clone(),
        );
        registry.register(
            "arbor_store_bytes",
            "Size of the database on disk",
            m.store_bytes.clone(),
        );
        registry.register(
            "arbor_disk_free_bytes",
            "Free bytes on the data directory's disk",
            m.disk_free_bytes.clone(),
        );
        registry.register(
            "arbor_healthy",
            "1 while the store takes writes, 0 while /health says NOT_SERVING",
            m.healthy.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process",
            m.resident_memory_bytes.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors of the server process",
            m.open_fds.clone(),
        );
        registry.register(
            "arbor_uptime_seconds",
            "Seconds since the metrics were first used (the server's start)",
            m.uptime_seconds.clone(),
        );
        Self { registry, ..m }
    }

    /// The text a scrape returns, with the store's gauges as the caller read them now
    /// and the process's read here.
    pub fn render(&self, store: StoreGauges) -> String {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.watch_sessions.set(as_i64(store.watch_sessions as u64));
        self.watch_lag.set(as_i64(store.watch_lag));
        self.log_head_seq.set(as_i64(store.committed_seq));
        self.store_bytes.set(as_i64(store.disk_bytes));
        self.disk_free_bytes.set(as_i64(store.disk_free_bytes));
        self.healthy.set(i64::from(store.healthy));
        if let Some(rss) = resident_bytes() {
            self.resident_memory_bytes.set(as_i64(rss));
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(as_i64(fds.count() as u64));
        }
        self.uptime_seconds
            .set(self.started.elapsed().as_secs_f64());
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What a scrape reports of the store, read by the caller (metrics sits below the store
/// and knows nothing of it).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreGauges {
    pub watch_sessions: usize,
    pub watch_lag: u64,
    pub committed_seq: u64,
    pub disk_bytes: u64,
    pub disk_free_bytes: u64,
    pub healthy: bool,
}

/// `VmRSS` of this process, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
