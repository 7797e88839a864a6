//! `GET /api/arbor/v1/stream`: `WatchMetrics` as server-sent events, for browsers.
//!
//! Scope: `run_id`, `root_run_id` (that run's subtree; `subtree_run_id` is an alias) or
//! `experiment_id`; `keys=loss,acc` to filter; `from_seq` to start at an event. Each
//! event's `id` is the sequence number, so `EventSource` resumes by itself: a
//! `Last-Event-ID: N` header starts the stream at N + 1. Events:
//! - `position`: sent first, `id` = the last event before the stream starts;
//! - `metrics`: `{"seq": N, "points": [{"run_id","key","value","step","timestamp","seq"}]}`,
//!   with NaN and ±Infinity as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! - `run` (with `runs=true`): a run in scope changed, `{"seq", "run_id", "change"}` where
//!   `change` is `created` (with `experiment_id`, `parent_run_id`, `run_name`, `user_id`,
//!   `start_time`, `status`), `updated` (with whichever of `status`, `end_time`,
//!   `run_name` changed), `deleted`, `restored` or `moved` (with the new `parent_run_id`);
//! - `end`: `{"reason": "shutdown", "resume_from_seq": N}` before the server closes it.

use std::convert::Infallible;

use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

use crate::api::Authorized;
use crate::api::mlflow::error_response;
use crate::api::mlflow::response::TrueDouble;
use crate::domain::Error;
use crate::pb;
use crate::stream::scope::{Scope, ScopeSpec, Watched};
use crate::stream::session::{self, SessionEnd};

/// Messages buffered per browser; see `WATCH_BUFFER` in the gRPC watch service.
const SSE_BUFFER: usize = 16;

#[derive(serde::Deserialize)]
pub(super) struct StreamParams {
    run_id: Option<String>,
    root_run_id: Option<String>,
    subtree_run_id: Option<String>,
    experiment_id: Option<String>,
    keys: Option<String>,
    from_seq: Option<u64>,
    runs: Option<String>,
}

/// A `run` event: what changed about a run, enough for a page to update its tree.
fn run_event(ev: &pb::Event) -> Option<Event> {
    use pb::event::Payload;
    let status = |n: i32| crate::domain::RunStatus::from_i32(n).map(|s| s.name());
    let mut data = match ev.payload.as_ref()? {
        Payload::RunCreated(e) => json!({
            "run_id": e.run_id, "change": "created", "experiment_id": e.experiment_id,
            "parent_run_id": e.parent_run_id, "run_name": e.run_name, "user_id": e.user_id,
            "start_time": e.start_time, "status": "RUNNING",
        }),
        Payload::RunUpdated(e) => {
            let mut data = json!({ "run_id": e.run_id, "change": "updated" });
            if let Some(s) = e.status.and_then(status) {
                data["status"] = json!(s);
            }
            if let Some(t) = e.end_time {
                data["end_time"] = json!(t);
            }
            if let Some(name) = &e.run_name {
                data["run_name"] = json!(name);
            }
            data
        }
        Payload::RunDeleted(e) => json!({ "run_id": e.run_id, "change": "deleted" }),
        Payload::RunRestored(e) => json!({ "run_id": e.run_id, "change": "restored" }),
        Payload::RunReparented(e) => json!({
            "run_id": e.run_id, "change": "moved", "parent_run_id": e.new_parent_run_id,
        }),
        _ => return None,
    };
    data["seq"] = json!(ev.seq);
    Some(
        Event::default()
            .id(ev.seq.to_string())
            .event("run")
            .data(data.to_string()),
    )
}

fn metrics_event(m: &pb::WatchMetricsResponse) -> Event {
    let mut points = Vec::new();
    for s in &m.series {
        for ((value, step), timestamp) in s.values.iter().zip(&s.steps).zip(&s.timestamps) {
            points.push(json!({
                "run_id": m.run_id, "key": s.key, "value": TrueDouble(*value),
                "step": step, "timestamp": timestamp, "seq": m.seq,
            }));
        }
    }
    let kind = if points.is_empty() {
        "position"
    } else {
        "metrics"
    };
    Event::default()
        .id(m.seq.to_string())
        .event(kind)
        .data(json!({ "seq": m.seq, "points": points }).to_string())
}

pub(super) async fn stream(
    Authorized(access): Authorized,
    headers: HeaderMap,
    Query(q): Query<StreamParams>,
) -> Response {
    let spec = match (
        q.run_id,
        q.root_run_id.or(q.subtree_run_id),
        q.experiment_id,
    ) {
        (Some(r), None, None) => ScopeSpec::Run(r),
        (None, Some(r), None) => ScopeSpec::Subtree(r),
        (None, None, Some(e)) => ScopeSpec::Experiment(e),
        _ => {
            return error_response(Error::invalid(
                "give exactly one of run_id, root_run_id (or subtree_run_id) and experiment_id",
            ));
        }
    };
    let keys: Vec<String> = q
        .keys
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect();
    let last_event_id = match headers
        .get("last-event-id")
        .map(|v| v.to_str().map(|s| s.trim().parse::<u64>()))
    {
        None => None,
        Some(Ok(Ok(n))) => Some(n),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "Last-Event-ID must be a sequence number",
            )
                .into_response();
        }
    };
    let from_seq = match last_event_id {
        Some(last) => Some(last.saturating_add(1)),
        None => q.from_seq,
    };
    let (store, visibility) = access.watch();
    let store = store.clone();
    let start = match session::start_at(&store, from_seq) {
        Ok(start) => start,
        Err(e) => return error_response(e),
    };
    let mut scope = match Scope::new(store.clone(), spec, keys, visibility) {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    let runs = match q.runs.as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => return error_response(Error::invalid("runs must be true or false")),
    };
    let (tx, rx) = mpsc::channel(SSE_BUFFER);
    tokio::spawn(session::run(
        store,
        start,
        |seq| {
            Some(Watched::Metrics(pb::WatchMetricsResponse {
                seq,
                ..Default::default()
            }))
        },
        move |ev| scope.watched(ev, runs),
        tx,
    ));
    let events = ReceiverStream::new(rx).filter_map(|item| {
        Some(Ok::<_, Infallible>(match item {
            Ok(Watched::Metrics(m)) => metrics_event(&m),
            Ok(Watched::Run(ev)) => run_event(&ev)?,
            Err(SessionEnd::Shutdown { next }) => Event::default()
                .event("end")
                .data(json!({ "reason": "shutdown", "resume_from_seq": next }).to_string()),
            Err(SessionEnd::Failed(e)) => Event::default()
                .event("error")
                .data(json!({ "message": e.to_string() }).to_string()),
        }))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
