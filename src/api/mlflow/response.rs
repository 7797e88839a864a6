//! Writing MLflow's JSON with `#[derive(Serialize)]` types: snake_case names, int64 as
//! numbers, enums as names, NaN and ±Infinity as strings, and proto2 presence: a field
//! that is unset (an end time of a running run, an empty list, the last page's token)
//! is absent, not empty. The types borrow from the records they show.

use serde::{Serialize, Serializer};

use crate::artifacts::FileInfo;
use crate::domain::{LoggedModelStatus, MetricPoint, lifecycle_stage};
use crate::pb;
use crate::projection::{ExperimentRecord, LoggedModelRecord, RunRecord};

/// A metric value as MLflow's server writes it: NaN as the string `"NaN"`, and ±infinity
/// as ±1.7976931348623157e308, the value MLflow's stores keep for it (the log and gRPC
/// keep the true value).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Double(pub f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_nan() {
            s.serialize_str("NaN")
        } else {
            s.serialize_f64(crate::domain::mlflow_stored(self.0))
        }
    }
}

/// A value as it was logged, for Arbor's own routes and live streams: NaN and ±infinity
/// as the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (JSON has no numbers for them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrueDouble(pub f64);

impl Serialize for TrueDouble {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v == f64::INFINITY => s.serialize_str("Infinity"),
            v if v == f64::NEG_INFINITY => s.serialize_str("-Infinity"),
            v => s.serialize_f64(v),
        }
    }
}

/// `{}`: MLflow's answer to a write that returns nothing.
#[derive(Serialize, Default)]
pub(crate) struct Empty {}

#[derive(Serialize)]
pub(crate) struct KeyValue<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

fn pairs<'a>(kv: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<KeyValue<'a>> {
    kv.map(|(key, value)| KeyValue { key, value }).collect()
}

#[derive(Serialize)]
pub(crate) struct Experiment<'a> {
    experiment_id: String,
    name: &'a str,
    artifact_location: &'a str,
    lifecycle_stage: &'static str,
    last_update_time: i64,
    creation_time: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<KeyValue<'a>>,
}

impl<'a> From<&'a ExperimentRecord> for Experiment<'a> {
    fn from(e: &'a ExperimentRecord) -> Self {
        Experiment {
            experiment_id: e.id.to_string(),
            name: &e.name,
            artifact_location: &e.artifact_location,
            lifecycle_stage: lifecycle_stage(e.deleted),
            last_update_time: e.last_update_time,
            creation_time: e.creation_time,
            tags: pairs(e.tags.iter()),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Metric<'a> {
    key: &'a str,
    value: Double,
    timestamp: i64,
    step: i64,
    /// Only in `get-history-bulk-interval`, which mixes runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
}

impl<'a> Metric<'a> {
    pub(crate) fn of(p: &'a MetricPoint) -> Self {
        Metric {
            key: &p.key,
            value: Double(p.value),
            timestamp: p.timestamp,
            step: p.step,
            run_id: None,
        }
    }

    pub(crate) fn in_run(p: &'a MetricPoint, run_id: &'a str) -> Self {
        Metric {
            run_id: Some(run_id),
            ..Metric::of(p)
        }
    }
}

#[derive(Serialize)]
pub(crate) struct RunInfo<'a> {
    run_uuid: &'a str,
    run_id: &'a str,
    run_name: &'a str,
    experiment_id: String,
    user_id: &'a str,
    status: &'static str,
    start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    end_time: Option<i64>,
    artifact_uri: &'a str,
    lifecycle_stage: &'static str,
}

impl<'a> From<&'a RunRecord> for RunInfo<'a> {
    fn from(r: &'a RunRecord) -> Self {
        RunInfo {
            run_uuid: &r.run_id,
            run_id: &r.run_id,
            run_name: &r.run_name,
            experiment_id: r.experiment_id.to_string(),
            user_id: &r.user_id,
            status: r.status().name(),
            start_time: r.start_time,
            end_time: r.end_time,
            artifact_uri: &r.artifact_uri,
            lifecycle_stage: lifecycle_stage(r.deleted),
        }
    }
}

#[derive(Serialize)]
struct RunData<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<LatestMetric<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    params: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<KeyValue<'a>>,
}

/// A run's latest value of a metric (owned: the record keeps it in another shape).
#[derive(Serialize)]
struct LatestMetric<'a> {
    key: &'a str,
    value: Double,
    timestamp: i64,
    step: i64,
}

#[derive(Serialize)]
struct Dataset<'a> {
    name: &'a str,
    digest: &'a str,
    source_type: &'a str,
    source: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    schema: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    profile: &'a str,
}

#[derive(Serialize)]
struct DatasetInput<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dataset: Option<Dataset<'a>>,
}

impl<'a> From<&'a pb::DatasetInput> for DatasetInput<'a> {
    fn from(d: &'a pb::DatasetInput) -> Self {
        DatasetInput {
            tags: d
                .tags
                .iter()
                .map(|t| KeyValue {
                    key: &t.key,
                    value: &t.value,
                })
                .collect(),
            dataset: d.dataset.as_ref().map(|ds| Dataset {
                name: &ds.name,
                digest: &ds.digest,
                source_type: &ds.source_type,
                source: &ds.source,
                schema: &ds.schema,
                profile: &ds.profile,
            }),
        }
    }
}

#[derive(Serialize)]
struct ModelId<'a> {
    model_id: &'a str,
}

#[derive(Serialize)]
struct RunInputs<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dataset_inputs: Vec<DatasetInput<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    model_inputs: Vec<ModelId<'a>>,
}

#[derive(Serialize)]
struct ModelOutput<'a> {
    model_id: &'a str,
    step: i64,
}

#[derive(Serialize)]
struct RunOutputs<'a> {
    model_outputs: Vec<ModelOutput<'a>>,
}

#[derive(Serialize)]
pub(crate) struct Run<'a> {
    info: RunInfo<'a>,
    data: RunData<'a>,
    inputs: RunInputs<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<RunOutputs<'a>>,
}

impl<'a> From<&'a RunRecord> for Run<'a> {
    fn from(r: &'a RunRecord) -> Self {
        let metrics = r
            .latest_metrics
            .iter()
            .map(|(key, m)| LatestMetric {
                key,
                value: Double(m.value),
                timestamp: m.timestamp,
                step: m.step,
            })
            .collect();
        Run {
            info: RunInfo::from(r),
            data: RunData {
                metrics,
                params: pairs(r.params.iter()),
                tags: pairs(r.tags.iter()),
            },
            inputs: RunInputs {
                dataset_inputs: r.dataset_inputs.iter().map(DatasetInput::from).collect(),
                model_inputs: r
                    .model_inputs
                    .iter()
                    .map(|model_id| ModelId { model_id })
                    .collect(),
            },
            outputs: (!r.model_outputs.is_empty()).then(|| RunOutputs {
                model_outputs: r
                    .model_outputs
                    .iter()
                    .map(|o| ModelOutput {
                        model_id: &o.model_id,
                        step: o.step,
                    })
                    .collect(),
            }),
        }
    }
}

#[derive(Serialize)]
struct LoggedModelInfo<'a> {
    model_id: &'a str,
    experiment_id: String,
    name: &'a str,
    creation_timestamp_ms: i64,
    last_updated_timestamp_ms: i64,
    artifact_uri: &'a str,
    status: &'static str,
    // `creator_id` is a numeric user id in MLflow's proto; Arbor has no user ids, so it
    // is left unset rather than filled with a name the client cannot parse.
    #[serde(skip_serializing_if = "str::is_empty")]
    model_type: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_run_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    status_message: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<KeyValue<'a>>,
}

#[derive(Serialize)]
struct LoggedModelData<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    params: Vec<KeyValue<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    metrics: Vec<ModelMetric<'a>>,
}

/// A metric point of a logged model: MLflow's `Metric` with the model, the run that
/// logged it and, when given, the dataset.
#[derive(Serialize)]
struct ModelMetric<'a> {
    key: &'a str,
    value: Double,
    timestamp: i64,
    step: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    dataset_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    dataset_digest: &'a str,
    model_id: &'a str,
    run_id: &'a str,
}

#[derive(Serialize)]
pub(crate) struct LoggedModel<'a> {
    info: LoggedModelInfo<'a>,
    data: LoggedModelData<'a>,
}

impl<'a> From<&'a LoggedModelRecord> for LoggedModel<'a> {
    fn from(m: &'a LoggedModelRecord) -> Self {
        LoggedModel {
            info: LoggedModelInfo {
                model_id: &m.model_id,
                experiment_id: m.experiment_id.to_string(),
                name: &m.name,
                creation_timestamp_ms: m.creation_time,
                last_updated_timestamp_ms: m.last_updated_time,
                artifact_uri: &m.artifact_uri,
                status: LoggedModelStatus::from_i32(m.status).name(),
                model_type: &m.model_type,
                source_run_id: &m.source_run_id,
                status_message: &m.status_message,
                tags: pairs(m.tags.iter()),
            },
            data: LoggedModelData {
                params: pairs(m.params.iter()),
                metrics: m
                    .metrics
                    .iter()
                    .filter_map(|r| {
                        r.metric.as_ref().map(|p| ModelMetric {
                            key: &p.key,
                            value: Double(p.value),
                            timestamp: p.timestamp,
                            step: p.step,
                            dataset_name: &p.dataset_name,
                            dataset_digest: &p.dataset_digest,
                            model_id: &m.model_id,
                            run_id: &r.run_id,
                        })
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Serialize)]
pub(crate) struct File {
    path: String,
    is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_size: Option<u64>,
}

impl File {
    /// A listed file, its path relative to the root of the listing (`dir` below it).
    pub(crate) fn listed(f: &FileInfo, dir: &str) -> Self {
        let path = if dir.is_empty() {
            f.path.clone()
        } else {
            format!("{}/{}", dir.trim_end_matches('/'), f.path)
        };
        File {
            path,
            is_dir: f.is_dir,
            file_size: f.file_size,
        }
    }
}

/// MLflow's listing of files: `{"root_uri"?, "files"?}`.
#[derive(Serialize)]
pub(crate) struct Files<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
}

/// `{"<items>": [...], "next_page_token": "..."}`, each only when present; the name of
/// the list is the caller's (`experiments`, `runs`, `metrics`, `models`, ...).
pub(crate) fn page<T: Serialize>(
    items_name: &'static str,
    items: Vec<T>,
    next_page_token: Option<String>,
) -> Page<T> {
    Page {
        items_name,
        items,
        next_page_token,
    }
}

pub(crate) struct Page<T> {
    items_name: &'static str,
    items: Vec<T>,
    next_page_token: Option<String>,
}

impl<T: Serialize> Serialize for Page<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        if !self.items.is_empty() {
            m.serialize_entry(self.items_name, &self.items)?;
        }
        if let Some(t) = &self.next_page_token {
            m.serialize_entry("next_page_token", t)?;
        }
        m.end()
    }
}
