//! Live streams against a real server: resume without gap or repeat, subtree and
//! experiment scopes, key filters, slow subscribers, many watchers, shutdown, the change
//! feed, server-sent events, and LogMetricStream ingest.

use crate::common;
use common::Answer;

use std::collections::BTreeSet;

use arbor::pb::{
    self, tracking_service_client::TrackingServiceClient, watch_metrics_request::Scope,
    watch_service_client::WatchServiceClient,
};
use common::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::Code;
use tonic::transport::Channel;

type Tracking = TrackingServiceClient<Channel>;
type Watch = WatchServiceClient<Channel>;

async fn new_run(c: &mut Tracking, exp: &str, parent: Option<&str>) -> String {
    let tags = parent
        .map(|p| {
            vec![pb::RunTag {
                key: "mlflow.parentRunId".into(),
                value: p.into(),
            }]
        })
        .unwrap_or_default();
    common::new_run_id(
        c,
        pb::CreateRunRequest {
            experiment_id: exp.into(),
            tags,
            ..Default::default()
        },
    )
    .await
}

/// Logs points with steps `from..to` under `key`.
async fn log(c: &mut Tracking, run: &str, key: &str, from: i64, to: i64) {
    let metrics = (from..to)
        .map(|s| pb::Metric {
            key: key.into(),
            value: s as f64,
            timestamp: 1000 + s,
            step: s,
        })
        .collect();
    c.log_batch(pb::LogBatchRequest {
        run_id: run.into(),
        metrics,
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn watch(
    w: &mut Watch,
    scope: Scope,
    keys: &[&str],
    from_seq: Option<u64>,
) -> tonic::Streaming<pb::WatchMetricsResponse> {
    w.watch_metrics(pb::WatchMetricsRequest {
        scope: Some(scope),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        from_seq,
    })
    .await
    .answer()
}

/// One point of a watch message, flattened from its columns.
#[derive(Debug, Clone)]
struct Point {
    run_id: String,
    key: String,
    value: f64,
    step: i64,
    seq: u64,
}

fn flatten(m: &pb::WatchMetricsResponse) -> Vec<Point> {
    let mut out = Vec::new();
    for s in &m.series {
        assert_eq!(s.values.len(), s.steps.len());
        assert_eq!(s.values.len(), s.timestamps.len());
        for (&value, &step) in s.values.iter().zip(&s.steps) {
            out.push(Point {
                run_id: m.run_id.clone(),
                key: s.key.clone(),
                value,
                step,
                seq: m.seq,
            });
        }
    }
    out
}

/// Reads messages until `n` points have arrived; returns (seq of last message, points).
async fn read_points(
    s: &mut tonic::Streaming<pb::WatchMetricsResponse>,
    n: usize,
) -> (u64, Vec<Point>) {
    let mut points = Vec::new();
    let mut last = 0;
    while points.len() < n {
        let msg = s.message().await.unwrap().expect("stream ended early");
        last = msg.seq;
        points.extend(flatten(&msg));
    }
    assert_eq!(points.len(), n, "more points than expected");
    (last, points)
}

fn steps(points: &[Point]) -> Vec<i64> {
    points.iter().map(|p| p.step).collect()
}

/// A watcher that reconnects with from_seq = last + 1 gets exactly the points it missed.
#[tokio::test]
async fn reconnecting_with_last_seq_plus_one_misses_and_repeats_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = WatchServiceClient::new(server.channel().await);
    let run = new_run(&mut c, "0", None).await;
    log(&mut c, &run, "loss", 0, 10).await; // before the watch: not part of "from now"

    let mut s = watch(&mut w, Scope::RunId(run.clone()), &[], None).await;
    let position = s.message().await.unwrap().unwrap();
    assert!(
        position.series.is_empty(),
        "the first message marks the position"
    );
    for i in 1..4 {
        log(&mut c, &run, "loss", i * 10, i * 10 + 10).await;
    }
    let (last, first_part) = read_points(&mut s, 20).await;
    assert_eq!(steps(&first_part), (10..30).collect::<Vec<_>>());
    assert!(
        first_part
            .iter()
            .all(|p| p.run_id == run && p.key == "loss" && p.seq > position.seq)
    );
    drop(s); // disconnect with 10 points unread

    for i in 4..7 {
        log(&mut c, &run, "loss", i * 10, i * 10 + 10).await;
    }
    let mut s = watch(&mut w, Scope::RunId(run.clone()), &[], Some(last + 1)).await;
    s.message().await.unwrap().unwrap(); // position
    let (_, rest) = read_points(&mut s, 40).await;
    assert_eq!(
        steps(&rest),
        (30..70).collect::<Vec<_>>(),
        "exactly the missed points, in order"
    );

    // From the beginning of the log: everything.
    let mut s = watch(&mut w, Scope::RunId(run.clone()), &[], Some(0)).await;
    s.message().await.unwrap().unwrap();
    let (_, all) = read_points(&mut s, 70).await;
    assert_eq!(steps(&all), (0..70).collect::<Vec<_>>());
    assert!(
        all.iter().all(|p| p.value == p.step as f64),
        "values arrive with their steps"
    );

    let err = w
        .watch_metrics(pb::WatchMetricsRequest {
            scope: Some(Scope::RunId("nope".into())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = w
        .watch_metrics(pb::WatchMetricsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}

/// Subtree and experiment scopes take in runs created or moved in while the stream is open, and key filters apply.
#[tokio::test]
async fn subtree_and_experiment_scopes_follow_new_runs_and_key_filters() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = WatchServiceClient::new(server.channel().await);
    let exp = common::create_experiment(&mut c, "scoped").await;
    let root = new_run(&mut c, &exp, None).await;
    let other_root = new_run(&mut c, &exp, None).await;
    let outsider = new_run(&mut c, "0", None).await;

    let mut subtree = watch(&mut w, Scope::SubtreeRunId(root.clone()), &["loss"], None).await;
    let mut experiment = watch(&mut w, Scope::ExperimentId(exp.clone()), &[], None).await;
    subtree.message().await.unwrap().unwrap();
    experiment.message().await.unwrap().unwrap();

    // Runs created after the watch started join the subtree.
    let child = new_run(&mut c, &exp, Some(&root)).await;
    let grandchild = new_run(&mut c, &exp, Some(&child)).await;
    log(&mut c, &root, "loss", 0, 1).await;
    log(&mut c, &child, "loss", 1, 2).await;
    log(&mut c, &child, "acc", 100, 101).await; // filtered by key
    log(&mut c, &grandchild, "loss", 2, 3).await;
    log(&mut c, &other_root, "loss", 50, 51).await; // same experiment, other tree
    log(&mut c, &outsider, "loss", 60, 61).await; // other experiment
    // Moving a run under the tree brings it into scope.
    c.set_tag(pb::SetTagRequest {
        run_id: other_root.clone(),
        key: "mlflow.parentRunId".into(),
        value: grandchild.clone(),
    })
    .await
    .unwrap();
    log(&mut c, &other_root, "loss", 3, 4).await;

    let (_, got) = read_points(&mut subtree, 4).await;
    assert_eq!(steps(&got), vec![0, 1, 2, 3]);
    let runs: Vec<&str> = got.iter().map(|p| p.run_id.as_str()).collect();
    assert_eq!(
        runs,
        vec![
            root.as_str(),
            child.as_str(),
            grandchild.as_str(),
            other_root.as_str()
        ]
    );

    let (_, got) = read_points(&mut experiment, 6).await;
    assert_eq!(
        steps(&got),
        vec![0, 1, 100, 2, 50, 3],
        "everything in the experiment, nothing outside it"
    );
    server.stop().await;
}

/// A watcher far behind the hub catches up from the log without losing a point or slowing writers.
#[tokio::test]
async fn a_slow_subscriber_catches_up_from_the_log_without_skipping() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = WatchServiceClient::new(server.channel().await);
    let run = new_run(&mut c, "0", None).await;
    let mut slow = watch(&mut w, Scope::RunId(run.clone()), &[], None).await;
    // 600 commits, far more than the hub keeps (256) while this watcher reads nothing.
    // The writes complete: a subscriber never holds up writers.
    for i in 0..600 {
        log(&mut c, &run, "loss", i * 5, i * 5 + 5).await;
    }
    slow.message().await.unwrap().unwrap();
    let (_, got) = read_points(&mut slow, 3000).await;
    assert_eq!(steps(&got), (0..3000).collect::<Vec<_>>());
    // And it is live again afterwards.
    log(&mut c, &run, "loss", 3000, 3001).await;
    let (_, got) = read_points(&mut slow, 1).await;
    assert_eq!(got[0].step, 3000);
    server.stop().await;
}

/// A thousand concurrent watchers of one run each receive every point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watchers_all_receive_every_point() {
    const WATCHERS: usize = 1000;
    const BATCHES: i64 = 20;
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let run = new_run(&mut c, "0", None).await;
    let mut channels = Vec::new();
    for _ in 0..10 {
        channels.push(server.channel().await);
    }
    let mut streams = Vec::new();
    for i in 0..WATCHERS {
        let mut w = WatchServiceClient::new(channels[i % channels.len()].clone());
        let mut s = watch(&mut w, Scope::RunId(run.clone()), &[], None).await;
        s.message().await.unwrap().unwrap();
        streams.push(s);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(
                async move { steps(&read_points(&mut s, (BATCHES * 10) as usize).await.1) },
            )
        })
        .collect();
    for b in 0..BATCHES {
        log(&mut c, &run, "loss", b * 10, b * 10 + 10).await;
    }
    let expected: Vec<i64> = (0..BATCHES * 10).collect();
    for r in readers {
        assert_eq!(r.await.unwrap(), expected);
    }
    server.stop().await;
}

/// On shutdown a stream delivers every committed point, then ends with UNAVAILABLE naming the resume point.
#[tokio::test]
async fn shutdown_ends_streams_with_a_clear_status_after_the_last_event() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = WatchServiceClient::new(server.channel().await);
    let run = new_run(&mut c, "0", None).await;
    let mut s = watch(&mut w, Scope::RunId(run.clone()), &[], None).await;
    s.message().await.unwrap().unwrap();
    log(&mut c, &run, "loss", 0, 50).await;
    server.stop().await;
    let (last, got) = read_points(&mut s, 50).await;
    assert_eq!(steps(&got), (0..50).collect::<Vec<_>>());
    let end = s.message().await.unwrap_err();
    assert_eq!(end.code(), Code::Unavailable);
    assert!(
        end.message().contains(&format!("from_seq={}", last + 1)),
        "{}",
        end.message()
    );
    assert_eq!(
        end.metadata()
            .get("arbor-resume-from-seq")
            .unwrap()
            .to_str()
            .unwrap(),
        (last + 1).to_string()
    );
}

/// WatchEvents is gap-free from seq 1 and filters by experiment.
#[tokio::test]
async fn the_change_feed_is_gap_free_and_filters_by_experiment() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = WatchServiceClient::new(server.channel().await);
    let exp = common::create_experiment(&mut c, "feed").await;
    let in_exp = new_run(&mut c, &exp, None).await;
    let elsewhere = new_run(&mut c, "0", None).await;
    log(&mut c, &in_exp, "loss", 0, 3).await;
    log(&mut c, &elsewhere, "loss", 0, 3).await;
    c.log_param(pb::LogParamRequest {
        run_id: in_exp.clone(),
        key: "lr".into(),
        value: "0.1".into(),
    })
    .await
    .unwrap();

    let mut all = w
        .watch_events(pb::WatchEventsRequest {
            from_seq: Some(0),
            experiment_id: String::new(),
        })
        .await
        .answer();
    let mut seqs = Vec::new();
    for _ in 0..7 {
        seqs.push(all.message().await.unwrap().unwrap().seq);
    }
    assert_eq!(
        seqs,
        (1..=7).collect::<Vec<_>>(),
        "every event from the start, gap-free"
    );

    let mut filtered = w
        .watch_events(pb::WatchEventsRequest {
            from_seq: Some(1),
            experiment_id: exp.clone(),
        })
        .await
        .answer();
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let ev = filtered.message().await.unwrap().unwrap();
        kinds.push(match ev.payload.unwrap() {
            pb::event::Payload::ExperimentCreated(e) => format!("exp {}", e.experiment_id),
            pb::event::Payload::RunCreated(r) => format!("run {}", r.run_id == in_exp),
            pb::event::Payload::MetricsLogged(m) => format!("metrics {}", m.run_id == in_exp),
            pb::event::Payload::ParamLogged(p) => format!("param {}", p.run_id == in_exp),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        kinds,
        vec![
            format!("exp {exp}"),
            "run true".into(),
            "metrics true".into(),
            "param true".into()
        ]
    );
    server.stop().await;
}

/// LogMetricStream commits each message as it arrives and a bad message stops the call with what was committed.
#[tokio::test]
async fn log_metric_stream_commits_each_message_as_it_arrives() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = WatchServiceClient::new(server.channel().await);
    let (a, b) = (
        new_run(&mut c, "0", None).await,
        new_run(&mut c, "0", None).await,
    );
    let mut watcher = watch(&mut w, Scope::ExperimentId("0".into()), &[], None).await;
    watcher.message().await.unwrap().unwrap();

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut ingest = c.clone();
    let call = tokio::spawn(async move {
        ingest
            .log_metric_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let msg = |run: &str, from: i64| pb::LogMetricStreamRequest {
        run_id: run.into(),
        metrics: (from..from + 100)
            .map(|s| pb::Metric {
                key: "loss".into(),
                value: 0.5,
                timestamp: s,
                step: s,
            })
            .collect(),
    };
    tx.send(msg(&a, 0)).await.unwrap();
    // Visible to watchers while the call is still open.
    let (_, got) = read_points(&mut watcher, 100).await;
    assert!(got.iter().all(|p| p.run_id == a));
    assert!(!call.is_finished());
    tx.send(msg(&b, 100)).await.unwrap();
    tx.send(msg(&a, 200)).await.unwrap();
    drop(tx);
    let done = call.await.unwrap().unwrap().into_inner();
    assert_eq!((done.points_committed, done.messages_committed), (300, 3));
    let history = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: a.clone(),
            metric_key: "loss".into(),
            ..Default::default()
        })
        .await
        .answer()
        .metrics;
    assert_eq!(history.len(), 200);

    // A bad point ends the call; what came before it stays committed and is reported.
    let mut bad = msg(&b, 1000);
    bad.metrics[17].timestamp = -1;
    let messages = vec![msg(&b, 500), msg(&b, 600), bad, msg(&b, 2000)];
    let err = c
        .log_metric_stream(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("message 2:"), "{}", err.message());
    assert!(
        err.message().contains("metrics[17].timestamp"),
        "{}",
        err.message()
    );
    let committed: u64 = err
        .metadata()
        .get("arbor-points-committed")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let history = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: b.clone(),
            metric_key: "loss".into(),
            ..Default::default()
        })
        .await
        .answer()
        .metrics;
    let steps: BTreeSet<i64> = history.iter().map(|m| m.step).collect();
    assert!(
        (500..700).all(|s| steps.contains(&s)),
        "messages before the bad one are committed"
    );
    assert!(
        !(1000..1100).any(|s| steps.contains(&s)),
        "the bad message commits nothing"
    );
    assert_eq!(
        history.len() as u64,
        100 + committed,
        "the reported count matches what is stored"
    );
    server.stop().await;
}

/// Reads SSE frames (`id`, `event`, `data`) until one of kind `event` arrives.
async fn next_sse<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    event: &str,
) -> (u64, serde_json::Value) {
    let (mut id, mut kind, mut data) = (0, String::new(), String::new());
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse().unwrap();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = v.trim().to_string();
        } else if line.is_empty() && !kind.is_empty() {
            if kind == event {
                return (id, serde_json::from_str(&data).unwrap());
            }
            kind.clear();
        }
    }
    panic!("stream ended before a {event} event");
}

async fn sse(
    addr: std::net::SocketAddr,
    query: &str,
    last_event_id: Option<u64>,
) -> tokio::io::Lines<BufReader<tokio::net::TcpStream>> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET /api/arbor/v1/stream?{query} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(s).lines();
    let status = lines.next_line().await.unwrap().unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    lines
}

/// The SSE stream carries points with seq ids, NaN as text, key filters, and resumes with Last-Event-ID.
#[tokio::test]
async fn server_sent_events_stream_and_resume_with_last_event_id() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let run = new_run(&mut c, "0", None).await;
    let mut events = sse(server.addr, &format!("run_id={run}&keys=loss"), None).await;
    next_sse(&mut events, "position").await;
    c.log_batch(pb::LogBatchRequest {
        run_id: run.clone(),
        metrics: vec![
            pb::Metric {
                key: "loss".into(),
                value: f64::NAN,
                timestamp: 1,
                step: 1,
            },
            pb::Metric {
                key: "acc".into(),
                value: 1.0,
                timestamp: 1,
                step: 1,
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let (id, data) = next_sse(&mut events, "metrics").await;
    assert_eq!(data["points"][0]["value"], "NaN");
    assert_eq!(data["points"][0]["key"], "loss");
    assert_eq!(
        data["points"].as_array().unwrap().len(),
        1,
        "acc filtered out"
    );
    assert_eq!(data["seq"], id);
    drop(events);

    log(&mut c, &run, "loss", 2, 4).await;
    let mut resumed = sse(server.addr, &format!("run_id={run}"), Some(id)).await;
    next_sse(&mut resumed, "position").await;
    let (_, data) = next_sse(&mut resumed, "metrics").await;
    let steps: Vec<i64> = data["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, vec![2, 3], "resumed after the last event seen");

    // Bad requests get MLflow-style JSON errors.
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"GET /api/arbor/v1/stream HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut body = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut body)
        .await
        .unwrap();
    assert!(body.starts_with("HTTP/1.1 400"), "{body}");
    assert!(body.contains("INVALID_PARAMETER_VALUE"), "{body}");
    server.stop().await;
}

/// An SSE stream ends on shutdown with an end event naming the resume point.
#[tokio::test]
async fn server_sent_events_end_with_the_resume_point_on_shutdown() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let run = new_run(&mut c, "0", None).await;
    let mut events = sse(server.addr, &format!("run_id={run}"), None).await;
    next_sse(&mut events, "position").await;
    log(&mut c, &run, "loss", 0, 3).await;
    let (last, _) = next_sse(&mut events, "metrics").await;
    server.stop().await;
    let (_, end) = next_sse(&mut events, "end").await;
    assert_eq!(end["reason"], "shutdown");
    assert_eq!(end["resume_from_seq"], last + 1);
}

/// With `runs=true` the SSE stream also says when a run in scope is created, updated
/// or moved, and says nothing of runs outside it.
#[tokio::test]
async fn server_sent_events_carry_run_changes_in_scope() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let exp = common::create_experiment(&mut c, "live").await;
    let other = common::create_experiment(&mut c, "elsewhere").await;
    let mut events = sse(server.addr, &format!("experiment_id={exp}&runs=true"), None).await;
    next_sse(&mut events, "position").await;
    new_run(&mut c, &other, None).await;
    let root = new_run(&mut c, &exp, None).await;
    let (root_seq, created) = next_sse(&mut events, "run").await;
    assert_eq!(
        created["run_id"],
        root.as_str(),
        "the run in another experiment is not sent"
    );
    assert_eq!(created["change"], "created");
    assert_eq!(created["status"], "RUNNING");
    assert_eq!(created["parent_run_id"], "");
    assert_eq!(created["seq"], root_seq);
    let child = new_run(&mut c, &exp, Some(&root)).await;
    let (_, created) = next_sse(&mut events, "run").await;
    assert_eq!(created["run_id"], child.as_str());
    assert_eq!(created["parent_run_id"], root.as_str());
    log(&mut c, &child, "loss", 0, 2).await;
    let (_, points) = next_sse(&mut events, "metrics").await;
    assert_eq!(points["points"][0]["run_id"], child.as_str());
    c.update_run(pb::UpdateRunRequest {
        run_id: child.clone(),
        status: Some(pb::RunStatus::Finished as i32),
        end_time: Some(5_000),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, updated) = next_sse(&mut events, "run").await;
    assert_eq!(updated["change"], "updated");
    assert_eq!(updated["status"], "FINISHED");
    assert_eq!(updated["end_time"], 5_000);

    // Without runs=true, no run events: the next event seen is the metrics one.
    let mut plain = sse(
        server.addr,
        &format!("experiment_id={exp}&from_seq={root_seq}"),
        None,
    )
    .await;
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let line = plain.next_line().await.unwrap().unwrap();
        if let Some(kind) = line.strip_prefix("event:") {
            kinds.push(kind.trim().to_string());
        }
    }
    assert_eq!(kinds, ["position", "metrics"]);
    server.stop().await;
}

/// A metric's sampled history is "as of" a sequence number: read while points are
/// being written, and continued by a stream from that number plus one, it gives every
/// point exactly once.
#[tokio::test]
async fn history_as_of_a_sequence_number_continues_into_the_stream_exactly() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let run = new_run(&mut c, "0", None).await;
    const BATCHES: i64 = 200;
    const PER_BATCH: i64 = 50;
    let mut writer = Some({
        let mut c = server.client().await;
        let run = run.clone();
        tokio::spawn(async move {
            for b in 0..BATCHES {
                log(&mut c, &run, "loss", b * PER_BATCH, (b + 1) * PER_BATCH).await;
            }
        })
    });
    let all: BTreeSet<i64> = (0..BATCHES * PER_BATCH).collect();
    // Three readers: at the start, while writing, and (after the writer ends) at the end.
    for round in 0..3 {
        if round == 2 {
            writer.take().expect("the writer").await.expect("writer");
        }
        let (status, answer) = common::rest(
            server.addr,
            "GET",
            &format!(
                "/api/arbor/v1/metrics/sampled?run_id={run}&metric_key=loss&max_points=100000"
            ),
            None,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let seq = answer["seq"].as_u64().unwrap();
        let mut seen: Vec<i64> = answer["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["step"].as_i64().unwrap())
            .collect();
        let mut events = sse(
            server.addr,
            &format!("run_id={run}&keys=loss&from_seq={}", seq + 1),
            None,
        )
        .await;
        next_sse(&mut events, "position").await;
        while seen.len() < all.len() {
            let (_, m) = next_sse(&mut events, "metrics").await;
            seen.extend(
                m["points"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["step"].as_i64().unwrap()),
            );
        }
        seen.sort_unstable();
        let distinct: BTreeSet<i64> = seen.iter().copied().collect();
        assert_eq!(
            seen.len(),
            distinct.len(),
            "round {round}: a point came twice"
        );
        assert_eq!(distinct, all, "round {round}: every point");
    }
    server.stop().await;
}

/// A batch sent three times (a client retrying after a timeout), and points repeated
/// within a batch, reach a watcher once, exactly as the history holds them; a point
/// logged before the history's last one but new to it still arrives.
#[tokio::test]
async fn repeated_points_reach_watchers_once_as_the_history_holds_them() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = WatchServiceClient::new(server.channel().await);
    let run = new_run(&mut c, "0", None).await;
    let mut stream = watch(&mut w, Scope::RunId(run.clone()), &[], Some(1)).await;
    let point = |step: i64, value: f64| pb::Metric {
        key: "loss".into(),
        value,
        timestamp: 1000 + step,
        step,
    };
    let batch = pb::LogBatchRequest {
        run_id: run.clone(),
        metrics: (0..100).map(|s| point(s, s as f64)).collect(),
        ..Default::default()
    };
    for _ in 0..3 {
        c.log_batch(batch.clone()).await.unwrap();
    }
    // Repeats inside one batch, one of them of a stored point; and a new point that
    // sorts before the history's last one (a late, out-of-order write).
    c.log_batch(pb::LogBatchRequest {
        run_id: run.clone(),
        metrics: vec![
            point(100, 1.0),
            point(100, 1.0),
            point(5, 5.0),
            point(5, 0.5),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    // A marker the watcher reads last: everything before it has been delivered.
    log(&mut c, &run, "marker", 0, 1).await;
    let mut got: Vec<(i64, f64)> = Vec::new();
    loop {
        let msg = stream.message().await.unwrap().expect("open stream");
        let points = flatten(&msg);
        if points.iter().any(|p| p.key == "marker") {
            break;
        }
        got.extend(points.iter().map(|p| (p.step, p.value)));
    }
    let history = c
        .get_metric_history(pb::GetMetricHistoryRequest {
            run_id: run.clone(),
            metric_key: "loss".into(),
            ..Default::default()
        })
        .await
        .answer()
        .metrics;
    assert_eq!(history.len(), 102, "100 points, (100, 1.0) and (5, 0.5)");
    let mut delivered = got.clone();
    delivered.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut held: Vec<(i64, f64)> = history.iter().map(|m| (m.step, m.value)).collect();
    held.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    assert_eq!(delivered, held, "the watcher got what the history holds");
    server.stop_and_check_rebuild().await;
}

/// A `from_seq` beyond the log's head + 1 (a number from another store) is refused with
/// OUT_OF_RANGE naming the head, on WatchMetrics, WatchEvents and the SSE stream (400,
/// also through Last-Event-ID); head + 1 itself is where a caught-up client resumes.
#[tokio::test]
async fn a_from_seq_beyond_the_head_is_out_of_range() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut w = WatchServiceClient::new(server.channel().await);
    let run = new_run(&mut c, "0", None).await;
    // A stream from now opens with its position: the log's head.
    let last = watch(&mut w, Scope::RunId(run.clone()), &[], None)
        .await
        .message()
        .await
        .unwrap()
        .expect("a position")
        .seq;
    assert!(last > 0);
    for beyond in [last + 2, u64::MAX] {
        let err = w
            .watch_metrics(pb::WatchMetricsRequest {
                scope: Some(Scope::RunId(run.clone())),
                keys: vec![],
                from_seq: Some(beyond),
            })
            .await
            .expect_err("beyond the head");
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        assert!(
            err.message().contains(&format!("last event is {last}")),
            "{}",
            err.message()
        );
        let err = w
            .watch_events(pb::WatchEventsRequest {
                from_seq: Some(beyond),
                ..Default::default()
            })
            .await
            .expect_err("beyond the head");
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        let (status, body) = common::rest(
            server.addr,
            "GET",
            &format!("/api/arbor/v1/stream?run_id={run}&from_seq={beyond}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
    }
    // Last-Event-ID names the last event seen: the head itself is fine, one past is not.
    let mut events = sse(server.addr, &format!("run_id={run}"), Some(last)).await;
    let (position, _) = next_sse(&mut events, "position").await;
    assert_eq!(position, last);
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/arbor/v1/stream?run_id={run} HTTP/1.1\r\nHost: localhost\r\nLast-Event-ID: {}\r\nConnection: close\r\n\r\n",
            last + 1
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let status = BufReader::new(s)
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap();
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    // head + 1: the stream opens and delivers the next point.
    let mut stream = watch(&mut w, Scope::RunId(run.clone()), &[], Some(last + 1)).await;
    log(&mut c, &run, "loss", 0, 1).await;
    let (_, points) = read_points(&mut stream, 1).await;
    assert_eq!(steps(&points), [0]);
    server.stop().await;
}
