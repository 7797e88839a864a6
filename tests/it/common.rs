//! Test harness: a real Arbor server on `127.0.0.1:0` with its own temporary data
//! directory, and a generated gRPC client for it. The listener is bound before the
//! server task starts, so a client can connect at once: no sleeps.

#![allow(dead_code)]

use std::net::SocketAddr;

use arbor::pb::tracking_service_client::TrackingServiceClient;
use arbor::store::{Store, StoreConfig};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// The first admin's password in servers started with auth.
pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir")).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with(dir, &StoreConfig::default()).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: &StoreConfig) -> Self {
        Self::start_serving(dir, config, arbor::server::Options::default()).await
    }

    /// With auth on (`default_permission` for users without a grant) and an admin
    /// `admin` whose password is `ADMIN_PASSWORD`.
    pub async fn start_with_auth(default_permission: arbor::domain::access::Permission) -> Self {
        let options = arbor::server::Options {
            auth: arbor::auth::Policy {
                enabled: true,
                default_permission,
            },
            ..Default::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_serving(dir, &StoreConfig::default(), options).await
    }

    pub async fn start_serving(
        dir: tempfile::TempDir,
        config: &StoreConfig,
        options: arbor::server::Options,
    ) -> Self {
        let mut config = config.clone();
        if config.shared_log.is_none() {
            config.shared_log = shared_log_for(dir.path()).await;
        }
        Self::serve_exactly(dir, &config, options).await
    }

    /// On the embedded store, whatever backend the suite runs on.
    pub async fn start_on_sled(dir: tempfile::TempDir) -> Self {
        Self::serve_exactly(dir, &StoreConfig::default(), Default::default()).await
    }

    async fn serve_exactly(
        dir: tempfile::TempDir,
        config: &StoreConfig,
        options: arbor::server::Options,
    ) -> Self {
        let store = Store::open(dir.path(), config).expect("open store");
        if options.auth.enabled {
            arbor::auth::bootstrap(&store, "admin", Some(ADMIN_PASSWORD.to_string()))
                .await
                .expect("first admin");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            arbor::server::serve(listener, store, options, async {
                let _ = rx.await;
            })
            .await
            .expect("server");
        });
        TestServer {
            addr,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn client(&self) -> TrackingServiceClient<Channel> {
        TrackingServiceClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }

    /// The typed client (`Tracking`).
    pub async fn tracking(&self) -> Tracking {
        Tracking(self.client().await)
    }

    /// Shuts down gracefully and hands back the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    /// Stops the server and checks that rebuilding every projection from the log changes
    /// nothing: live state equals the state derived from the log.
    pub async fn stop_and_check_rebuild(self) {
        let dir = self.stop().await;
        // No reserve: a test on a small disk checks the rebuild, not the reserve.
        let config = StoreConfig {
            min_free_bytes: 0,
            ..StoreConfig::default()
        };
        let report = arbor::store::rebuild(dir.path(), &config).expect("rebuild");
        assert_eq!(
            report.keys_changed, 0,
            "rebuild changed projections: {report:?}"
        );
        assert!(report.events > 0);
    }
}

/// The database the tests make PostgreSQL databases beside (`ARBOR_TEST_POSTGRES`,
/// default `postgres://postgres@127.0.0.1:5432/test`).
pub fn postgres_base() -> String {
    std::env::var("ARBOR_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether every `TestServer` keeps its log in PostgreSQL (`ARBOR_TEST_BACKEND=postgres`:
/// the suite's second pass); otherwise the embedded store.
pub fn on_postgres() -> bool {
    std::env::var("ARBOR_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// When the tests run on PostgreSQL: the shared log of a server on `dir`, a new database
/// made on first use and kept for restarts on the same directory (`scripts/test` drops
/// the suite's databases when it ends).
pub async fn shared_log_for(dir: &std::path::Path) -> Option<String> {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static MADE: Mutex<BTreeMap<std::path::PathBuf, String>> = Mutex::new(BTreeMap::new());
    if !on_postgres() {
        return None;
    }
    let base = postgres_base();
    if let Some(url) = MADE.lock().expect("lock").get(dir) {
        return Some(url.clone());
    }
    let url = new_database(&base).await;
    MADE.lock()
        .expect("lock")
        .insert(dir.to_path_buf(), url.clone());
    Some(url)
}

/// Makes an empty database beside the one `base` names; returns its URL.
pub async fn new_database(base: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let name = format!(
        "arbor_test_{}_{}_{nanos}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("these tests need PostgreSQL at {base} (set ARBOR_TEST_POSTGRES): {e}")
        });
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    drop(client);
    let _ = driver.await;
    let (server, _) = base.rsplit_once('/').expect("a URL ending in /DATABASE");
    format!("{server}/{name}")
}

pub fn code(status: &tonic::Status) -> tonic::Code {
    status.code()
}

/// One HTTP/1.1 exchange over a fresh connection, with hyper's client: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let connection = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req
        .body(Full::new(hyper::body::Bytes::copy_from_slice(body)))
        .expect("request");
    let res = sender.send_request(req).await.expect("send");
    let status = res.status().as_u16();
    let out = res.into_body().collect().await.expect("body").to_bytes();
    drop(sender);
    // The connection task ends once the client side is dropped: nothing outlives the call.
    let _ = connection.await;
    (status, out.to_vec())
}

/// A JSON exchange with the MLflow REST API.
pub async fn rest(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let ct = (!bytes.is_empty()).then_some("application/json");
    let (status, out) = http(addr, method, path, ct, &bytes).await;
    let json = if out.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&out).into()))
    };
    (status, json)
}

/// A gRPC answer, unwrapped: `client.get_run(req).await.answer()` is the response
/// message, or a panic naming the status the server gave instead.
pub trait Answer<T> {
    fn answer(self) -> T;
}

impl<T> Answer<T> for Result<tonic::Response<T>, tonic::Status> {
    #[track_caller]
    fn answer(self) -> T {
        match self {
            Ok(response) => response.into_inner(),
            Err(status) => panic!("refused: {:?}: {}", status.code(), status.message()),
        }
    }
}

/// The tracking API typed for tests: each call answers the thing asked for (the raw
/// client, for calls expected to fail, is there through `Deref`).
#[derive(Clone)]
pub struct Tracking(pub TrackingServiceClient<Channel>);

impl std::ops::Deref for Tracking {
    type Target = TrackingServiceClient<Channel>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Tracking {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Tracking {
    pub async fn experiment(&mut self, id: &str) -> arbor::pb::Experiment {
        self.0
            .get_experiment(arbor::pb::GetExperimentRequest {
                experiment_id: id.into(),
            })
            .await
            .answer()
            .experiment
            .expect("an experiment")
    }

    pub async fn new_run(&mut self, req: arbor::pb::CreateRunRequest) -> arbor::pb::Run {
        self.0.create_run(req).await.answer().run.expect("a run")
    }

    pub async fn run(&mut self, run_id: &str) -> arbor::pb::Run {
        self.0
            .get_run(arbor::pb::GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .answer()
            .run
            .expect("a run")
    }

    pub async fn updated_run(&mut self, req: arbor::pb::UpdateRunRequest) -> arbor::pb::RunInfo {
        self.0
            .update_run(req)
            .await
            .answer()
            .run_info
            .expect("run info")
    }

    /// Every point of a history, through all its pages.
    pub async fn history(&mut self, run_id: &str, key: &str) -> Vec<arbor::pb::Metric> {
        let mut points = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .0
                .get_metric_history(arbor::pb::GetMetricHistoryRequest {
                    run_id: run_id.into(),
                    metric_key: key.into(),
                    page_token,
                    ..Default::default()
                })
                .await
                .answer();
            points.extend(page.metrics);
            if page.next_page_token.is_empty() {
                return points;
            }
            page_token = page.next_page_token;
        }
    }
}

/// Creates an experiment and returns its id.
pub async fn create_experiment(c: &mut TrackingServiceClient<Channel>, name: &str) -> String {
    c.create_experiment(arbor::pb::CreateExperimentRequest {
        name: name.into(),
        ..Default::default()
    })
    .await
    .expect("create experiment")
    .into_inner()
    .experiment_id
}

/// proptest's settings for this suite: a fixed seed, so CI runs the same cases every time
/// (set `PROPTEST_RNG_SEED` to explore others), and no regression files.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let default = proptest::test_runner::Config::default();
    let rng_seed = if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
        default.rng_seed
    } else {
        proptest::test_runner::RngSeed::Fixed(0x00C0_FFEE)
    };
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        rng_seed,
        ..default
    }
}

/// Random decisions drawn from a list that proptest generates, so that a property test
/// keeps its readable step-by-step generator while proptest picks the seed, replays a
/// failure and shrinks it (fewer and smaller choices). Past the end of the list the
/// choices start over.
pub struct Choices {
    values: Vec<u64>,
    at: usize,
}

impl Choices {
    pub fn new(values: Vec<u64>) -> Self {
        Choices { values, at: 0 }
    }

    pub fn next(&mut self) -> u64 {
        let v = self
            .values
            .get(self.at % self.values.len().max(1))
            .copied()
            .unwrap_or(0);
        self.at += 1;
        v
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }

    /// One of a non-empty list of words.
    pub fn one<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

/// Creates a run as `req` says and returns its id.
pub async fn new_run_id(
    c: &mut TrackingServiceClient<Channel>,
    req: arbor::pb::CreateRunRequest,
) -> String {
    c.create_run(req)
        .await
        .expect("create run")
        .into_inner()
        .run
        .and_then(|r| r.info)
        .expect("a run with its info")
        .run_id
}

/// Starts a real `arbor` process (`cmd` says which subcommand and flags; it must print
/// the address line, as `arbor serve` does) and reads the address it prints. Its logs
/// go to the test's stderr at `TEST_ARBOR_LOG` (default `warn`).
pub fn start_process(mut cmd: std::process::Command) -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = cmd
        .env(
            "ARBOR_LOG",
            std::env::var("TEST_ARBOR_LOG").unwrap_or("warn".into()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn arbor");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read address");
    let addr = line
        .trim()
        .strip_prefix("arbor listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    (child, addr)
}

/// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
pub fn terminate(child: &mut std::process::Child) -> bool {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a child's pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    child.wait().expect("wait").success()
}

/// Runs the `arbor` binary to its end (a subcommand that exits): whether it succeeded,
/// and its stdout and stderr. Async, so that an in-process server on the test's runtime
/// keeps serving meanwhile.
pub async fn arbor_cli(args: &[&str]) -> (bool, String) {
    arbor_cli_with(args, &[], &[]).await
}

/// `arbor_cli` with these environment variables set and those removed.
pub async fn arbor_cli_with(
    args: &[&str],
    set: &[(&str, &std::ffi::OsStr)],
    remove: &[&str],
) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_arbor"));
    cmd.args(args).envs(set.iter().copied());
    for var in remove {
        cmd.env_remove(var);
    }
    let out = cmd.output().await.expect("run arbor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
