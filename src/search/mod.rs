//! Search: MLflow's filter and `order_by` language for runs and experiments, planned
//! onto the indexes. A run search starts from the most selective index a clause allows
//! (run ids, the hierarchy by parent or root, params by value) and otherwise scans the
//! experiments' runs; results are ordered by keeping only the best `offset + limit + 1`
//! (never a full sort). With MLflow's default order and no indexed clause, the runs are
//! read in order from the start-time index and pages continue from a cursor, so paging
//! through a whole experiment reads each run once.

mod experiments;
mod lexer;
mod like;
mod parser;
mod runs;

use std::collections::HashSet;
use std::ops::Bound;

use crate::db::keys;
use crate::db::kv::Kv;
use crate::domain::{Error, ViewType};
use crate::paging::{self as page, Position};
use crate::projection::{self, ExperimentRecord, LoggedModelRecord, RunRecord};

/// Checks a filter and order without running them (the property tests call this).
pub fn validate_run_search(filter: &str, order_by: &[String]) -> Result<(), Error> {
    runs::compile_filter(filter)?;
    runs::compile_order(order_by)?;
    Ok(())
}

pub fn validate_experiment_search(filter: &str, order_by: &[String]) -> Result<(), Error> {
    experiments::compile_filter(filter)?;
    experiments::compile_order(order_by)?;
    Ok(())
}

/// A logged-model filter: `name`, `model_id`, `source_run_id`, `status`, `model_type`,
/// `tags.<key>` and `params.<key>` with `=`, `!=`, `LIKE`, `ILIKE`, joined by AND.
pub(crate) fn compile_model_filter(
    filter: &str,
) -> Result<impl Fn(&crate::projection::LoggedModelRecord) -> bool + use<>, Error> {
    use parser::{Entity, Op};
    type Get = fn(&crate::projection::LoggedModelRecord, &str) -> Option<String>;
    let mut tests: Vec<(Get, String, runs::StrTest)> = Vec::new();
    for c in parser::parse_filter(filter)? {
        // MLflow's UI asks for models by id with IN.
        let ops: &[Op] = if c.ident.entity == Entity::Attribute {
            &[Op::Eq, Op::Ne, Op::Like, Op::ILike, Op::In, Op::NotIn]
        } else {
            &[Op::Eq, Op::Ne, Op::Like, Op::ILike]
        };
        let what = format!("'{}'", c.ident.key);
        let test = runs::str_test(filter, &c, ops, &what)?;
        let get: Get = match (c.ident.entity, c.ident.key.as_str()) {
            (Entity::Tag, _) => |m, k| m.tags.get(k).cloned(),
            (Entity::Param, _) => |m, k| m.params.get(k).cloned(),
            (Entity::Attribute, "name") => |m, _| Some(m.name.clone()),
            (Entity::Attribute, "model_id") => |m, _| Some(m.model_id.clone()),
            (Entity::Attribute, "source_run_id") => |m, _| Some(m.source_run_id.clone()),
            (Entity::Attribute, "model_type") => |m, _| Some(m.model_type.clone()),
            (Entity::Attribute, "status") => |m, _| {
                Some(
                    crate::domain::LoggedModelStatus::from_i32(m.status)
                        .name()
                        .to_string(),
                )
            },
            _ => {
                return Err(lexer::error_at(
                    filter,
                    c.ident.pos,
                    "logged models can be filtered on name, model_id, source_run_id, status, model_type, tags.<key> and params.<key>",
                ));
            }
        };
        tests.push((get, c.ident.key.clone(), test));
    }
    Ok(move |m: &crate::projection::LoggedModelRecord| {
        tests
            .iter()
            .all(|(get, key, test)| test.check(get(m, key).as_deref()))
    })
}

/// Most logged models one search returns, and the default.
pub const MODELS_MAX_RESULTS_THRESHOLD: i64 = 50_000;
pub const MODELS_MAX_RESULTS_DEFAULT: i64 = 50;

/// A `datasets` clause of `SearchLoggedModels`: a model passes when it has a metric
/// logged on one of these (name, digest) pairs. As on MLflow's server, a digest left out
/// is the empty digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFilter {
    pub name: String,
    pub digest: String,
}

/// An `order_by` entry of `SearchLoggedModels`: an attribute (`name`, `creation_time`,
/// ...) or `metrics.<key>` (the model's latest value of it, on the dataset if named).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelOrder {
    pub field_name: String,
    pub ascending: bool,
    pub dataset_name: String,
    pub dataset_digest: String,
}

/// A model's value for one ordering; `None` sorts last in both directions, as MLflow's.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum SortValue {
    Number(f64),
    Text(String),
}

type ModelKey = Box<dyn Fn(&LoggedModelRecord) -> Option<SortValue>>;

fn model_order_key(order: &ModelOrder) -> Result<ModelKey, Error> {
    let text = |v: &str| (!v.is_empty()).then(|| SortValue::Text(v.to_string()));
    #[allow(clippy::cast_precision_loss)]
    let number = |v: i64| Some(SortValue::Number(v as f64));
    let field = order.field_name.as_str();
    if let Some((entity, key)) = field.split_once('.') {
        if entity != "metrics" {
            return Err(Error::invalid(format!(
                "Invalid order by field name: {field}. Only metrics are supported."
            )));
        }
        let (key, name, digest) = (
            key.to_string(),
            order.dataset_name.clone(),
            order.dataset_digest.clone(),
        );
        // The latest point: greatest timestamp, then step, then the first run id.
        return Ok(Box::new(move |m: &LoggedModelRecord| {
            m.metrics
                .iter()
                .filter_map(|r| r.metric.as_ref().map(|p| (p, &r.run_id)))
                .filter(|(p, _)| {
                    p.key == key
                        && (name.is_empty() || p.dataset_name == name)
                        && (digest.is_empty() || p.dataset_digest == digest)
                })
                .max_by(|(a, ra), (b, rb)| {
                    (a.timestamp, a.step)
                        .cmp(&(b.timestamp, b.step))
                        .then_with(|| rb.cmp(ra))
                })
                .map(|(p, _)| SortValue::Number(p.value))
        }));
    }
    Ok(match field {
        "model_id" => Box::new(move |m: &LoggedModelRecord| text(&m.model_id)),
        "name" => Box::new(move |m: &LoggedModelRecord| text(&m.name)),
        "experiment_id" => Box::new(move |m: &LoggedModelRecord| {
            number(i64::try_from(m.experiment_id).unwrap_or(i64::MAX))
        }),
        "artifact_location" => Box::new(move |m: &LoggedModelRecord| text(&m.artifact_uri)),
        "creation_time" | "creation_timestamp" | "creation_timestamp_ms" => {
            Box::new(move |m: &LoggedModelRecord| number(m.creation_time))
        }
        "last_updated_timestamp" | "last_updated_timestamp_ms" => {
            Box::new(move |m: &LoggedModelRecord| number(m.last_updated_time))
        }
        "status" => Box::new(move |m: &LoggedModelRecord| number(i64::from(m.status))),
        "model_type" => Box::new(move |m: &LoggedModelRecord| text(&m.model_type)),
        "source_run_id" => Box::new(move |m: &LoggedModelRecord| text(&m.source_run_id)),
        "status_message" => Box::new(move |m: &LoggedModelRecord| text(&m.status_message)),
        "lifecycle_stage" => {
            Box::new(move |m: &LoggedModelRecord| text(crate::domain::lifecycle_stage(m.deleted)))
        }
        _ => {
            return Err(Error::invalid(format!(
                "Invalid order by field name: {field}"
            )));
        }
    })
}

/// MLflow's `SearchLoggedModels` over `models`: active models of the given experiments
/// (all, when none is named) that pass the filter and have metrics on one of
/// `datasets` (when any are named), newest first, a page at a time.
pub(crate) fn search_logged_models(
    models: Vec<LoggedModelRecord>,
    experiment_ids: &[String],
    filter: &str,
    datasets: &[DatasetFilter],
    order_by: &[ModelOrder],
    max_results: Option<i64>,
    page_token: &str,
) -> Result<(Vec<LoggedModelRecord>, Option<String>), Error> {
    // The orderings asked for, then MLflow's tie-breaks: newest first (unless the
    // creation time was named), then model id.
    let mut order = order_by.to_vec();
    let named = |names: &[&str]| {
        order_by
            .iter()
            .any(|o| names.contains(&o.field_name.as_str()))
    };
    if !named(&[
        "creation_time",
        "creation_timestamp",
        "creation_timestamp_ms",
    ]) {
        order.push(ModelOrder {
            field_name: "creation_time".into(),
            ascending: false,
            ..ModelOrder::default()
        });
    }
    if !named(&["model_id"]) {
        order.push(ModelOrder {
            field_name: "model_id".into(),
            ascending: true,
            ..ModelOrder::default()
        });
    }
    let keys = order
        .iter()
        .map(|o| Ok((model_order_key(o)?, o.ascending)))
        .collect::<Result<Vec<_>, Error>>()?;
    if datasets.iter().any(|d| d.name.is_empty()) {
        return Err(Error::invalid(
            "`dataset_name` in the `datasets` clause must be specified.",
        ));
    }
    let on_datasets = |m: &LoggedModelRecord| {
        datasets.is_empty()
            || m.metrics.iter().filter_map(|r| r.metric.as_ref()).any(|p| {
                datasets
                    .iter()
                    .any(|d| d.name == p.dataset_name && d.digest == p.dataset_digest)
            })
    };
    let matches = compile_model_filter(filter)?;
    let max = max_results.unwrap_or(MODELS_MAX_RESULTS_DEFAULT);
    if !(1..=MODELS_MAX_RESULTS_THRESHOLD).contains(&max) {
        return Err(Error::invalid(format!(
            "Invalid value {max} for parameter 'max_results' supplied: it must be between 1 and {MODELS_MAX_RESULTS_THRESHOLD}"
        )));
    }
    let offset = page::decode_offset(page_token)?;
    let models: Vec<LoggedModelRecord> = models
        .into_iter()
        .filter(|m| !m.deleted)
        .filter(|m| {
            experiment_ids.is_empty() || experiment_ids.contains(&m.experiment_id.to_string())
        })
        .filter(|m| matches(m) && on_datasets(m))
        .collect();
    let mut keyed: Vec<(Vec<Option<SortValue>>, LoggedModelRecord)> = models
        .into_iter()
        .map(|m| (keys.iter().map(|(key, _)| key(&m)).collect(), m))
        .collect();
    keyed.sort_by(|(a, _), (b, _)| {
        a.iter()
            .zip(b)
            .zip(&keys)
            .map(|((x, y), (_, ascending))| match (x, y) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) => {
                    let o = x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal);
                    if *ascending { o } else { o.reverse() }
                }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let models: Vec<LoggedModelRecord> = keyed.into_iter().map(|(_, m)| m).collect();
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    Ok(page::slice(models, offset, limit))
}

/// Keeps the best `k` of `items` by `cmp`, sorted, without sorting the rest.
fn top_k<T>(mut items: Vec<T>, k: usize, cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Vec<T> {
    if k == 0 {
        return Vec::new();
    }
    if items.len() > k {
        items.select_nth_unstable_by(k - 1, &cmp);
        items.truncate(k);
    }
    items.sort_by(cmp);
    items
}

pub(crate) struct RunQuery<'a> {
    pub experiment_ids: &'a [u64],
    pub view: ViewType,
    pub filter: &'a str,
    pub order_by: &'a [String],
    pub limit: usize,
    pub page_token: &'a str,
}

pub(crate) fn search_runs(
    tree: &sled::Tree,
    q: &RunQuery,
) -> Result<(Vec<RunRecord>, Option<String>), Error> {
    let clauses = runs::compile_filter(q.filter)?;
    let order = runs::compile_order(q.order_by)?;
    let position = page::decode(q.page_token)?;
    let admits = |r: &RunRecord| {
        q.experiment_ids.contains(&r.experiment_id)
            && q.view.admits(r.deleted)
            && clauses.iter().all(|c| c.matches(r))
    };
    let hint = clauses
        .iter()
        .filter_map(|c| c.index_hint())
        .min_by_key(|h| h.rank());
    if hint.is_none() && runs::is_default_order(&order) {
        let after = match position {
            Position::Start => None,
            Position::After(t, id) => Some((t, id)),
            Position::Offset(_) | Position::AfterPoint { .. } => {
                return Err(page::invalid(q.page_token));
            }
        };
        return ordered_scan(tree, q.experiment_ids, |_| true, admits, q.limit, after);
    }
    // A name or param index may match more runs than a page holds: in the default order,
    // walk the start-time index and load only the runs it names that are among the
    // matches, until the page is full, instead of loading and sorting every match. Its
    // pages continue with a position token; a small match set takes the path below.
    if let Some(h @ (runs::IndexHint::Name(_) | runs::IndexHint::Param(..))) = &hint
        && runs::is_default_order(&order)
        && matches!(position, Position::Start | Position::After(..))
    {
        let matches: HashSet<String> = candidates(tree, q.experiment_ids, Some(h))?
            .into_iter()
            .collect();
        let after = match &position {
            Position::After(t, id) => Some((*t, id.clone())),
            _ => None,
        };
        if after.is_some() || matches.len() > q.limit {
            let wanted = |run: &str| matches.contains(run);
            return ordered_scan(tree, q.experiment_ids, wanted, admits, q.limit, after);
        }
    }
    let offset = match position {
        Position::Start => 0,
        Position::Offset(n) => n,
        Position::After(..) | Position::AfterPoint { .. } => {
            return Err(page::invalid(q.page_token));
        }
    };
    let k = offset.saturating_add(q.limit).saturating_add(1);
    // Ordered by a metric the filter requires (so runs without it are out anyway): walk
    // the metric's value index in order instead of loading every candidate, unless a
    // hierarchy or id index gives a small set.
    if let Some(runs::SortKey {
        field: runs::SortField::Metric(key),
        ascending,
    }) = order.first()
        && clauses.iter().any(|c| c.requires_metric(key))
        && hint
            .as_ref()
            .is_none_or(|h| matches!(h, runs::IndexHint::Param(..) | runs::IndexHint::Name(_)))
    {
        let mut matched = Vec::new();
        for &exp in q.experiment_ids {
            matched.extend(metric_scan(tree, exp, key, *ascending, k, &admits)?);
        }
        return Ok(page::slice(
            top_k(matched, k, |a, b| runs::compare(&order, a, b)),
            offset,
            q.limit,
        ));
    }
    let candidates = candidates(tree, q.experiment_ids, hint.as_ref())?;
    let mut seen = HashSet::with_capacity(candidates.len());
    let mut matched = Vec::new();
    for id in candidates {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(r) = projection::load_run(tree, &id)?
            && admits(&r)
        {
            matched.push(r);
        }
    }
    Ok(page::slice(
        top_k(matched, k, |a, b| runs::compare(&order, a, b)),
        offset,
        q.limit,
    ))
}

/// The runs an index hint names (every run of the experiments without one), possibly
/// with repeats; each is still to be tested against the whole filter.
fn candidates(
    tree: &sled::Tree,
    experiment_ids: &[u64],
    hint: Option<&runs::IndexHint<'_>>,
) -> Result<Vec<String>, Error> {
    Ok(match hint {
        Some(runs::IndexHint::RunIds(ids)) => ids.iter().map(|id| (*id).clone()).collect(),
        Some(runs::IndexHint::Root(root)) => members(tree, keys::DESCENDANT, root)?,
        Some(runs::IndexHint::Parent(parent)) => members(tree, keys::CHILD, parent)?,
        // An exact name is a seek: its index keys begin with it.
        Some(runs::IndexHint::Name(runs::StrTest::Eq(name))) => {
            under(tree, experiment_ids, |exp| keys::runs_named(exp, name))?
        }
        Some(runs::IndexHint::Name(test)) => {
            let mut out = Vec::new();
            for &exp in experiment_ids {
                for k in tree.keys_with_prefix(&keys::runs_by_name(exp))? {
                    let (name, run) = keys::name_and_run(&k)
                        .ok_or_else(|| Error::Corrupt("name index".into()))?;
                    if test.check(Some(&String::from_utf8_lossy(name))) {
                        out.push(String::from_utf8_lossy(run).into_owned());
                    }
                }
            }
            out
        }
        Some(runs::IndexHint::Param(key, value)) => under(tree, experiment_ids, |exp| {
            keys::param_value(exp, key, value)
        })?,
        None => {
            let mut out = Vec::new();
            for &exp in experiment_ids {
                out.extend(projection::experiment_run_ids(tree, exp)?);
            }
            out
        }
    })
}

/// The run ids that end the index keys under `prefix(experiment)`, for each experiment.
fn under(
    tree: &sled::Tree,
    experiment_ids: &[u64],
    prefix: impl Fn(u64) -> Vec<u8>,
) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for &exp in experiment_ids {
        let prefix = prefix(exp);
        for k in tree.keys_with_prefix(&prefix)? {
            out.push(keys::member_of(&k, prefix.len()));
        }
    }
    Ok(out)
}

/// The first `k` admitted runs of one experiment in the order of metric `key` (numbers
/// by the direction, then NaN), plus any that tie with the k-th, so that sorting the
/// union by the full ordering is exact.
fn metric_scan(
    tree: &sled::Tree,
    experiment_id: u64,
    key: &str,
    ascending: bool,
    k: usize,
    admits: &impl Fn(&RunRecord) -> bool,
) -> Result<Vec<RunRecord>, Error> {
    let prefix = keys::metric_values(experiment_id, key);
    let mut numbers = prefix.clone();
    numbers.push(0);
    let mut nans = prefix.clone();
    nans.push(1);
    let numbers = tree.scan_prefix(&numbers).keys();
    let nans = tree.scan_prefix(&nans).keys();
    let ordered: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = if ascending {
        Box::new(numbers.chain(nans))
    } else {
        Box::new(numbers.rev().chain(nans))
    };
    // Rank byte and value: the part of a key that ties compare.
    let value_end = prefix.len() + 9;
    let mut matched = Vec::new();
    let mut boundary: Option<Vec<u8>> = None;
    for entry in ordered {
        let entry = entry?;
        let Some(value) = entry.get(prefix.len()..value_end) else {
            return Err(Error::Corrupt("metric value index".into()));
        };
        if let Some(b) = &boundary
            && b.as_slice() != value
        {
            break;
        }
        let run_id = keys::member_of(&entry, value_end);
        if let Some(r) = projection::load_run(tree, &run_id)?
            && admits(&r)
        {
            matched.push(r);
            if matched.len() == k {
                boundary = Some(value.to_vec());
            }
        }
    }
    Ok(matched)
}

fn members(tree: &sled::Tree, table: u8, owner: &str) -> Result<Vec<String>, Error> {
    let prefix = keys::members(table, owner);
    Ok(tree
        .keys_with_prefix(&prefix)?
        .iter()
        .map(|k| keys::member_of(k, prefix.len()))
        .collect())
}

/// Reads runs in (start_time DESC, run_id ASC) order from the start-time index of each
/// experiment, merged, from just after `after`, until `limit + 1` are admitted.
fn ordered_scan(
    tree: &sled::Tree,
    experiment_ids: &[u64],
    wanted: impl Fn(&str) -> bool,
    admits: impl Fn(&RunRecord) -> bool,
    limit: usize,
    after: Option<(i64, String)>,
) -> Result<(Vec<RunRecord>, Option<String>), Error> {
    let mut exps: Vec<u64> = experiment_ids.to_vec();
    exps.sort_unstable();
    exps.dedup();
    let mut heads = Vec::new();
    for exp in exps {
        let start = match &after {
            Some((t, id)) => Bound::Excluded(keys::run_by_start(exp, *t, id)),
            None => Bound::Included(keys::runs_by_start(exp)),
        };
        let end = Bound::Excluded(keys::runs_by_start_end(exp));
        let mut iter = tree.range::<Vec<u8>, _>((start, end)).keys().peekable();
        let prefix_len = keys::runs_by_start(exp).len();
        let first = iter.next().transpose()?;
        heads.push((first, iter, prefix_len));
    }
    let mut out = Vec::new();
    loop {
        // The smallest head key (after the experiment part) comes next.
        let best = heads
            .iter()
            .enumerate()
            .filter_map(|(i, (k, _, plen))| k.as_ref().map(|k| (i, &k[*plen..])))
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let (head, iter, plen) = &mut heads[i];
        let key = head
            .take()
            .ok_or_else(|| Error::Corrupt("start index".into()))?;
        let run_id = keys::member_of(&key, *plen + 8);
        *head = iter.next().transpose()?;
        if !wanted(&run_id) {
            continue;
        }
        if let Some(r) = projection::load_run(tree, &run_id)?
            && admits(&r)
        {
            if out.len() == limit {
                let last: &RunRecord = &out[limit - 1];
                let next = page::encode(Position::After(last.start_time, last.run_id.clone()));
                return Ok((out, Some(next)));
            }
            out.push(r);
        }
    }
    Ok((out, None))
}

pub(crate) fn search_experiments(
    tree: &sled::Tree,
    view: ViewType,
    filter: &str,
    order_by: &[String],
    limit: usize,
    page_token: &str,
    visible: &dyn Fn(u64) -> bool,
) -> Result<(Vec<ExperimentRecord>, Option<String>), Error> {
    let clauses = experiments::compile_filter(filter)?;
    let order = experiments::compile_order(order_by)?;
    let offset = page::decode_offset(page_token)?;
    let mut all = Vec::new();
    for kv in tree.scan_prefix([keys::EXPERIMENT]) {
        let (_, v) = kv?;
        let e = <ExperimentRecord as prost::Message>::decode(v.as_ref())?;
        if view.admits(e.deleted) && visible(e.id) && clauses.iter().all(|c| c.matches(&e)) {
            all.push(e);
        }
    }
    let k = offset.saturating_add(limit).saturating_add(1);
    let best = top_k(all, k, |a, b| experiments::compare(&order, a, b));
    let total = best.len();
    let page: Vec<ExperimentRecord> = best.into_iter().skip(offset).take(limit).collect();
    let next =
        (offset + page.len() < total).then(|| page::encode(Position::Offset(offset + page.len())));
    Ok((page, next))
}
