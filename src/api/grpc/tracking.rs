//! `arbor.v1.TrackingService`: experiments, runs, params, tags and metrics.

use tonic::{Request, Response, Status};

use super::Guarded;
use super::convert;
use crate::auth::Need;
use crate::domain::commands::{
    CreateExperiment, CreateRun, DeleteExperiment, DeleteExperimentTag, DeleteRun, DeleteTag,
    LogBatch, RenameExperiment, RestoreExperiment, RestoreRun, SetExperimentTag, UpdateRun,
};
use crate::domain::{KeyValue, MetricPoint};
use crate::pb::{self, tracking_service_server::TrackingService};
use crate::store::Store;

/// `GetMetricHistory`'s page when the request names none: MLflow's client page, and
/// about 1 MB of response, well under gRPC's common 4 MiB message limit.
const HISTORY_PAGE_DEFAULT: i64 = 25_000;

/// Messages of one `LogMetricStream` call committing at once. Keeps the committer's
/// queue fed (so consecutive messages share flushes) while bounding what one call holds.
const STREAM_PIPELINE_DEPTH: usize = 8;

pub struct TrackingApi {
    store: Guarded,
}

impl TrackingApi {
    pub fn new(store: Store) -> Self {
        Self {
            store: Guarded::new(store),
        }
    }
}

type PendingMessage = (
    usize,
    u64,
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), crate::domain::Error>> + Send>>,
);

/// Waits for one streamed message to commit and counts it, or records the first failure.
async fn settle(
    pending: Option<PendingMessage>,
    committed: &mut pb::LogMetricStreamResponse,
    failure: &mut Option<(usize, Status)>,
) {
    let Some((index, points, outcome)) = pending else {
        return;
    };
    match outcome.await {
        Ok(_) => {
            committed.points_committed += points;
            committed.messages_committed += 1;
        }
        Err(e) => {
            if failure.as_ref().is_none_or(|(i, _)| index < *i) {
                *failure = Some((index, Status::from(e)));
            }
        }
    }
}

fn ok<T>(t: T) -> Result<Response<T>, Status> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl TrackingService for TrackingApi {
    async fn create_experiment(
        &self,
        req: Request<pb::CreateExperimentRequest>,
    ) -> Result<Response<pb::CreateExperimentResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let tags = r
            .tags
            .into_iter()
            .map(|t| KeyValue::new(t.key, t.value))
            .collect();
        let experiment_id = store
            .any()
            .submit(CreateExperiment {
                name: r.name,
                artifact_location: r.artifact_location,
                tags,
            })
            .await?;
        ok(pb::CreateExperimentResponse { experiment_id })
    }

    async fn get_experiment(
        &self,
        req: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::GetExperimentResponse>, Status> {
        let store = self.store.of(&req)?;
        let experiment_id = req.into_inner().experiment_id;
        let e = store
            .on_experiment(&experiment_id, Need::Read)?
            .get_experiment(&experiment_id)?;
        ok(pb::GetExperimentResponse {
            experiment: Some(convert::experiment(e)),
        })
    }

    async fn get_experiment_by_name(
        &self,
        req: Request<pb::GetExperimentByNameRequest>,
    ) -> Result<Response<pb::GetExperimentByNameResponse>, Status> {
        let store = self.store.of(&req)?;
        let name = req.into_inner().experiment_name;
        let e = store
            .on_experiment_named(&name, Need::Read)?
            .get_experiment_by_name(&name)?;
        ok(pb::GetExperimentByNameResponse {
            experiment: Some(convert::experiment(e)),
        })
    }

    async fn search_experiments(
        &self,
        req: Request<pb::SearchExperimentsRequest>,
    ) -> Result<Response<pb::SearchExperimentsResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let view = convert::view_type(r.view_type, "view_type")?;
        let (experiments, next) =
            store.search_experiments(view, &r.filter, &r.order_by, r.max_results, &r.page_token)?;
        ok(pb::SearchExperimentsResponse {
            experiments: experiments.into_iter().map(convert::experiment).collect(),
            next_page_token: next.unwrap_or_default(),
        })
    }

    async fn update_experiment(
        &self,
        req: Request<pb::UpdateExperimentRequest>,
    ) -> Result<Response<pb::UpdateExperimentResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        store
            .on_experiment(&r.experiment_id, Need::Update)?
            .submit(RenameExperiment {
                experiment_id: r.experiment_id,
                new_name: r.new_name,
            })
            .await?;
        ok(pb::UpdateExperimentResponse {})
    }

    async fn delete_experiment(
        &self,
        req: Request<pb::DeleteExperimentRequest>,
    ) -> Result<Response<pb::DeleteExperimentResponse>, Status> {
        let store = self.store.of(&req)?;
        let experiment_id = req.into_inner().experiment_id;
        store
            .on_experiment(&experiment_id, Need::Delete)?
            .submit(DeleteExperiment { experiment_id })
            .await?;
        ok(pb::DeleteExperimentResponse {})
    }

    async fn restore_experiment(
        &self,
        req: Request<pb::RestoreExperimentRequest>,
    ) -> Result<Response<pb::RestoreExperimentResponse>, Status> {
        let store = self.store.of(&req)?;
        let experiment_id = req.into_inner().experiment_id;
        store
            .on_experiment(&experiment_id, Need::Delete)?
            .submit(RestoreExperiment { experiment_id })
            .await?;
        ok(pb::RestoreExperimentResponse {})
    }

    async fn set_experiment_tag(
        &self,
        req: Request<pb::SetExperimentTagRequest>,
    ) -> Result<Response<pb::SetExperimentTagResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        store
            .on_experiment(&r.experiment_id, Need::Update)?
            .submit(SetExperimentTag {
                experiment_id: r.experiment_id,
                key: r.key,
                value: r.value,
            })
            .await?;
        ok(pb::SetExperimentTagResponse {})
    }

    async fn delete_experiment_tag(
        &self,
        req: Request<pb::DeleteExperimentTagRequest>,
    ) -> Result<Response<pb::DeleteExperimentTagResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        store
            .on_experiment(&r.experiment_id, Need::Update)?
            .submit(DeleteExperimentTag {
                experiment_id: r.experiment_id,
                key: r.key,
            })
            .await?;
        ok(pb::DeleteExperimentTagResponse {})
    }

    async fn create_run(
        &self,
        req: Request<pb::CreateRunRequest>,
    ) -> Result<Response<pb::CreateRunResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let tags: Vec<KeyValue> = r.tags.into_iter().map(convert::tag).collect();
        let run = store
            .adopting(&tags)
            .and_then(|s| s.on_experiment(&r.experiment_id, Need::Update))?
            .submit(CreateRun {
                experiment_id: r.experiment_id,
                user_id: r.user_id,
                run_name: r.run_name,
                start_time: r.start_time,
                tags,
            })
            .await?;
        ok(pb::CreateRunResponse {
            run: Some(convert::run(run)),
        })
    }

    async fn get_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        let store = self.store.of(&req)?;
        let run_id = req.into_inner().run_id;
        let run = store.on_run(&run_id, Need::Read)?.get_run(&run_id)?;
        ok(pb::GetRunResponse {
            run: Some(convert::run(run)),
        })
    }

    async fn update_run(
        &self,
        req: Request<pb::UpdateRunRequest>,
    ) -> Result<Response<pb::UpdateRunResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let status_value = r.status.map(convert::run_status).transpose()?;
        let run = store
            .on_run(&r.run_id, Need::Update)?
            .submit(UpdateRun {
                run_id: r.run_id,
                status: status_value,
                end_time: r.end_time,
                run_name: r.run_name,
            })
            .await?;
        ok(pb::UpdateRunResponse {
            run_info: Some(convert::run_info(&run)),
        })
    }

    async fn delete_run(
        &self,
        req: Request<pb::DeleteRunRequest>,
    ) -> Result<Response<pb::DeleteRunResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        store
            .on_run(&r.run_id, Need::Delete)?
            .submit(DeleteRun {
                run_id: r.run_id,
                cascade: r.cascade,
            })
            .await?;
        ok(pb::DeleteRunResponse {})
    }

    async fn restore_run(
        &self,
        req: Request<pb::RestoreRunRequest>,
    ) -> Result<Response<pb::RestoreRunResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        store
            .on_run(&r.run_id, Need::Delete)?
            .submit(RestoreRun {
                run_id: r.run_id,
                cascade: r.cascade,
            })
            .await?;
        ok(pb::RestoreRunResponse {})
    }

    async fn search_runs(
        &self,
        req: Request<pb::SearchRunsRequest>,
    ) -> Result<Response<pb::SearchRunsResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let view = convert::view_type(r.run_view_type, "run_view_type")?;
        let (runs, next) = store
            .on_experiments(&r.experiment_ids, Need::Read)?
            .search_runs(
                &r.experiment_ids,
                view,
                &r.filter,
                &r.order_by,
                r.max_results.map(i64::from),
                &r.page_token,
            )?;
        ok(pb::SearchRunsResponse {
            runs: runs.into_iter().map(convert::run).collect(),
            next_page_token: next.unwrap_or_default(),
        })
    }

    async fn log_metric(
        &self,
        req: Request<pb::LogMetricRequest>,
    ) -> Result<Response<pb::LogMetricResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let point = MetricPoint {
            key: r.key,
            value: r.value,
            timestamp: r.timestamp,
            step: r.step,
        };
        store
            .on_run(&r.run_id, Need::Update)?
            .submit(LogBatch::metric(r.run_id, point, None))
            .await?;
        ok(pb::LogMetricResponse {})
    }

    async fn log_param(
        &self,
        req: Request<pb::LogParamRequest>,
    ) -> Result<Response<pb::LogParamResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        store
            .on_run(&r.run_id, Need::Update)?
            .submit(LogBatch::param(r.run_id, KeyValue::new(r.key, r.value)))
            .await?;
        ok(pb::LogParamResponse {})
    }

    async fn set_tag(
        &self,
        req: Request<pb::SetTagRequest>,
    ) -> Result<Response<pb::SetTagResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let tag = KeyValue::new(r.key, r.value);
        store
            .adopting([&tag])
            .and_then(|s| s.on_run(&r.run_id, Need::Update))?
            .submit(LogBatch::tag(r.run_id, tag))
            .await?;
        ok(pb::SetTagResponse {})
    }

    async fn delete_tag(
        &self,
        req: Request<pb::DeleteTagRequest>,
    ) -> Result<Response<pb::DeleteTagResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        store
            .on_run(&r.run_id, Need::Update)?
            .submit(DeleteTag {
                run_id: r.run_id,
                key: r.key,
            })
            .await?;
        ok(pb::DeleteTagResponse {})
    }

    async fn log_batch(
        &self,
        req: Request<pb::LogBatchRequest>,
    ) -> Result<Response<pb::LogBatchResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let tags: Vec<KeyValue> = r.tags.into_iter().map(convert::tag).collect();
        store
            .adopting(&tags)
            .and_then(|s| s.on_run(&r.run_id, Need::Update))?
            .submit(LogBatch {
                run_id: r.run_id,
                metrics: r.metrics.into_iter().map(convert::metric_point).collect(),
                params: r.params.into_iter().map(convert::param).collect(),
                tags,
                model_metrics: vec![],
                ..LogBatch::default()
            })
            .await?;
        ok(pb::LogBatchResponse {})
    }

    async fn log_metric_stream(
        &self,
        req: Request<tonic::Streaming<pb::LogMetricStreamRequest>>,
    ) -> Result<Response<pb::LogMetricStreamResponse>, Status> {
        let store = self.store.of(&req)?;
        let mut incoming = req.into_inner();
        let mut pending = std::collections::VecDeque::new();
        let mut committed = pb::LogMetricStreamResponse::default();
        let mut failure: Option<(usize, Status)> = None;
        let mut index = 0usize;
        loop {
            // Settle the oldest message once the pipeline is full.
            if pending.len() >= STREAM_PIPELINE_DEPTH {
                settle(pending.pop_front(), &mut committed, &mut failure).await;
            }
            if failure.is_some() {
                break;
            }
            let msg = match incoming.message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(e) => {
                    failure = Some((index, e));
                    break;
                }
            };
            let points = msg.metrics.len() as u64;
            let metrics = msg.metrics.into_iter().map(convert::metric_point).collect();
            let allowed = store.on_run(&msg.run_id, Need::Update);
            let queued = match allowed {
                Ok(s) => {
                    s.enqueue(LogBatch {
                        run_id: msg.run_id,
                        metrics,
                        ..LogBatch::default()
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match queued {
                Ok(outcome) => pending.push_back((index, points, Box::pin(outcome))),
                Err(e) => {
                    failure = Some((index, Status::from(e)));
                    break;
                }
            }
            index += 1;
        }
        while let Some(p) = pending.pop_front() {
            settle(Some(p), &mut committed, &mut failure).await;
        }
        match failure {
            None => ok(committed),
            Some((index, e)) => {
                let mut s = Status::new(
                    e.code(),
                    format!(
                        "message {index}: {}; {} points in {} messages before it were committed",
                        e.message(),
                        committed.points_committed,
                        committed.messages_committed
                    ),
                );
                if let Ok(v) = committed.points_committed.to_string().parse() {
                    s.metadata_mut().insert("arbor-points-committed", v);
                }
                Err(s)
            }
        }
    }

    async fn get_metric_history(
        &self,
        req: Request<pb::GetMetricHistoryRequest>,
    ) -> Result<Response<pb::GetMetricHistoryResponse>, Status> {
        let store = self.store.of(&req)?;
        let r = req.into_inner();
        let max = r.max_results.map_or(HISTORY_PAGE_DEFAULT, i64::from);
        let (points, next) = store.on_run(&r.run_id, Need::Read)?.metric_history(
            &r.run_id,
            &r.metric_key,
            Some(max),
            &r.page_token,
        )?;
        ok(pb::GetMetricHistoryResponse {
            metrics: points.into_iter().map(convert::metric).collect(),
            next_page_token: next.unwrap_or_default(),
        })
    }
}
