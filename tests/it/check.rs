//! `arbor check` on a stopped store: intact after writes; damaged projections are found
//! (and `arbor rebuild` mends them); a damaged log is found and named, with what to do.
//! `arbor disk-usage` says where the store's bytes go.
//! The store is damaged on purpose by writing to its sled tree directly.

use crate::common;

use common::TestServer;

async fn arbor(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let dir = dir.to_str().expect("utf-8 path");
    common::arbor_cli(&[args, &["--data-dir", dir]].concat()).await
}

/// Opens the stopped store's tree to damage it, and closes it again.
fn damage(dir: &std::path::Path, key: &[u8], value: &[u8]) {
    arbor::store::with_database(dir, |tree| tree.insert(key, value).expect("insert"))
        .expect("damage the store's database");
}

/// A store after ordinary writes checks intact; an extra projection key is found and
/// `arbor rebuild` mends it; a log event that does not decode is named, the advice is a
/// restore, and a rebuild refuses it without changing anything.
#[tokio::test]
async fn check_finds_damaged_projections_and_a_damaged_log() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let exp = common::create_experiment(&mut c, "checked").await;
    for _ in 0..3 {
        common::new_run_id(
            &mut c,
            arbor::pb::CreateRunRequest {
                experiment_id: exp.clone(),
                ..Default::default()
            },
        )
        .await;
    }
    drop(c);
    let dir = server.stop().await;

    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(ok, "{text}");
    assert!(text.contains("intact"), "{text}");

    damage(dir.path(), b"Rno-such-run", b"\x00");
    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(!ok, "{text}");
    assert!(
        text.contains("1 extra") && text.contains("arbor rebuild"),
        "{text}"
    );
    let (ok, text) = arbor(&["rebuild"], dir.path()).await;
    assert!(ok, "{text}");
    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(ok, "{text}");

    // Event 2 of the log (`L` and the big-endian sequence number) no longer decodes.
    let mut key = vec![b'L'];
    key.extend_from_slice(&2u64.to_be_bytes());
    damage(dir.path(), &key, b"\xff\xff\xff");
    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(!ok, "{text}");
    assert!(text.contains("event 2 does not decode"), "{text}");
    assert!(text.contains("restore the store from a backup"), "{text}");
    // A rebuild cannot mend the log: it fails, leaves no half-built copy beside the
    // store, and changes nothing (the check finds the same damage).
    let (ok, text) = arbor(&["rebuild"], dir.path()).await;
    assert!(!ok, "{text}");
    assert!(
        !dir.path().join("db.rebuild").exists(),
        "a half-built copy was left"
    );
    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(!ok && text.contains("event 2 does not decode"), "{text}");
}

/// `arbor disk-usage` counts each table's keys, the points in the history (and their
/// copy in the log) and the runs, and sets them against the size on disk.
#[tokio::test]
async fn disk_usage_says_where_the_bytes_go() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let run = common::new_run_id(&mut c, arbor::pb::CreateRunRequest::default()).await;
    for b in 0..3i64 {
        c.log_batch(arbor::pb::LogBatchRequest {
            run_id: run.clone(),
            metrics: (0..1000)
                .map(|i| arbor::pb::Metric {
                    key: "loss".into(),
                    value: i as f64,
                    timestamp: 1_000 + i,
                    step: b * 1000 + i,
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    drop(c);
    let dir = server.stop().await;
    let (ok, text) = arbor(&["disk-usage"], dir.path()).await;
    assert!(ok, "{text}");
    assert!(text.contains("3000 points:"), "{text}");
    assert!(text.contains("1 runs:"), "{text}");
    for table in [
        "event log",
        "metric history chunks",
        "run records",
        "sled's own layout",
    ] {
        assert!(text.contains(table), "{table}: {text}");
    }
    // The log holds the run's creation and three batches (and the default experiment).
    let log = text.lines().find(|l| l.starts_with("L ")).unwrap();
    assert_eq!(log.split_whitespace().nth(3), Some("5"), "{log}");
    // Reading changed nothing.
    let (ok, text) = arbor(&["check"], dir.path()).await;
    assert!(ok && text.contains("intact"), "{text}");
}
