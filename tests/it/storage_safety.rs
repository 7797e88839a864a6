//! A full disk, a rebuild without room, and a rebuild interrupted at any point: the
//! store refuses writes while the disk is below its reserve and says so in its health,
//! resumes by itself once space is freed (also after the disk refused a write inside
//! sled), never rebuilds in place, and never loses an acknowledged write.
//!
//! The disk-full tests mount a small tmpfs, which needs root (CI runs as root); as
//! another user they say they are skipped and pass.

use crate::common;
use common::Answer;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arbor::pb;
use arbor::store::StoreConfig;
use common::TestServer;

const MIB: u64 = 1024 * 1024;

/// A tmpfs of a given size mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (and a line saying the test is skipped) unless running as root.
    fn mount(mib: u64, test: &str) -> Option<Tmpfs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("{test}: SKIPPED, mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a {mib} MiB tmpfs");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(self.path()).expect("statvfs");
        st.f_bavail * st.f_frsize
    }

    /// Writes a file that leaves about `leave` bytes free; returns its path.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let path = self.path().join("ballast");
        let size = self.free().saturating_sub(leave);
        let chunk = vec![0xA5u8; 1 << 20];
        let mut f = std::fs::File::create(&path).expect("ballast");
        let mut written = 0;
        while written < size {
            let n = chunk
                .len()
                .min(usize::try_from(size - written).expect("size"));
            if std::io::Write::write_all(&mut f, &chunk[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A data directory inside the tmpfs that `TestServer` can own.
fn data_dir_in(fs: &Tmpfs) -> tempfile::TempDir {
    tempfile::tempdir_in(fs.path()).expect("data dir")
}

fn config(reserve_mib: u64) -> StoreConfig {
    StoreConfig {
        min_free_bytes: reserve_mib * MIB,
        cache_bytes: 8 * MIB,
        ..StoreConfig::default()
    }
}

/// A batch of 100 tags of 8,000 characters (about 800 KB), tagged with its number.
fn big_batch(run_id: &str, n: usize) -> pb::LogBatchRequest {
    pb::LogBatchRequest {
        run_id: run_id.into(),
        tags: (0..100)
            .map(|i| pb::RunTag {
                key: format!("t{i}"),
                value: format!("{n:08}{}", "x".repeat(7992)),
            })
            .collect(),
        ..Default::default()
    }
}

/// Logs big batches until the server refuses one; returns how many were acknowledged
/// and the refusal.
async fn fill_until_refused(
    c: &mut pb::tracking_service_client::TrackingServiceClient<tonic::transport::Channel>,
    run_id: &str,
) -> (usize, tonic::Status) {
    for n in 0..10_000 {
        if let Err(status) = c.log_batch(big_batch(run_id, n)).await {
            return (n, status);
        }
    }
    panic!("the disk never filled");
}

/// Polls `/health` until it answers 200, for at most a minute.
async fn await_healthy(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(10);
    loop {
        let (status, body) = common::http(addr, "GET", "/health", None, b"").await;
        if status == 200 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not healthy after a minute: {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// gRPC health of the overall service, polled until it is `want` (the reporter checks
/// the store every second).
async fn await_grpc_health(server: &TestServer, want: i32) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let mut client = HealthClient::new(server.channel().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .answer()
            .status;
        if status == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gRPC health stayed {status}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every tag of the run holds the value of the last acknowledged batch (or of a refused
/// batch that reached the disk anyway, which the client was told is unknown).
async fn assert_batches_present(server: &TestServer, run_id: &str, acknowledged: usize) {
    assert_batches_present_at(&mut server.client().await, run_id, acknowledged).await;
}

async fn assert_batches_present_at(
    c: &mut pb::tracking_service_client::TrackingServiceClient<tonic::transport::Channel>,
    run_id: &str,
    acknowledged: usize,
) {
    let run = c
        .get_run(pb::GetRunRequest {
            run_id: run_id.into(),
        })
        .await
        .answer()
        .run
        .expect("run");
    let tags = run.data.expect("data").tags;
    let user_tags: Vec<_> = tags.iter().filter(|t| t.key.starts_with('t')).collect();
    assert_eq!(user_tags.len(), 100);
    for t in user_tags {
        let n: usize = t.value[..8].parse().expect("batch number");
        assert!(
            n + 1 >= acknowledged,
            "tag {} holds batch {n}, but batch {} was acknowledged",
            t.key,
            acknowledged - 1
        );
    }
}

async fn run_in_default(server: &TestServer) -> String {
    let mut c = server.client().await;
    common::new_run_id(
        &mut c,
        pb::CreateRunRequest {
            experiment_id: "0".into(),
            ..Default::default()
        },
    )
    .await
}

/// Below the reserve, writes are refused with a message for people, `/health` and gRPC
/// health say NOT_SERVING with the reason, and reads go on; once space is freed, writes
/// resume without a restart, and nothing acknowledged is lost.
#[tokio::test]
async fn below_the_reserve_writes_stop_and_resume_by_themselves() {
    let Some(fs) = Tmpfs::mount(64, "below_the_reserve_writes_stop_and_resume_by_themselves")
    else {
        return;
    };
    let server = TestServer::start_with(data_dir_in(&fs), &config(16)).await;
    let run_id = run_in_default(&server).await;
    let ballast = fs.fill_leaving(24 * MIB);
    let mut c = server.client().await;
    let (acknowledged, refused) = fill_until_refused(&mut c, &run_id).await;
    assert!(
        acknowledged > 0,
        "nothing was written before the disk filled"
    );
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("MiB free"),
        "{}",
        refused.message()
    );

    let (status, body) = common::http(server.addr, "GET", "/health", None, b"").await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("NOT_SERVING: ") && body.contains("MiB free"),
        "{body}"
    );
    await_grpc_health(&server, 2).await;

    // REST says the same, with MLflow's code and no Rust debug text.
    let (status, json) = common::rest(
        server.addr,
        "POST",
        "/api/2.0/mlflow/runs/set-tag",
        Some(serde_json::json!({"run_id": run_id, "key": "k", "value": "v"})),
    )
    .await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(json["error_code"], "TEMPORARILY_UNAVAILABLE");
    let message = json["message"].as_str().expect("message");
    assert!(
        !message.contains("Os {") && !message.contains("kind:"),
        "{message}"
    );
    // Artifact uploads are held to the same reserve, and leave nothing behind.
    let (status, body) = common::http(
        server.addr,
        "PUT",
        "/api/2.0/mlflow-artifacts/artifacts/0/blob.bin",
        Some("application/octet-stream"),
        &vec![7u8; 1 << 20],
    )
    .await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let artifacts = server.dir.path().join("artifacts");
    let leftovers = walk(&artifacts);
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Reads still work.
    c.get_run(pb::GetRunRequest {
        run_id: run_id.clone(),
    })
    .await
    .expect("reads go on while writes are refused");

    std::fs::remove_file(&ballast).expect("free the space");
    await_healthy(server.addr).await;
    await_grpc_health(&server, 1).await;
    c.log_batch(big_batch(&run_id, acknowledged))
        .await
        .expect("writes resume once space is free");
    drop(c);
    assert_batches_present(&server, &run_id, acknowledged + 1).await;
    server.stop_and_check_rebuild().await;
}

/// With no reserve, the disk fills under sled itself. sled cannot go on after that in
/// the same process, so the store stops taking writes: the write is refused (503, the
/// system's words, not Rust's debug text), health says NOT_SERVING and why, reads go
/// on, SIGTERM still ends the process; after a restart on a disk with room every
/// acknowledged write is there and the log is gap-free.
#[tokio::test]
async fn a_write_the_disk_refused_stops_writes_until_a_restart_and_loses_nothing() {
    let Some(fs) = Tmpfs::mount(
        64,
        "a_write_the_disk_refused_stops_writes_until_a_restart_and_loses_nothing",
    ) else {
        return;
    };
    let dir = data_dir_in(&fs);
    let serve = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_arbor"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--cache-mb", "8"])
            .args(["--min-free-space-mb", "0", "--data-dir"])
            .arg(dir.path());
        common::start_process(cmd)
    };
    let (mut child, addr) = serve();
    let url = format!("http://{addr}");
    let mut c = pb::tracking_service_client::TrackingServiceClient::connect(url.clone())
        .await
        .expect("connect");
    let run_id = common::new_run_id(
        &mut c,
        pb::CreateRunRequest {
            experiment_id: "0".into(),
            ..Default::default()
        },
    )
    .await;
    let ballast = fs.fill_leaving(6 * MIB);
    let (acknowledged, refused) = fill_until_refused(&mut c, &run_id).await;
    assert!(acknowledged > 0);
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let message = refused.message().to_string();
    assert!(
        !message.contains("Os {") && !message.contains("kind:"),
        "{message}"
    );
    assert!(message.contains("restart"), "{message}");
    let (status, body) = common::http(addr, "GET", "/health", None, b"").await;
    assert_eq!(status, 503);
    assert!(String::from_utf8_lossy(&body).contains("disk"), "{body:?}");
    c.get_run(pb::GetRunRequest {
        run_id: run_id.clone(),
    })
    .await
    .expect("reads go on");
    drop(c);
    // A clean exit status is not required of a store that lost its disk; exiting is.
    common::terminate(&mut child);

    std::fs::remove_file(&ballast).expect("free the space");
    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(ok, "{text}");
    let (mut child, addr) = serve();
    let mut c =
        pb::tracking_service_client::TrackingServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    assert_batches_present_at(&mut c, &run_id, acknowledged).await;
    c.log_batch(big_batch(&run_id, acknowledged + 1))
        .await
        .expect("writes work after the restart");
    assert_batches_present_at(&mut c, &run_id, acknowledged + 2).await;
    drop(c);
    assert!(
        common::terminate(&mut child),
        "a healthy server exits cleanly"
    );
    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(ok, "{text}");
}

async fn arbor(args: &[&str], dir: &Path) -> (bool, String) {
    let dir = dir.to_str().expect("utf-8 path");
    let store = [
        "--data-dir",
        dir,
        "--min-free-space-mb",
        "8",
        "--cache-mb",
        "8",
    ];
    common::arbor_cli(&[args, &store[..]].concat()).await
}

/// A rebuild without room for a second copy refuses at once with what it needs and
/// leaves the store as it was; with room it rebuilds beside the old copy and swaps.
#[tokio::test]
async fn rebuild_without_room_refuses_and_changes_nothing() {
    let Some(fs) = Tmpfs::mount(64, "rebuild_without_room_refuses_and_changes_nothing") else {
        return;
    };
    let server = TestServer::start_with(data_dir_in(&fs), &config(8)).await;
    let run_id = run_in_default(&server).await;
    let mut c = server.client().await;
    for n in 0..8 {
        c.log_batch(big_batch(&run_id, n)).await.expect("log");
    }
    drop(c);
    let dir = server.stop().await;
    let size = arbor_dir_size(&dir.path().join("db"));
    let ballast = fs.fill_leaving(size / 2 + 8 * MIB);

    let (ok, text) = arbor(&["rebuild"], dir.path()).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("needs") && text.contains("unchanged"),
        "{text}"
    );
    assert!(
        !dir.path().join("db.rebuild").exists(),
        "no partial copy is left"
    );
    std::fs::remove_file(&ballast).expect("free the space");
    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(ok, "{text}");
    let (ok, text) = arbor(&["rebuild"], dir.path()).await;
    assert!(ok, "{text}");
    assert!(text.contains("0 changed"), "{text}");
    assert!(!dir.path().join("db.old").exists() && !dir.path().join("db.rebuild").exists());
    let server = TestServer::start_with(dir, &config(8)).await;
    assert_batches_present(&server, &run_id, 8).await;
    server.stop().await;
}

/// Every file below `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out = vec![];
    for entry in entries {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn arbor_dir_size(path: &Path) -> u64 {
    let meta = std::fs::metadata(path).expect("metadata");
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .expect("read dir")
        .map(|e| arbor_dir_size(&e.expect("entry").path()))
        .sum()
}

/// Copies a directory tree (a stopped store's database) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A rebuild interrupted at each point of its swap leaves a store that opens with
/// everything in it: an unfinished copy beside the old store is dropped; a crash
/// between the two renames is finished; a leftover old copy is removed.
#[tokio::test]
async fn an_interrupted_rebuild_leaves_a_whole_store() {
    let server = TestServer::start().await;
    let run_id = run_in_default(&server).await;
    let mut c = server.client().await;
    c.log_batch(big_batch(&run_id, 0)).await.expect("log");
    drop(c);
    let dir = server.stop().await;
    let live = dir.path().join("db");
    let staged = dir.path().join("db.rebuild");
    let retired = dir.path().join("db.old");

    // 1. Killed while building the copy: a half-written copy beside the live store.
    std::fs::create_dir_all(&staged).expect("mkdir");
    std::fs::write(staged.join("db"), b"half a database").expect("write");
    // 2. and 3. are set up from this state below.
    let server = TestServer::start_in(dir).await;
    assert_batches_present(&server, &run_id, 1).await;
    let dir = server.stop().await;
    assert!(!staged.exists(), "the unfinished copy is removed");

    // 2. Killed between the renames: the old store set aside, the complete copy not yet
    //    in place.
    copy_dir(&live, &staged);
    std::fs::rename(&live, &retired).expect("set aside");
    let server = TestServer::start_in(dir).await;
    assert_batches_present(&server, &run_id, 1).await;
    let dir = server.stop().await;
    assert!(live.exists() && !staged.exists() && !retired.exists());

    // 3. Killed before removing the old copy.
    copy_dir(&live, &retired);
    let server = TestServer::start_in(dir).await;
    assert_batches_present(&server, &run_id, 1).await;
    let dir = server.stop().await;
    assert!(!retired.exists(), "the old copy is removed");

    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(ok, "{text}");
}
