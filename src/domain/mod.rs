//! The tracking domain: what experiments, runs, metrics, params and tags are, the
//! commands that change them, the errors a caller can get, and MLflow's validation
//! rules. Nothing here knows about gRPC, HTTP or sled; the API layers convert their
//! wire types into these and the store speaks only these.

pub mod access;
pub mod commands;
mod error;
mod names;
pub mod validation;

pub use error::{Error, MAX_ERROR_MESSAGE_CHARS, bounded};
pub(crate) use names::random_run_name;

/// Tag that carries a run's name; kept equal to `run_name`.
pub const TAG_RUN_NAME: &str = "mlflow.runName";
/// Tag that makes a run the child of another.
pub const TAG_PARENT_RUN_ID: &str = "mlflow.parentRunId";
/// Tag the server keeps on every run: the top of its tree (a root names itself).
pub const TAG_ROOT_RUN_ID: &str = "mlflow.rootRunId";
/// Tag the MLflow client sets to the user's name.
pub const TAG_USER: &str = "mlflow.user";
/// The experiment every new store has, and where runs go when none is named.
pub const DEFAULT_EXPERIMENT_ID: &str = "0";
pub const DEFAULT_EXPERIMENT_NAME: &str = "Default";

/// A run's state, numbered as in MLflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running = 1,
    Scheduled = 2,
    Finished = 3,
    Failed = 4,
    Killed = 5,
}

impl RunStatus {
    pub fn from_i32(n: i32) -> Option<Self> {
        match n {
            1 => Some(Self::Running),
            2 => Some(Self::Scheduled),
            3 => Some(Self::Finished),
            4 => Some(Self::Failed),
            5 => Some(Self::Killed),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Scheduled => "SCHEDULED",
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
            Self::Killed => "KILLED",
        }
    }
}

/// A logged model's upload state, numbered as in MLflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedModelStatus {
    Unspecified = 0,
    Pending = 1,
    Ready = 2,
    UploadFailed = 3,
}

impl LoggedModelStatus {
    pub const ALL: [Self; 4] = [
        Self::Unspecified,
        Self::Pending,
        Self::Ready,
        Self::UploadFailed,
    ];

    /// The status numbered `n`; unknown numbers read as unspecified.
    pub fn from_i32(n: i32) -> Self {
        Self::ALL
            .into_iter()
            .find(|s| *s as i32 == n)
            .unwrap_or(Self::Unspecified)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "LOGGED_MODEL_STATUS_UNSPECIFIED",
            Self::Pending => "LOGGED_MODEL_PENDING",
            Self::Ready => "LOGGED_MODEL_READY",
            Self::UploadFailed => "LOGGED_MODEL_UPLOAD_FAILED",
        }
    }
}

/// A metric value as MLflow's stores hold it: ±infinity becomes ±`f64::MAX`
/// (1.7976931348623157e308), which its API then returns and its filters and orderings
/// compare. Arbor keeps the true value in the log and on gRPC, and uses this on the
/// MLflow REST API and in search, so both APIs answer as their users expect.
pub fn mlflow_stored(value: f64) -> f64 {
    if value.is_infinite() {
        f64::MAX.copysign(value)
    } else {
        value
    }
}

/// MLflow's name for a lifecycle stage.
pub fn lifecycle_stage(deleted: bool) -> &'static str {
    if deleted { "deleted" } else { "active" }
}

/// Which lifecycle stages a listing includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    #[default]
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
    pub fn admits(self, deleted: bool) -> bool {
        match self {
            Self::ActiveOnly => !deleted,
            Self::DeletedOnly => deleted,
            Self::All => true,
        }
    }
}

/// One point of a metric's history.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
}

/// The logged model (MLflow 3) a metric point is also logged for, optionally on a
/// dataset (empty name and digest: none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelRef {
    pub model_id: String,
    pub dataset_name: String,
    pub dataset_digest: String,
}

/// A metric point a run logs for a logged model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetric {
    pub model: ModelRef,
    pub point: MetricPoint,
}

/// A param or tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A dataset as MLflow describes it: a name and digest that identify it, where it
/// came from, and optionally its schema and profile (JSON text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dataset {
    pub name: String,
    pub digest: String,
    pub source_type: String,
    pub source: String,
    pub schema: String,
    pub profile: String,
}

/// A dataset a run used, with input tags such as its role (`mlflow.data.context`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetInput {
    pub dataset: Dataset,
    pub tags: Vec<KeyValue>,
}

/// Where a `LogBatch` came from, which decides the wording of MLflow's errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchOrigin {
    /// `LogBatch` itself.
    #[default]
    Batch,
    /// A single `LogMetric`, `LogParam` or `SetTag`.
    Single,
}

/// Tag on a run holding its legacy `LogModel` history, a JSON list.
pub const TAG_LOG_MODEL_HISTORY: &str = "mlflow.log-model.history";
/// Input tag naming a dataset's role (`training`, `eval`, ...).
pub const INPUT_TAG_CONTEXT: &str = "mlflow.data.context";
