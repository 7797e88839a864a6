//! The projected state of experiments and runs, as stored under `E` and `R`. These are
//! storage types (prost-encoded for speed and forward compatibility), not wire types:
//! the API layers convert them.

use std::collections::BTreeMap;

use crate::domain::{MetricPoint, RunStatus};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExperimentRecord {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub artifact_location: String,
    #[prost(bool, tag = "4")]
    pub deleted: bool,
    #[prost(int64, tag = "5")]
    pub creation_time: i64,
    #[prost(int64, tag = "6")]
    pub last_update_time: i64,
    #[prost(btree_map = "string, string", tag = "7")]
    pub tags: BTreeMap<String, String>,
}

/// The latest point of one metric key (MLflow's), and the last point of its history in
/// history order, past which a new point cannot repeat a stored one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LatestMetric {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    #[prost(int64, tag = "3")]
    pub step: i64,
    /// The greatest stored point by (timestamp, step, value): `history::Point::order`.
    #[prost(int64, tag = "4")]
    pub last_timestamp: i64,
    #[prost(int64, tag = "5")]
    pub last_step: i64,
    #[prost(double, tag = "6")]
    pub last_value: f64,
}

impl LatestMetric {
    /// The last point of the history in history order.
    pub(crate) fn last(&self) -> super::history::Point {
        super::history::Point {
            timestamp: self.last_timestamp,
            step: self.last_step,
            value: self.last_value,
        }
    }

    /// MLflow's "latest": the greatest by (step, timestamp, value).
    pub(crate) fn is_before(&self, step: i64, timestamp: i64, value: f64) -> bool {
        (self.step, self.timestamp)
            .cmp(&(step, timestamp))
            .then(self.value.total_cmp(&value))
            .is_lt()
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunRecord {
    #[prost(string, tag = "1")]
    pub run_id: String,
    #[prost(uint64, tag = "2")]
    pub experiment_id: u64,
    #[prost(string, tag = "3")]
    pub run_name: String,
    #[prost(string, tag = "4")]
    pub user_id: String,
    /// A `RunStatus` number.
    #[prost(int32, tag = "5")]
    pub status: i32,
    #[prost(int64, tag = "6")]
    pub start_time: i64,
    #[prost(int64, optional, tag = "7")]
    pub end_time: Option<i64>,
    #[prost(string, tag = "8")]
    pub artifact_uri: String,
    #[prost(bool, tag = "9")]
    pub deleted: bool,
    /// Empty for a root run.
    #[prost(string, tag = "10")]
    pub parent_run_id: String,
    #[prost(string, tag = "11")]
    pub root_run_id: String,
    #[prost(uint32, tag = "12")]
    pub depth: u32,
    #[prost(btree_map = "string, string", tag = "13")]
    pub params: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "14")]
    pub tags: BTreeMap<String, String>,
    #[prost(btree_map = "string, message", tag = "15")]
    pub latest_metrics: BTreeMap<String, LatestMetric>,
    #[prost(message, repeated, tag = "16")]
    pub dataset_inputs: Vec<crate::pb::DatasetInput>,
    #[prost(string, repeated, tag = "17")]
    pub model_inputs: Vec<String>,
    #[prost(message, repeated, tag = "18")]
    pub model_outputs: Vec<crate::pb::ModelOutput>,
}

/// A logged model (MLflow 3's `LoggedModel`), stored under `O`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LoggedModelRecord {
    #[prost(string, tag = "1")]
    pub model_id: String,
    #[prost(uint64, tag = "2")]
    pub experiment_id: u64,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub model_type: String,
    #[prost(string, tag = "5")]
    pub source_run_id: String,
    /// MLflow's LoggedModelStatus number (1 pending, 2 ready, 3 upload failed).
    #[prost(int32, tag = "6")]
    pub status: i32,
    #[prost(string, tag = "7")]
    pub status_message: String,
    #[prost(int64, tag = "8")]
    pub creation_time: i64,
    #[prost(int64, tag = "9")]
    pub last_updated_time: i64,
    #[prost(string, tag = "10")]
    pub artifact_uri: String,
    #[prost(string, tag = "11")]
    pub creator_id: String,
    #[prost(btree_map = "string, string", tag = "12")]
    pub params: BTreeMap<String, String>,
    #[prost(btree_map = "string, string", tag = "13")]
    pub tags: BTreeMap<String, String>,
    #[prost(bool, tag = "14")]
    pub deleted: bool,
    /// Every metric point logged for the model, in the order logged.
    #[prost(message, repeated, tag = "15")]
    pub metrics: Vec<ModelMetricRecord>,
}

/// A metric point logged for a logged model, with the run that logged it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelMetricRecord {
    #[prost(message, optional, tag = "1")]
    pub metric: Option<crate::pb::LoggedModelMetric>,
    #[prost(string, tag = "2")]
    pub run_id: String,
}

impl RunRecord {
    pub fn status(&self) -> RunStatus {
        RunStatus::from_i32(self.status).unwrap_or(RunStatus::Running)
    }

    pub fn latest_metrics(&self) -> impl Iterator<Item = MetricPoint> + '_ {
        self.latest_metrics.iter().map(|(k, m)| MetricPoint {
            key: k.clone(),
            value: m.value,
            timestamp: m.timestamp,
            step: m.step,
        })
    }
}
