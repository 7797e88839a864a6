//! `arbor.v1.WatchService`: metric points and the change feed as server streams.

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::Guarded;
use crate::pb::{
    self, watch_metrics_request::Scope as WireScope, watch_service_server::WatchService,
};
use crate::store::Store;
use crate::stream::scope::{Scope, ScopeSpec};
use crate::stream::session::{self, SessionEnd, Start};

/// Messages buffered per watcher between its session and its connection. A watcher that
/// does not read fills this, then its session stops taking from the hub and later
/// catches up from the log: a slow client never holds more than this in memory.
const WATCH_BUFFER: usize = 16;

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub struct WatchApi {
    store: Guarded,
}

impl WatchApi {
    pub fn new(store: Store) -> Self {
        Self {
            store: Guarded::new(store),
        }
    }
}

/// The status a stream ends with when the session ends on the server's side.
fn end_status(end: SessionEnd) -> Status {
    match end {
        SessionEnd::Shutdown { next } => {
            let mut s = Status::unavailable(format!(
                "the server is shutting down; every event before {next} was delivered: resume with from_seq={next}"
            ));
            if let Ok(v) = next.to_string().parse() {
                s.metadata_mut().insert("arbor-resume-from-seq", v);
            }
            s
        }
        SessionEnd::Failed(e) => Status::from(e),
    }
}

fn spawn<T: Send + 'static>(
    store: Store,
    start: Start,
    first: impl FnOnce(u64) -> Option<T> + Send + 'static,
    select: impl FnMut(&pb::Event) -> Result<Option<T>, crate::domain::Error> + Send + 'static,
) -> Streamed<T> {
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    tokio::spawn(session::run(store, start, first, select, tx));
    Box::pin(ReceiverStream::new(rx).map(|item| item.map_err(end_status)))
}

#[tonic::async_trait]
impl WatchService for WatchApi {
    type WatchMetricsStream = Streamed<pb::WatchMetricsResponse>;
    type WatchEventsStream = Streamed<pb::Event>;

    async fn watch_metrics(
        &self,
        req: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        let access = self.store.of(&req)?;
        let (store, visibility) = access.watch();
        let r = req.into_inner();
        let spec = match r.scope {
            Some(WireScope::RunId(id)) => ScopeSpec::Run(id),
            Some(WireScope::SubtreeRunId(id)) => ScopeSpec::Subtree(id),
            Some(WireScope::ExperimentId(id)) => ScopeSpec::Experiment(id),
            None => {
                return Err(Status::invalid_argument(
                    "a scope is required: run_id, subtree_run_id or experiment_id",
                ));
            }
        };
        let start = session::start_at(store, r.from_seq)?;
        let mut scope = Scope::new(store.clone(), spec, r.keys, visibility)?;
        let position = |seq| {
            Some(pb::WatchMetricsResponse {
                seq,
                ..Default::default()
            })
        };
        Ok(Response::new(spawn(
            store.clone(),
            start,
            position,
            move |ev| scope.metrics(ev),
        )))
    }

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let access = self.store.of(&req)?;
        let (store, visibility) = access.watch();
        let r = req.into_inner();
        let spec = if r.experiment_id.is_empty() {
            ScopeSpec::Everything
        } else {
            ScopeSpec::Experiment(r.experiment_id)
        };
        let start = session::start_at(store, r.from_seq)?;
        let mut scope = Scope::new(store.clone(), spec, vec![], visibility)?;
        Ok(Response::new(spawn(
            store.clone(),
            start,
            |_| None,
            move |ev| scope.event(ev),
        )))
    }
}
