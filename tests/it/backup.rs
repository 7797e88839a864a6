//! Online backups: taken while four writers keep going, restored into new stores, and
//! compared with the live store: the restored log equals the live log up to the
//! backup's sequence number, event for event; a full backup plus an incremental one
//! restore to a store identical to the live one, key for key (every run, param, tag,
//! history point and index), with the artifacts byte for byte. Damaged, truncated or
//! out-of-order backups are refused and leave no store behind.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arbor::pb;
use common::TestServer;

async fn arbor(args: &[&str]) -> (bool, String) {
    common::arbor_cli(args).await
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Every key and value of a stopped store's tree, the log included.
fn contents(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    arbor::store::with_database(dir, |tree| {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv.expect("read");
                (k.to_vec(), v.to_vec())
            })
            .collect()
    })
    .expect("read the store's database")
}

/// The log entries (key and stored event) of a stopped store.
fn log_of(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    contents(dir)
        .into_iter()
        .filter(|(k, _)| k.first() == Some(&b'L'))
        .collect()
}

/// Every file under `dir`, relative, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let path = e.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("below root").to_path_buf();
                out.push((rel, std::fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A writer creating runs (every third a child of the one before) and logging batches
/// of metrics, params and tags until told to stop; counts what was acknowledged.
async fn writer(
    server: String,
    n: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    progress: Arc<tokio::sync::Notify>,
) {
    let mut c = pb::tracking_service_client::TrackingServiceClient::connect(server)
        .await
        .expect("connect");
    let mut parent: Option<String> = None;
    let mut i = 0i64;
    while !stop.load(Ordering::Acquire) {
        let tags = match (&parent, i % 3) {
            (Some(p), 0) => vec![pb::RunTag {
                key: "mlflow.parentRunId".into(),
                value: p.clone(),
            }],
            _ => vec![],
        };
        let run_id = common::new_run_id(
            &mut c,
            pb::CreateRunRequest {
                experiment_id: "0".into(),
                tags,
                ..Default::default()
            },
        )
        .await;
        for b in 0..3i64 {
            c.log_batch(pb::LogBatchRequest {
                run_id: run_id.clone(),
                metrics: (0..20)
                    .map(|k| pb::Metric {
                        key: format!("m{}", k % 4),
                        value: (b * 20 + k) as f64 * 0.5,
                        timestamp: 1_000 + b,
                        step: b * 20 + k,
                    })
                    .collect(),
                params: if b == 0 {
                    vec![pb::Param {
                        key: "writer".into(),
                        value: n.to_string(),
                    }]
                } else {
                    vec![]
                },
                tags: vec![pb::RunTag {
                    key: "batch".into(),
                    value: b.to_string(),
                }],
            })
            .await
            .expect("log batch");
            acked.fetch_add(1, Ordering::AcqRel);
            progress.notify_waiters();
        }
        parent = Some(run_id);
        i += 1;
    }
}

/// Waits until `acked` reaches `n` (writers notify on every acknowledgement).
async fn until_acked(acked: &AtomicUsize, progress: &tokio::sync::Notify, n: usize) {
    loop {
        let notified = progress.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if acked.load(Ordering::Acquire) >= n {
            return;
        }
        notified.await;
    }
}

/// A full backup taken during writes, and an incremental one after, restore to the live
/// store: the log up to the backup's sequence number, then everything.
#[tokio::test]
async fn a_backup_during_writes_restores_the_store_up_to_its_sequence_number() {
    let server = TestServer::start().await;
    let url = server.url();
    let run_id = {
        let mut c = server.client().await;
        common::new_run_id(
            &mut c,
            pb::CreateRunRequest {
                experiment_id: "0".into(),
                ..Default::default()
            },
        )
        .await
    };
    for (name, body) in [
        ("notes.txt", b"hello backup\n".to_vec()),
        (
            "model/weights.bin",
            (0..=255u8).cycle().take(3_000_000).collect(),
        ),
        ("empty", vec![]),
    ] {
        let (status, _) = common::http(
            server.addr,
            "PUT",
            &format!("/api/2.0/mlflow-artifacts/artifacts/0/{run_id}/artifacts/{name}"),
            Some("application/octet-stream"),
            &body,
        )
        .await;
        assert_eq!(status, 200);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let writers: Vec<_> = (0..4)
        .map(|n| {
            tokio::spawn(writer(
                url.clone(),
                n,
                stop.clone(),
                acked.clone(),
                progress.clone(),
            ))
        })
        .collect();
    until_acked(&acked, &progress, 100).await;

    let work = tempfile::tempdir().expect("tempdir");
    let full = work.path().join("full.arbor-backup");
    let (ok, text) = arbor(&[
        "backup",
        "--server",
        &url,
        "--out",
        s(&full),
        "--with-artifacts",
    ])
    .await;
    assert!(ok, "{text}");
    assert!(text.contains("events/s"), "{text}");
    let during = acked.load(Ordering::Acquire);
    until_acked(&acked, &progress, during + 100).await;
    stop.store(true, Ordering::Release);
    for w in writers {
        w.await.expect("writer");
    }
    let incremental = work.path().join("incremental.arbor-backup");
    let (ok, text) = arbor(&[
        "backup",
        "--server",
        &url,
        "--out",
        s(&incremental),
        "--incremental-from",
        s(&full),
    ])
    .await;
    assert!(ok, "{text}");

    let (full_header, full_summary) = arbor::backup::verify(&full).expect("verify full");
    let (inc_header, _) = arbor::backup::verify(&incremental).expect("verify incremental");
    assert_eq!(full_header.from_seq, 1);
    assert_eq!(inc_header.from_seq, full_header.to_seq + 1);
    assert_eq!(full_summary.artifact_files, 3);
    let live_dir = server.stop().await;
    let live_log = log_of(live_dir.path());
    assert!(
        live_log.len() as u64 > full_header.to_seq,
        "writes went on after the full backup"
    );
    assert_eq!(live_log.len() as u64, inc_header.to_seq);

    // The full backup alone: the live log's prefix, and projections that check.
    let only_full = work.path().join("only-full");
    let (ok, text) = arbor(&["restore", "--from", s(&full), "--data-dir", s(&only_full)]).await;
    assert!(ok, "{text}");
    let restored_log = log_of(&only_full);
    assert_eq!(restored_log.len() as u64, full_header.to_seq);
    assert!(
        restored_log == live_log[..restored_log.len()],
        "the restored log differs from the live log's prefix"
    );
    let (ok, text) = arbor(&["check", "--data-dir", s(&only_full)]).await;
    assert!(ok, "{text}");

    // Full and incremental: the live store, key for key, and its artifacts.
    let both = work.path().join("both");
    let (ok, text) = arbor(&[
        "restore",
        "--from",
        s(&full),
        "--from",
        s(&incremental),
        "--data-dir",
        s(&both),
    ])
    .await;
    assert!(ok, "{text}");
    assert!(
        contents(&both) == contents(live_dir.path()),
        "the restored store differs from the live one"
    );
    assert_eq!(
        files(&both.join("artifacts")),
        files(&live_dir.path().join("artifacts"))
    );

    // And it opens, with the run there.
    let restored = arbor::store::Store::open(&both, &arbor::store::StoreConfig::default())
        .expect("the restored store opens");
    restored.get_run(&run_id).expect("the run is there");
    restored.close().await;
}

/// Truncated, damaged and out-of-order backups are refused with the reason, and leave
/// no store behind; a data directory that holds a store is never overwritten; a stopped
/// store backs up from its data directory.
#[tokio::test]
async fn damaged_incomplete_or_misordered_backups_are_refused() {
    let server = TestServer::start().await;
    let url = server.url();
    let work = tempfile::tempdir().expect("tempdir");
    let full = work.path().join("full");
    let (ok, text) = arbor(&["backup", "--server", &url, "--out", s(&full)]).await;
    assert!(ok, "{text}");
    let inc = work.path().join("inc");
    let (ok, text) = arbor(&[
        "backup",
        "--server",
        &url,
        "--out",
        s(&inc),
        "--incremental-from",
        s(&full),
    ])
    .await;
    assert!(ok, "{text}");
    let live = server.stop().await;
    let bytes = std::fs::read(&full).expect("read");

    // A stopped store backs up from its data directory to the same log.
    let offline = work.path().join("offline");
    let (ok, text) = arbor(&["backup", "--data-dir", s(live.path()), "--out", s(&offline)]).await;
    assert!(ok, "{text}");
    let (inc_header, _) = arbor::backup::verify(&inc).expect("verify");
    let (offline_header, _) = arbor::backup::verify(&offline).expect("verify");
    assert_eq!(
        (offline_header.from_seq, offline_header.to_seq),
        (1, inc_header.to_seq)
    );
    let from_offline = work.path().join("restore-offline");
    let (ok, text) = arbor(&[
        "restore",
        "--from",
        s(&offline),
        "--data-dir",
        s(&from_offline),
    ])
    .await;
    assert!(ok, "{text}");
    assert!(contents(&from_offline) == contents(live.path()));
    // A directory without a store is not backed up (nor turned into an empty store).
    let empty = work.path().join("no-store-here");
    let (ok, text) = arbor(&["backup", "--data-dir", s(&empty), "--out", s(&offline)]).await;
    assert!(!ok && text.contains("no Arbor store"), "{text}");
    assert!(!empty.exists(), "a store was created");
    // A URL that is neither http:// nor https:// is refused in words.
    let (ok, text) = arbor(&[
        "backup",
        "--server",
        "ftp://127.0.0.1:1",
        "--out",
        s(&offline),
    ])
    .await;
    assert!(
        !ok && text.contains("give an http:// or https:// URL"),
        "{text}"
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            bytes[..bytes.len() - 10].to_vec(),
            "not a complete",
        ),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                let at = b.len() / 2;
                b[at] ^= 0x20;
                b
            },
            "not a complete",
        ),
        ("empty", vec![], "not a complete"),
    ];
    for (name, data, want) in cases {
        let path = work.path().join(name);
        std::fs::write(&path, data).expect("write");
        let target = work.path().join(format!("restore-{name}"));
        let (ok, text) = arbor(&["restore", "--from", s(&path), "--data-dir", s(&target)]).await;
        assert!(!ok, "{name}: {text}");
        assert!(text.contains(want), "{name}: {text}");
        assert!(!target.join("db").exists(), "{name}: a store was left");
    }
    // An incremental backup alone, or before its full one.
    let target = work.path().join("restore-misordered");
    let (ok, text) = arbor(&[
        "restore",
        "--from",
        s(&inc),
        "--from",
        s(&full),
        "--data-dir",
        s(&target),
    ])
    .await;
    assert!(!ok && text.contains("full backup"), "{text}");
    assert!(!target.join("db").exists());
    // Never over an existing store.
    let (ok, text) = arbor(&["restore", "--from", s(&full), "--data-dir", s(live.path())]).await;
    assert!(!ok && text.contains("already holds a store"), "{text}");
}
