//! The writes: one type per command, with its fields. Each is decided in one place
//! (`impl Decide` in `log/decide/`), which says what the command answers
//! (`Command::Output`), and is submitted through `Store::submit`. Field meanings
//! follow MLflow's RPCs of the same names.

use super::{
    BatchOrigin, DatasetInput, KeyValue, MetricPoint, ModelMetric, ModelRef, RunStatus, access,
};

#[derive(Debug, Clone, Default)]
pub struct CreateExperiment {
    pub name: String,
    pub artifact_location: String,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default)]
pub struct RenameExperiment {
    pub experiment_id: String,
    pub new_name: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteExperiment {
    pub experiment_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreExperiment {
    pub experiment_id: String,
}

#[derive(Debug, Clone, Default)]
pub struct SetExperimentTag {
    pub experiment_id: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteExperimentTag {
    pub experiment_id: String,
    pub key: String,
}

#[derive(Debug, Clone, Default)]
pub struct CreateRun {
    pub experiment_id: String,
    pub user_id: String,
    pub run_name: String,
    pub start_time: Option<i64>,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default)]
pub struct UpdateRun {
    pub run_id: String,
    pub status: Option<RunStatus>,
    pub end_time: Option<i64>,
    pub run_name: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteRun {
    pub run_id: String,
    /// Also every run below it.
    pub cascade: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreRun {
    pub run_id: String,
    pub cascade: bool,
}

/// The parent's active child with this name, created if there is none.
#[derive(Debug, Clone, Default)]
pub struct GetOrCreateChildRun {
    pub parent_run_id: String,
    pub run_name: String,
    pub user_id: String,
    pub start_time: Option<i64>,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default)]
pub struct LogBatch {
    pub run_id: String,
    pub metrics: Vec<MetricPoint>,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
    pub origin: BatchOrigin,
    /// Points of `metrics` that were logged for a logged model too.
    pub model_metrics: Vec<ModelMetric>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteTag {
    pub run_id: String,
    pub key: String,
}

/// MLflow's `LogInputs`: datasets (with their input tags) and models a run used.
#[derive(Debug, Clone, Default)]
pub struct LogInputs {
    pub run_id: String,
    pub datasets: Vec<DatasetInput>,
    pub models: Vec<String>,
}

/// MLflow's `LogOutputs`: models a run produced.
#[derive(Debug, Clone, Default)]
pub struct LogOutputs {
    pub run_id: String,
    pub models: Vec<(String, i64)>,
}

/// MLflow's legacy `LogModel`: appends to the run's `mlflow.log-model.history` tag.
#[derive(Debug, Clone, Default)]
pub struct AppendModelHistory {
    pub run_id: String,
    pub model_json: String,
}

/// A file was stored (or removed) through the artifact proxy.
#[derive(Debug, Clone, Default)]
pub struct RecordArtifact {
    pub path: String,
    pub size: u64,
    pub deleted: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CreateLoggedModel {
    pub experiment_id: String,
    pub name: String,
    pub model_type: String,
    pub source_run_id: String,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default)]
pub struct FinalizeLoggedModel {
    pub model_id: String,
    pub status: i32,
    pub status_message: String,
}

#[derive(Debug, Clone, Default)]
pub struct SetLoggedModelTags {
    pub model_id: String,
    pub tags: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteLoggedModelTag {
    pub model_id: String,
    pub key: String,
}

#[derive(Debug, Clone, Default)]
pub struct LogLoggedModelParams {
    pub model_id: String,
    pub params: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteLoggedModel {
    pub model_id: String,
}

/// `password_hash`: an Argon2id PHC string, made before the command is sent (the
/// committer does no slow work).
#[derive(Debug, Clone, Default)]
pub struct CreateUser {
    pub username: String,
    pub password_hash: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ChangePassword {
    pub username: String,
    pub password_hash: String,
}

#[derive(Debug, Clone, Default)]
pub struct SetAdmin {
    pub username: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteUser {
    pub username: String,
}

#[derive(Debug, Clone, Default)]
pub struct IssueToken {
    pub token_id: String,
    pub username: String,
    pub secret_hash: String,
    pub expires_at: i64,
    pub description: String,
}

#[derive(Debug, Clone, Default)]
pub struct RevokeToken {
    pub token_id: String,
}

#[derive(Debug, Clone)]
pub struct SetExperimentPermission {
    pub experiment_id: String,
    pub username: String,
    pub permission: access::Permission,
    pub mode: access::GrantMode,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteExperimentPermission {
    pub experiment_id: String,
    pub username: String,
}

/// An import's experiment: the one of that name, or a new one with these times.
#[derive(Debug, Clone, Default)]
pub struct ImportExperiment {
    pub name: String,
    pub tags: Vec<KeyValue>,
    pub creation_time: i64,
    pub last_update_time: i64,
}

/// An import's run, with its original id and start time; an existing run of that id
/// is left as it is (the importer then sends what differs through the usual writes).
#[derive(Debug, Clone, Default)]
pub struct ImportRun {
    pub run_id: String,
    pub experiment_id: String,
    pub user_id: String,
    pub run_name: String,
    pub start_time: Option<i64>,
    pub tags: Vec<KeyValue>,
}

/// An import's logged model, with its original id, and the points its runs
/// logged for it (run id, point): recorded for the model only, as the runs'
/// histories come over with the runs.
#[derive(Debug, Clone, Default)]
pub struct ImportLoggedModel {
    pub model_id: String,
    pub experiment_id: String,
    pub name: String,
    pub model_type: String,
    pub source_run_id: String,
    pub params: Vec<KeyValue>,
    pub tags: Vec<KeyValue>,
    pub metrics: Vec<(String, ModelMetric)>,
}

impl LogBatch {
    /// MLflow's `LogMetric`: one point, for the logged model `model` too when given.
    pub fn metric(run_id: String, point: MetricPoint, model: Option<ModelRef>) -> LogBatch {
        let model_metrics = model
            .map(|model| ModelMetric {
                model,
                point: point.clone(),
            })
            .into_iter()
            .collect();
        LogBatch {
            run_id,
            metrics: vec![point],
            origin: BatchOrigin::Single,
            model_metrics,
            ..LogBatch::default()
        }
    }

    /// MLflow's `LogParam`.
    pub fn param(run_id: String, param: KeyValue) -> LogBatch {
        LogBatch {
            run_id,
            params: vec![param],
            origin: BatchOrigin::Single,
            ..LogBatch::default()
        }
    }

    /// MLflow's `SetTag`.
    pub fn tag(run_id: String, tag: KeyValue) -> LogBatch {
        LogBatch {
            run_id,
            tags: vec![tag],
            origin: BatchOrigin::Single,
            ..LogBatch::default()
        }
    }
}
