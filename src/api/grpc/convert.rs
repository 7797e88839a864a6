//! Conversions between `arbor.v1` messages and domain types, and the one mapping from
//! `domain::Error` to `tonic::Status`.

use tonic::Status;

use crate::domain::{
    Error, KeyValue, MAX_ERROR_MESSAGE_CHARS, MetricPoint, RunStatus, ViewType, bounded,
    lifecycle_stage,
};
use crate::pb;
use crate::projection::{ExperimentRecord, RunRecord};

/// The one mapping from the domain's errors to gRPC statuses, so a handler's `?` turns
/// any `domain::Error` into the right code. Internal failures are logged here and
/// answered without their details.
impl From<Error> for Status {
    fn from(e: Error) -> Status {
        status(e)
    }
}

fn status(e: Error) -> Status {
    let b = |m: String| bounded(&m, MAX_ERROR_MESSAGE_CHARS);
    match e {
        Error::NotFound(m) => Status::not_found(b(m)),
        Error::InvalidArgument(m) => Status::invalid_argument(b(m)),
        Error::BadRequest(m) => Status::invalid_argument(b(m)),
        Error::EndpointNotFound(m) => Status::unimplemented(b(m)),
        Error::AlreadyExists(m) => Status::already_exists(b(m)),
        Error::FailedPrecondition(m) => Status::failed_precondition(b(m)),
        Error::Unavailable(m) => Status::unavailable(b(m)),
        Error::Unauthenticated(m) => Status::unauthenticated(b(m)),
        Error::PermissionDenied(m) => Status::permission_denied(b(m)),
        Error::Closed => Status::unavailable("the server is shutting down"),
        Error::OutOfRange(m) => Status::out_of_range(b(m)),
        Error::RequestTimeout(m) => Status::deadline_exceeded(b(m)),
        Error::Internal(m) => {
            tracing::error!(error = %m, "internal error");
            Status::internal("internal error; see the server log")
        }
        Error::Storage(e) => {
            tracing::error!(error = %e, "storage error");
            Status::internal("storage failure; see the server log")
        }
        Error::Corrupt(m) => {
            tracing::error!(error = %m, "corrupt data");
            Status::internal("the data directory is damaged; see the server log")
        }
    }
}

pub(crate) fn experiment(e: ExperimentRecord) -> pb::Experiment {
    pb::Experiment {
        experiment_id: e.id.to_string(),
        name: e.name,
        artifact_location: e.artifact_location,
        lifecycle_stage: lifecycle_stage(e.deleted).into(),
        last_update_time: e.last_update_time,
        creation_time: e.creation_time,
        tags: e
            .tags
            .into_iter()
            .map(|(key, value)| pb::ExperimentTag { key, value })
            .collect(),
    }
}

pub(crate) fn metric(m: MetricPoint) -> pb::Metric {
    pb::Metric {
        key: m.key,
        value: m.value,
        timestamp: m.timestamp,
        step: m.step,
    }
}

pub(crate) fn run_info(r: &RunRecord) -> pb::RunInfo {
    pb::RunInfo {
        run_id: r.run_id.clone(),
        run_name: r.run_name.clone(),
        experiment_id: r.experiment_id.to_string(),
        user_id: r.user_id.clone(),
        status: r.status,
        start_time: r.start_time,
        end_time: r.end_time,
        artifact_uri: r.artifact_uri.clone(),
        lifecycle_stage: lifecycle_stage(r.deleted).into(),
        parent_run_id: r.parent_run_id.clone(),
        root_run_id: r.root_run_id.clone(),
        depth: r.depth,
    }
}

pub(crate) fn run(r: RunRecord) -> pb::Run {
    let info = run_info(&r);
    let metrics = r.latest_metrics().map(metric).collect();
    pb::Run {
        info: Some(info),
        data: Some(pb::RunData {
            metrics,
            params: r
                .params
                .into_iter()
                .map(|(key, value)| pb::Param { key, value })
                .collect(),
            tags: r
                .tags
                .into_iter()
                .map(|(key, value)| pb::RunTag { key, value })
                .collect(),
        }),
    }
}

pub(crate) fn view_type(n: i32, field: &str) -> Result<ViewType, Status> {
    match pb::ViewType::try_from(n) {
        Ok(pb::ViewType::Unspecified | pb::ViewType::ActiveOnly) => Ok(ViewType::ActiveOnly),
        Ok(pb::ViewType::DeletedOnly) => Ok(ViewType::DeletedOnly),
        Ok(pb::ViewType::All) => Ok(ViewType::All),
        Err(_) => Err(Status::invalid_argument(format!(
            "Invalid value {n} for parameter '{field}': expected ACTIVE_ONLY (1), DELETED_ONLY (2) or ALL (3)"
        ))),
    }
}

pub(crate) fn run_status(n: i32) -> Result<RunStatus, Status> {
    RunStatus::from_i32(n).ok_or_else(|| {
        Status::invalid_argument(format!(
            "Invalid value {n} for parameter 'status': expected RUNNING (1), SCHEDULED (2), FINISHED (3), FAILED (4) or KILLED (5)"
        ))
    })
}

pub(crate) fn metric_point(m: pb::Metric) -> MetricPoint {
    MetricPoint {
        key: m.key,
        value: m.value,
        timestamp: m.timestamp,
        step: m.step,
    }
}

pub(crate) fn param(p: pb::Param) -> KeyValue {
    KeyValue {
        key: p.key,
        value: p.value,
    }
}

pub(crate) fn tag(t: pb::RunTag) -> KeyValue {
    KeyValue {
        key: t.key,
        value: t.value,
    }
}
