//! Writing MLflow's JSON: snake_case names, int64 as numbers, enums as names, NaN and
//! ±Infinity as strings, and proto2 presence: a field that is unset (an end time of a
//! running run, an empty list, the last page's token) is absent, not empty.

use serde_json::{Map, Value, json};

use crate::artifacts::FileInfo;
use crate::domain::{MetricPoint, RunStatus, lifecycle_stage};
use crate::pb;
use crate::projection::{ExperimentRecord, LoggedModelRecord, RunRecord};

/// A double as MLflow writes it.
pub(crate) fn double(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}

/// Inserts `items` under `key` unless empty.
fn list(m: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    if !items.is_empty() {
        m.insert(key.into(), Value::Array(items));
    }
}

fn pairs<'a>(kv: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<Value> {
    kv.map(|(k, v)| json!({ "key": k, "value": v })).collect()
}

pub(crate) fn experiment(e: &ExperimentRecord) -> Value {
    let mut m = Map::new();
    m.insert("experiment_id".into(), json!(e.id.to_string()));
    m.insert("name".into(), json!(e.name));
    m.insert("artifact_location".into(), json!(e.artifact_location));
    m.insert("lifecycle_stage".into(), json!(lifecycle_stage(e.deleted)));
    m.insert("last_update_time".into(), json!(e.last_update_time));
    m.insert("creation_time".into(), json!(e.creation_time));
    list(&mut m, "tags", pairs(e.tags.iter()));
    Value::Object(m)
}

pub(crate) fn metric(p: &MetricPoint) -> Value {
    json!({ "key": p.key, "value": double(p.value), "timestamp": p.timestamp, "step": p.step })
}

pub(crate) fn run_info(r: &RunRecord) -> Value {
    let mut m = Map::new();
    m.insert("run_uuid".into(), json!(r.run_id));
    m.insert("run_id".into(), json!(r.run_id));
    m.insert("run_name".into(), json!(r.run_name));
    m.insert("experiment_id".into(), json!(r.experiment_id.to_string()));
    m.insert("user_id".into(), json!(r.user_id));
    m.insert(
        "status".into(),
        json!(
            RunStatus::from_i32(r.status)
                .unwrap_or(RunStatus::Running)
                .name()
        ),
    );
    m.insert("start_time".into(), json!(r.start_time));
    if let Some(end) = r.end_time {
        m.insert("end_time".into(), json!(end));
    }
    m.insert("artifact_uri".into(), json!(r.artifact_uri));
    m.insert("lifecycle_stage".into(), json!(lifecycle_stage(r.deleted)));
    Value::Object(m)
}

pub(crate) fn dataset_input(d: &pb::DatasetInput) -> Value {
    let mut m = Map::new();
    list(
        &mut m,
        "tags",
        d.tags
            .iter()
            .map(|t| json!({ "key": t.key, "value": t.value }))
            .collect(),
    );
    if let Some(ds) = &d.dataset {
        let mut x = Map::new();
        for (k, v) in [
            ("name", &ds.name),
            ("digest", &ds.digest),
            ("source_type", &ds.source_type),
            ("source", &ds.source),
            ("schema", &ds.schema),
            ("profile", &ds.profile),
        ] {
            if !v.is_empty() || matches!(k, "name" | "digest" | "source_type" | "source") {
                x.insert(k.into(), json!(v));
            }
        }
        m.insert("dataset".into(), Value::Object(x));
    }
    Value::Object(m)
}

pub(crate) fn run(r: &RunRecord) -> Value {
    let mut data = Map::new();
    list(
        &mut data,
        "metrics",
        r.latest_metrics().map(|p| metric(&p)).collect(),
    );
    list(&mut data, "params", pairs(r.params.iter()));
    list(&mut data, "tags", pairs(r.tags.iter()));
    let mut inputs = Map::new();
    list(
        &mut inputs,
        "dataset_inputs",
        r.dataset_inputs.iter().map(dataset_input).collect(),
    );
    list(
        &mut inputs,
        "model_inputs",
        r.model_inputs
            .iter()
            .map(|id| json!({ "model_id": id }))
            .collect(),
    );
    let mut out = Map::new();
    out.insert("info".into(), run_info(r));
    out.insert("data".into(), Value::Object(data));
    out.insert("inputs".into(), Value::Object(inputs));
    if !r.model_outputs.is_empty() {
        let outputs: Vec<Value> = r
            .model_outputs
            .iter()
            .map(|o| json!({ "model_id": o.model_id, "step": o.step }))
            .collect();
        out.insert("outputs".into(), json!({ "model_outputs": outputs }));
    }
    Value::Object(out)
}

pub(crate) fn logged_model(mdl: &LoggedModelRecord) -> Value {
    let mut info = Map::new();
    info.insert("model_id".into(), json!(mdl.model_id));
    info.insert("experiment_id".into(), json!(mdl.experiment_id.to_string()));
    info.insert("name".into(), json!(mdl.name));
    info.insert("creation_timestamp_ms".into(), json!(mdl.creation_time));
    info.insert(
        "last_updated_timestamp_ms".into(),
        json!(mdl.last_updated_time),
    );
    info.insert("artifact_uri".into(), json!(mdl.artifact_uri));
    info.insert(
        "status".into(),
        json!(crate::domain::LoggedModelStatus::from_i32(mdl.status).name()),
    );
    // `creator_id` is a numeric user id in MLflow's proto; Arbor has no user ids, so it
    // is left unset rather than filled with a name the client cannot parse.
    for (k, v) in [
        ("model_type", &mdl.model_type),
        ("source_run_id", &mdl.source_run_id),
        ("status_message", &mdl.status_message),
    ] {
        if !v.is_empty() {
            info.insert(k.into(), json!(v));
        }
    }
    list(&mut info, "tags", pairs(mdl.tags.iter()));
    let mut data = Map::new();
    list(&mut data, "params", pairs(mdl.params.iter()));
    json!({ "info": Value::Object(info), "data": Value::Object(data) })
}

pub(crate) fn file_info(f: &FileInfo, dir: &str) -> Value {
    let path = if dir.is_empty() {
        f.path.clone()
    } else {
        format!("{}/{}", dir.trim_end_matches('/'), f.path)
    };
    let mut m = Map::new();
    m.insert("path".into(), json!(path));
    m.insert("is_dir".into(), json!(f.is_dir));
    if let Some(size) = f.file_size {
        m.insert("file_size".into(), json!(size));
    }
    Value::Object(m)
}

/// `{"<key>": items, "next_page_token": token}`, each only when present.
pub(crate) fn page(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut m = Map::new();
    list(&mut m, key, items);
    if let Some(t) = next {
        m.insert("next_page_token".into(), json!(t));
    }
    Value::Object(m)
}
