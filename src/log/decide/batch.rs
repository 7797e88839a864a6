//! `LogBatch`, which the single metric, param and tag writes also go through.

use std::collections::{HashMap, HashSet};

use crate::db::keys;
use crate::db::kv::Kv;
use crate::db::kv::Pending;
use crate::domain::{
    BatchOrigin, Error, KeyValue, MetricPoint, ModelMetric, TAG_PARENT_RUN_ID, TAG_ROOT_RUN_ID,
    TAG_RUN_NAME, validation,
};
use crate::hierarchy::{check_parent, check_root_tag};
use crate::pb::{self, event::Payload};
use crate::projection::history::{self, Point};
use crate::projection::{RunRecord, active_run};

use super::models::find_logged_model;
use crate::domain::commands as c;

/// `LogBatch` (and the single `LogMetric`, `LogParam`, `SetTag`): MLflow's limits and
/// messages, params that never change, tags that may re-parent the run, and the metrics
/// as one columnar event.
pub(super) fn log_batch(
    kv: &Pending,
    run_id: &str,
    metrics: &[MetricPoint],
    params: &[KeyValue],
    tags: &[KeyValue],
    origin: BatchOrigin,
    model_metrics: &[ModelMetric],
) -> Result<Vec<Payload>, Error> {
    // MLflow's order: the run id, each metric, param and tag, the batch's limits,
    // repeated param keys, and only then the run itself.
    validation::require("run_id", run_id)?;
    let prefix = |entity: &str, i: usize| match origin {
        BatchOrigin::Batch => format!("{entity}[{i}]."),
        BatchOrigin::Single => String::new(),
    };

    let mut series: Vec<pb::MetricSeries> = Vec::new();
    let mut series_of: HashMap<&str, usize> = HashMap::new();
    for (i, m) in metrics.iter().enumerate() {
        let idx = match series_of.get(m.key.as_str()) {
            Some(&idx) => idx,
            None => {
                // Keys repeat within a batch; each distinct key is validated once.
                validation::validate_metric(&prefix("metrics", i), m)?;
                series.push(pb::MetricSeries {
                    key: m.key.to_string(),
                    ..Default::default()
                });
                series_of.insert(&m.key, series.len() - 1);
                series.len() - 1
            }
        };
        if m.timestamp < 0 {
            validation::validate_metric(&prefix("metrics", i), m)?;
        }
        let s = &mut series[idx];
        s.timestamps.push(m.timestamp);
        s.steps.push(m.step);
        s.values.push(m.value);
    }

    let params = params
        .iter()
        .enumerate()
        .map(|(i, p)| validation::param(&prefix("params", i), p))
        .collect::<Result<Vec<_>, _>>()?;
    let tags = tags
        .iter()
        .enumerate()
        .map(|(i, t)| validation::run_tag(&prefix("tags", i), t))
        .collect::<Result<Vec<_>, _>>()?;
    validation::batch_limits(metrics.len(), params.len(), tags.len())?;
    params_unique(&params)?;
    let run = active_run(kv, run_id)?;

    let mut new_params: Vec<KeyValue> = Vec::new();
    let mut conflicts = Vec::new();
    for p in params {
        match run.params.get(&p.key) {
            Some(old) if *old == p.value => {}
            Some(old) => conflicts.push((p.key.to_string(), old.clone(), p.value.to_string())),
            None => new_params.push(p),
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::invalid(match origin {
            BatchOrigin::Single => {
                let (k, old, new) = &conflicts[0];
                format!(
                    "Changing param values is not allowed. Param with key='{k}' was already logged with value='{old}' for run ID='{run_id}'. Attempted logging new value '{new}'."
                )
            }
            BatchOrigin::Batch => {
                let listed: Vec<String> = conflicts
                    .iter()
                    .map(|(k, old, new)| {
                        format!("{{'key': '{k}', 'old_value': '{old}', 'new_value': '{new}'}}")
                    })
                    .collect();
                format!(
                    "Changing param values is not allowed. Params were already logged='[{}]' for run ID='{run_id}'.",
                    listed.join(", ")
                )
            }
        }));
    }

    let mut new_tags: Vec<KeyValue> = Vec::new();
    let mut new_parent: Option<String> = None;
    for t in tags {
        // As MLflow: an empty name leaves the run's name, and its tag, as they are.
        if t.key == TAG_RUN_NAME && t.value.is_empty() {
            continue;
        }
        if t.key == TAG_ROOT_RUN_ID {
            check_root_tag(&t.value, &run.root_run_id)?;
            continue;
        }
        if t.key == TAG_PARENT_RUN_ID {
            new_parent = Some(t.value.to_string());
        }
        new_tags.retain(|x| x.key != t.key);
        new_tags.push(t);
    }
    let mut reparent = None;
    if let Some(parent) = new_parent
        && parent != run.parent_run_id
    {
        // A parent that does not exist makes the run a root, its tag kept as given.
        let parent = if parent.is_empty() {
            parent
        } else {
            check_parent(kv, Some(&run.run_id), &parent)?
                .map(|p| p.run_id)
                .unwrap_or_default()
        };
        if parent != run.parent_run_id {
            reparent = Some(pb::RunReparented {
                run_id: run.run_id.clone(),
                old_parent_run_id: run.parent_run_id.clone(),
                new_parent_run_id: parent,
            });
        }
    }

    // The move comes first, so that the tag the client set (even naming a run that
    // does not exist) is what the run keeps.
    let mut events: Vec<Payload> = reparent.into_iter().map(Payload::RunReparented).collect();
    if !new_params.is_empty() {
        events.push(Payload::ParamLogged(pb::ParamLogged {
            run_id: run.run_id.clone(),
            params: new_params
                .into_iter()
                .map(|p| pb::Param {
                    key: p.key,
                    value: p.value,
                })
                .collect(),
        }));
    }
    if !new_tags.is_empty() {
        events.push(Payload::TagSet(pb::TagSet {
            run_id: run.run_id.clone(),
            tags: new_tags
                .into_iter()
                .map(|t| pb::RunTag {
                    key: t.key,
                    value: t.value,
                })
                .collect(),
        }));
    }
    for s in &mut series {
        drop_repeats(kv, &run, s)?;
    }
    series.retain(|s| !s.values.is_empty());
    if !series.is_empty() {
        events.push(Payload::MetricsLogged(pb::MetricsLogged {
            run_id: run.run_id.clone(),
            series,
        }));
    }
    events.extend(for_models(kv, &run.run_id, model_metrics)?);
    Ok(events)
}

/// Most stored points `drop_repeats` reads for one key of one batch. The check runs on
/// the single writer, so it is bounded: a write's cost must not grow with the history
/// it lands in.
const MAX_POINTS_CHECKED: usize = 1 << 18;

/// Takes out of `s` the points its history holds already, and repeats within `s`: a
/// history keeps a point once (MLflow's primary key ignores a repeat), and the event
/// records only what the history gains, so watchers receive exactly what a history
/// read returns, even from a client that retries a batch.
///
/// Training loops log past the history's last point, which the run record keeps: then
/// nothing is read. A point at or before it is looked for in the stored chunks, newest
/// first (a retried batch repeats recent points, found at once), reading at most
/// `MAX_POINTS_CHECKED` points; one not found by then is taken as new (the history still
/// reads it once; only a watcher could see it twice).
fn drop_repeats(kv: &Pending, run: &RunRecord, s: &mut pb::MetricSeries) -> Result<(), Error> {
    let point = |i: usize| Point {
        timestamp: s.timestamps[i],
        step: s.steps[i],
        value: s.values[i],
    };
    let last = run.latest_metrics.get(&s.key).map(|l| l.last());
    let n = s.values.len();
    // Strictly increasing and past the stored history: nothing can repeat.
    let fresh = (0..n).all(|i| {
        let after = if i == 0 { last } else { Some(point(i - 1)) };
        after.is_none_or(|a| a.order(&point(i)).is_lt())
    });
    if fresh {
        return Ok(());
    }
    let identity = |p: &Point| (p.timestamp, p.step, p.value.to_bits());
    let mut unsure: HashSet<_> = match last {
        Some(last) => (0..n)
            .map(point)
            .filter(|p| p.order(&last).is_le())
            .map(|p| identity(&p))
            .collect(),
        None => HashSet::new(),
    };
    let mut stored = HashSet::new();
    if !unsure.is_empty() {
        let mut read = 0;
        let mut chunk_points = Vec::new();
        for chunk_key in kv
            .keys_with_prefix(&keys::history(&run.run_id, &s.key))?
            .iter()
            .rev()
        {
            let Some(chunk) = kv.get(chunk_key)? else {
                continue;
            };
            chunk_points.clear();
            history::decode_into(&chunk, &mut chunk_points);
            read += chunk_points.len();
            for p in &chunk_points {
                if unsure.remove(&identity(p)) {
                    stored.insert(identity(p));
                }
            }
            if unsure.is_empty() || read >= MAX_POINTS_CHECKED {
                break;
            }
        }
    }
    let mut seen = HashSet::new();
    let keep: Vec<bool> = (0..n)
        .map(|i| {
            let id = identity(&point(i));
            !stored.contains(&id) && seen.insert(id)
        })
        .collect();
    let mut k = keep.iter();
    s.timestamps.retain(|_| *k.next().unwrap_or(&false));
    let mut k = keep.iter();
    s.steps.retain(|_| *k.next().unwrap_or(&false));
    let mut k = keep.iter();
    s.values.retain(|_| *k.next().unwrap_or(&false));
    Ok(())
}

/// The points logged for logged models, one event per model, in the order the models
/// first appear; identical points are recorded once, as MLflow does. Every model must
/// exist (MLflow refuses an unknown one with a database error).
fn for_models(kv: &Pending, run_id: &str, metrics: &[ModelMetric]) -> Result<Vec<Payload>, Error> {
    let mut events: Vec<pb::LoggedModelMetricsLogged> = Vec::new();
    for m in metrics {
        let at = match events.iter().position(|e| e.model_id == m.model.model_id) {
            Some(at) => at,
            None => {
                let model = find_logged_model(kv, &m.model.model_id)?;
                events.push(pb::LoggedModelMetricsLogged {
                    model_id: model.model_id,
                    run_id: run_id.to_string(),
                    metrics: vec![],
                });
                events.len() - 1
            }
        };
        let point = super::models::logged_model_metric(m);
        if !events[at].metrics.contains(&point) {
            events[at].metrics.push(point);
        }
    }
    Ok(events
        .into_iter()
        .map(Payload::LoggedModelMetricsLogged)
        .collect())
}

/// MLflow refuses a batch that names a param key twice, even with the same value, and
/// lists each repeat (Python's list syntax, as its message has it).
fn params_unique(params: &[KeyValue]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    let repeats: Vec<String> = params
        .iter()
        .filter(|p| !seen.insert(p.key.as_str()))
        .map(|p| format!("'{}'", p.key.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    if repeats.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "Duplicate parameter keys have been submitted: [{}]. Please ensure the request contains only one param value per param key.",
        repeats.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::LatestMetric;

    fn series(points: &[(i64, i64, f64)]) -> pb::MetricSeries {
        pb::MetricSeries {
            key: "loss".into(),
            timestamps: points.iter().map(|p| p.0).collect(),
            steps: points.iter().map(|p| p.1).collect(),
            values: points.iter().map(|p| p.2).collect(),
        }
    }

    fn points(s: &pb::MetricSeries) -> Vec<(i64, i64, f64)> {
        (0..s.values.len())
            .map(|i| (s.timestamps[i], s.steps[i], s.values[i]))
            .collect()
    }

    /// A run whose "loss" history is `stored`, in two chunks.
    fn stored(tree: &sled::Tree, stored: &[(i64, i64, f64)]) -> RunRecord {
        let mut run = RunRecord {
            run_id: "r".into(),
            ..Default::default()
        };
        let (a, b) = stored.split_at(stored.len() / 2);
        for (seq, chunk) in [(1, a), (2, b)] {
            let s = series(chunk);
            tree.insert(
                keys::history_chunk("r", "loss", seq),
                history::encode(&s.timestamps, &s.steps, &s.values),
            )
            .expect("insert");
        }
        let last = stored
            .iter()
            .map(|&(timestamp, step, value)| Point {
                timestamp,
                step,
                value,
            })
            .max_by(|a, b| a.order(b))
            .expect("points");
        run.latest_metrics.insert(
            "loss".into(),
            LatestMetric {
                last_timestamp: last.timestamp,
                last_step: last.step,
                last_value: last.value,
                ..Default::default()
            },
        );
        run
    }

    /// What a batch adds to a history: new points, once; never a stored point again,
    /// whether the batch is retried whole, repeats itself, or comes out of order.
    #[test]
    fn a_batch_keeps_only_what_the_history_gains() {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let tree = db.open_tree("t").expect("tree");
        let history: Vec<(i64, i64, f64)> = (0..10).map(|i| (100 + i, i, i as f64)).collect();
        let run = stored(&tree, &history);
        let kv = Pending::new(&tree);
        let check = |batch: &[(i64, i64, f64)]| {
            let mut s = series(batch);
            drop_repeats(&kv, &run, &mut s).expect("decide");
            points(&s)
        };
        // Past the history: all of it, unread.
        let later = [(110, 10, 1.0), (111, 11, 2.0)];
        assert_eq!(check(&later), later);
        // A retried batch: nothing.
        assert_eq!(check(&history[5..]), []);
        assert_eq!(check(&history), []);
        // Repeats within a batch, and a stored point among new ones.
        assert_eq!(
            check(&[(110, 10, 1.0), (110, 10, 1.0), (103, 3, 3.0), (103, 3, 0.5)]),
            [(110, 10, 1.0), (103, 3, 0.5)]
        );
        // NaN is a value like any other: the same NaN is a repeat.
        let nan = [(120, 20, f64::NAN), (120, 20, f64::NAN)];
        assert_eq!(check(&nan).len(), 1);
    }
}

decide_done!(c::LogBatch, |c, at| Ok((
    log_batch(
        at.kv,
        &c.run_id,
        &c.metrics,
        &c.params,
        &c.tags,
        c.origin,
        &c.model_metrics,
    )?,
    (),
)));
