//! Runs: compiling comparisons into typed clauses (refusing what MLflow refuses),
//! evaluating them on a run, and MLflow's ordering with its null and NaN placement.

use std::cmp::Ordering;
use std::collections::HashSet;

use super::lexer::error_at;
use super::like::Pattern;
use super::parser::{
    Comparison, Entity, Ident, Op, OrderTerm, Value, parse_filter, parse_order_term,
};
use crate::domain::{Error, TAG_PARENT_RUN_ID, TAG_ROOT_RUN_ID, TAG_RUN_NAME, mlflow_stored};
use crate::projection::RunRecord;

/// A test on a string that may be absent.
pub(crate) enum StrTest {
    Eq(String),
    Ne(String),
    Like(Pattern),
    ILike(Pattern),
    In(HashSet<String>),
    NotIn(HashSet<String>),
    IsNull,
    IsNotNull,
}

impl StrTest {
    /// SQL semantics: every comparison but IS NULL needs a value to be present.
    pub(crate) fn check(&self, v: Option<&str>) -> bool {
        match (self, v) {
            (StrTest::IsNull, v) => v.is_none(),
            (StrTest::IsNotNull, v) => v.is_some(),
            (_, None) => false,
            (StrTest::Eq(s), Some(v)) => v == s,
            (StrTest::Ne(s), Some(v)) => v != s,
            (StrTest::Like(p), Some(v)) => p.matches(v, false),
            (StrTest::ILike(p), Some(v)) => p.matches(v, true),
            (StrTest::In(set), Some(v)) => set.contains(v),
            (StrTest::NotIn(set), Some(v)) => !set.contains(v),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl NumOp {
    pub(crate) fn check(self, a: f64, b: f64) -> bool {
        match self {
            NumOp::Eq => a == b,
            NumOp::Ne => a != b,
            NumOp::Lt => a < b,
            NumOp::Le => a <= b,
            NumOp::Gt => a > b,
            NumOp::Ge => a >= b,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RunAttr {
    RunId,
    RunName,
    Status,
    UserId,
    ArtifactUri,
    StartTime,
    EndTime,
}

impl RunAttr {
    fn parse(key: &str) -> Option<RunAttr> {
        Some(match key {
            "run_id" => RunAttr::RunId,
            "run_name" | "run name" | "Run name" | "Run Name" => RunAttr::RunName,
            "status" => RunAttr::Status,
            "user_id" => RunAttr::UserId,
            "artifact_uri" => RunAttr::ArtifactUri,
            "start_time" | "created" | "Created" => RunAttr::StartTime,
            "end_time" => RunAttr::EndTime,
            _ => return None,
        })
    }

    fn numeric(self) -> bool {
        matches!(self, RunAttr::StartTime | RunAttr::EndTime)
    }

    /// The attribute as filters see it. The run name is read from the `mlflow.runName`
    /// tag, as MLflow's filters do: after that tag is deleted no name filter matches
    /// the run, though the run keeps its name.
    fn text(self, r: &RunRecord) -> Option<&str> {
        Some(match self {
            RunAttr::RunId => &r.run_id,
            RunAttr::RunName => return r.tags.get(TAG_RUN_NAME).map(String::as_str),
            RunAttr::Status => r.status().name(),
            RunAttr::UserId => &r.user_id,
            RunAttr::ArtifactUri => &r.artifact_uri,
            RunAttr::StartTime | RunAttr::EndTime => return None,
        })
    }

    /// The attribute as `order_by` sees it: the run's own name, whatever its tag.
    fn sort_text(self, r: &RunRecord) -> Option<&str> {
        match self {
            RunAttr::RunName => Some(&r.run_name),
            other => other.text(r),
        }
    }

    fn number(self, r: &RunRecord) -> Option<i64> {
        match self {
            RunAttr::StartTime => Some(r.start_time),
            RunAttr::EndTime => r.end_time,
            _ => None,
        }
    }
}

const SEARCHABLE: &str =
    "run_id, run_name, status, user_id, artifact_uri, start_time, end_time, created";

#[derive(Clone, Copy)]
pub(crate) enum DatasetField {
    Name,
    Digest,
    Context,
}

pub(crate) enum Clause {
    Metric {
        key: String,
        op: NumOp,
        value: f64,
    },
    Param {
        key: String,
        test: StrTest,
    },
    Tag {
        key: String,
        test: StrTest,
    },
    Text {
        attr: RunAttr,
        test: StrTest,
    },
    Time {
        attr: RunAttr,
        op: NumOp,
        value: f64,
    },
    /// Matches when any of the run's dataset inputs does.
    Dataset {
        field: DatasetField,
        test: StrTest,
    },
}

pub(crate) fn num_op(op: Op) -> Option<NumOp> {
    Some(match op {
        Op::Eq => NumOp::Eq,
        Op::Ne => NumOp::Ne,
        Op::Lt => NumOp::Lt,
        Op::Le => NumOp::Le,
        Op::Gt => NumOp::Gt,
        Op::Ge => NumOp::Ge,
        _ => return None,
    })
}

/// Builds a string test, checking the comparator is among `allowed`.
pub(crate) fn str_test(
    input: &str,
    c: &Comparison,
    allowed: &[Op],
    what: &str,
) -> Result<StrTest, Error> {
    if !allowed.contains(&c.op) {
        let list: Vec<&str> = allowed.iter().map(|o| o.text()).collect();
        return Err(error_at(
            input,
            c.op_pos,
            format!(
                "'{}' is not allowed for {what}; expected one of {}",
                c.op.text(),
                list.join(", ")
            ),
        ));
    }
    let s = |v: &Value| match v {
        Value::Str(s) => Ok(s.clone()),
        Value::Num(n) => Err(error_at(
            input,
            c.value_pos,
            format!("the value {n} for {what} must be a quoted string"),
        )),
        _ => Err(error_at(
            input,
            c.value_pos,
            format!("expected a quoted string for {what}"),
        )),
    };
    Ok(match c.op {
        Op::Eq => StrTest::Eq(s(&c.value)?),
        Op::Ne => StrTest::Ne(s(&c.value)?),
        Op::Like => StrTest::Like(Pattern::new(&s(&c.value)?, false)),
        Op::ILike => StrTest::ILike(Pattern::new(&s(&c.value)?, true)),
        Op::IsNull => StrTest::IsNull,
        Op::IsNotNull => StrTest::IsNotNull,
        Op::In | Op::NotIn => {
            let Value::List(items) = &c.value else {
                return Err(error_at(input, c.value_pos, "expected a list"));
            };
            let set = items.iter().cloned().collect();
            if c.op == Op::In {
                StrTest::In(set)
            } else {
                StrTest::NotIn(set)
            }
        }
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            return Err(error_at(
                input,
                c.op_pos,
                format!("'{}' needs a number", c.op.text()),
            ));
        }
    })
}

pub(crate) fn number(input: &str, c: &Comparison, what: &str) -> Result<(NumOp, f64), Error> {
    let Some(op) = num_op(c.op) else {
        return Err(error_at(
            input,
            c.op_pos,
            format!(
                "'{}' is not allowed for {what}; expected one of =, !=, <, <=, >, >=",
                c.op.text()
            ),
        ));
    };
    match c.value {
        Value::Num(n) => Ok((op, n)),
        _ => Err(error_at(
            input,
            c.value_pos,
            format!("expected a number for {what}"),
        )),
    }
}

const STRING_OPS: &[Op] = &[
    Op::Eq,
    Op::Ne,
    Op::Like,
    Op::ILike,
    Op::IsNull,
    Op::IsNotNull,
];

pub(crate) fn compile_filter(input: &str) -> Result<Vec<Clause>, Error> {
    let mut out = Vec::new();
    for c in parse_filter(input)? {
        let key = c.ident.key.clone();
        out.push(match c.ident.entity {
            Entity::Metric => {
                let (op, value) = number(input, &c, &format!("metric '{key}'"))?;
                Clause::Metric { key, op, value }
            }
            Entity::Param => Clause::Param {
                test: str_test(input, &c, STRING_OPS, &format!("param '{key}'"))?,
                key,
            },
            Entity::Tag => Clause::Tag {
                test: str_test(input, &c, STRING_OPS, &format!("tag '{key}'"))?,
                key,
            },
            Entity::Attribute => {
                let Some(attr) = RunAttr::parse(&key) else {
                    return Err(error_at(
                        input,
                        c.ident.pos,
                        format!("invalid attribute key '{key}'; searchable attributes are {SEARCHABLE}"),
                    ));
                };
                if attr.numeric() {
                    let (op, value) = number(input, &c, &format!("attribute '{key}'"))?;
                    Clause::Time { attr, op, value }
                } else {
                    let allowed: &[Op] = if attr == RunAttr::RunId {
                        &[Op::Eq, Op::Ne, Op::Like, Op::ILike, Op::In, Op::NotIn]
                    } else {
                        &[Op::Eq, Op::Ne, Op::Like, Op::ILike]
                    };
                    if matches!(c.op, Op::In | Op::NotIn) && attr != RunAttr::RunId {
                        return Err(error_at(
                            input,
                            c.op_pos,
                            "only the run_id attribute supports comparison with a list (IN, NOT IN)",
                        ));
                    }
                    Clause::Text {
                        attr,
                        test: str_test(input, &c, allowed, &format!("attribute '{key}'"))?,
                    }
                }
            }
            Entity::Dataset => {
                if !matches!(key.as_str(), "name" | "digest" | "context") {
                    return Err(error_at(
                        input,
                        c.ident.pos,
                        format!("invalid dataset key '{key}'; expected name, digest or context"),
                    ));
                }
                let field = match key.as_str() {
                    "name" => DatasetField::Name,
                    "digest" => DatasetField::Digest,
                    _ => DatasetField::Context,
                };
                Clause::Dataset {
                    field,
                    test: str_test(
                        input,
                        &c,
                        &[Op::Eq, Op::Ne, Op::Like, Op::ILike, Op::In, Op::NotIn],
                        &format!("dataset '{key}'"),
                    )?,
                }
            }
        });
    }
    Ok(out)
}

impl Clause {
    pub(crate) fn matches(&self, r: &RunRecord) -> bool {
        match self {
            // IEEE comparisons, as `mlflow server` answers (checked side by side in
            // tests/python/test_against_mlflow_server.py): a NaN matches only `!=`.
            Clause::Metric { key, op, value } => r
                .latest_metrics
                .get(key)
                .is_some_and(|m| op.check(mlflow_stored(m.value), *value)),
            Clause::Param { key, test } => test.check(r.params.get(key).map(String::as_str)),
            Clause::Tag { key, test } => test.check(r.tags.get(key).map(String::as_str)),
            Clause::Text { attr, test } => test.check(attr.text(r)),
            Clause::Time { attr, op, value } => {
                attr.number(r).is_some_and(|t| op.check(t as f64, *value))
            }
            Clause::Dataset { field, test } => r.dataset_inputs.iter().any(|d| {
                let value = match field {
                    DatasetField::Name => d.dataset.as_ref().map(|x| x.name.as_str()),
                    DatasetField::Digest => d.dataset.as_ref().map(|x| x.digest.as_str()),
                    DatasetField::Context => d
                        .tags
                        .iter()
                        .find(|t| t.key == crate::domain::INPUT_TAG_CONTEXT)
                        .map(|t| t.value.as_str()),
                };
                test.check(value)
            }),
        }
    }

    /// Whether only runs that have metric `key` can match.
    pub(crate) fn requires_metric(&self, key: &str) -> bool {
        matches!(self, Clause::Metric { key: k, .. } if k == key)
    }

    /// The run ids an index can give for this clause: `Some` means only these can match.
    pub(crate) fn index_hint(&self) -> Option<IndexHint<'_>> {
        match self {
            Clause::Text {
                attr: RunAttr::RunId,
                test: StrTest::Eq(id),
            } => Some(IndexHint::RunIds(vec![id])),
            Clause::Text {
                attr: RunAttr::RunId,
                test: StrTest::In(ids),
            } => Some(IndexHint::RunIds(ids.iter().collect())),
            Clause::Tag {
                key,
                test: StrTest::Eq(v),
            } if key == TAG_ROOT_RUN_ID => Some(IndexHint::Root(v)),
            Clause::Tag {
                key,
                test: StrTest::Eq(v),
            } if key == TAG_PARENT_RUN_ID => Some(IndexHint::Parent(v)),
            Clause::Param {
                key,
                test: StrTest::Eq(v),
            } => Some(IndexHint::Param(key, v)),
            Clause::Tag { key, test }
                if key == TAG_RUN_NAME && !matches!(test, StrTest::IsNull) =>
            {
                Some(IndexHint::Name(test))
            }
            Clause::Text {
                attr: RunAttr::RunName,
                test,
            } => Some(IndexHint::Name(test)),
            _ => None,
        }
    }
}

pub(crate) enum IndexHint<'a> {
    RunIds(Vec<&'a String>),
    Root(&'a str),
    Parent(&'a str),
    Param(&'a str, &'a str),
    /// A test on the run name, answered from the name index.
    Name(&'a StrTest),
}

impl IndexHint<'_> {
    /// Lower is more selective.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            IndexHint::RunIds(_) => 0,
            IndexHint::Parent(_) => 1,
            IndexHint::Root(_) => 2,
            IndexHint::Param(..) => 3,
            IndexHint::Name(_) => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum SortField {
    Metric(String),
    Param(String),
    Tag(String),
    Attr(RunAttr),
}

#[derive(Debug, Clone)]
pub(crate) struct SortKey {
    pub field: SortField,
    pub ascending: bool,
}

fn sort_field(input: &str, ident: &Ident) -> Result<SortField, Error> {
    Ok(match ident.entity {
        Entity::Metric => SortField::Metric(ident.key.clone()),
        Entity::Param => SortField::Param(ident.key.clone()),
        Entity::Tag => SortField::Tag(ident.key.clone()),
        Entity::Attribute => SortField::Attr(RunAttr::parse(&ident.key).ok_or_else(|| {
            error_at(
                input,
                ident.pos,
                format!(
                    "invalid order_by attribute '{}'; expected one of {SEARCHABLE}",
                    ident.key
                ),
            )
        })?),
        Entity::Dataset => {
            return Err(error_at(
                input,
                ident.pos,
                "datasets cannot be used in order_by",
            ));
        }
    })
}

/// The full ordering: the given keys, then `start_time DESC` unless given, then
/// `run_id ASC` (MLflow's tie-break).
pub(crate) fn compile_order(order_by: &[String]) -> Result<Vec<SortKey>, Error> {
    let mut keys: Vec<SortKey> = Vec::new();
    for entry in order_by {
        let OrderTerm { ident, ascending } = parse_order_term(entry)?;
        let field = sort_field(entry, &ident)?;
        if keys.iter().any(|k| k.field == field) {
            return Err(Error::invalid(format!(
                "`order_by` contains duplicate fields: {order_by:?}"
            )));
        }
        keys.push(SortKey { field, ascending });
    }
    if !keys
        .iter()
        .any(|k| k.field == SortField::Attr(RunAttr::StartTime))
    {
        keys.push(SortKey {
            field: SortField::Attr(RunAttr::StartTime),
            ascending: false,
        });
    }
    if !keys
        .iter()
        .any(|k| k.field == SortField::Attr(RunAttr::RunId))
    {
        keys.push(SortKey {
            field: SortField::Attr(RunAttr::RunId),
            ascending: true,
        });
    }
    Ok(keys)
}

/// Whether the ordering is MLflow's default (`start_time DESC, run_id ASC`).
pub(crate) fn is_default_order(keys: &[SortKey]) -> bool {
    matches!(keys, [a, b] if a.field == SortField::Attr(RunAttr::StartTime) && !a.ascending
        && b.field == SortField::Attr(RunAttr::RunId) && b.ascending)
}

/// Compares one field: present values first (for metrics: numbers, then NaN, then
/// missing), whichever the direction; present values by the direction.
fn compare_field(key: &SortKey, a: &RunRecord, b: &RunRecord) -> Ordering {
    fn ranked<T>(v: Option<T>) -> (u8, Option<T>) {
        (u8::from(v.is_none()) * 2, v)
    }
    let directed = |o: Ordering| if key.ascending { o } else { o.reverse() };
    match &key.field {
        SortField::Metric(k) => {
            let rank = |r: &RunRecord| match r.latest_metrics.get(k) {
                Some(m) if m.value.is_nan() => (1, 0.0),
                Some(m) => (0, mlflow_stored(m.value)),
                None => (2, 0.0),
            };
            let (ra, va) = rank(a);
            let (rb, vb) = rank(b);
            ra.cmp(&rb).then_with(|| directed(va.total_cmp(&vb)))
        }
        SortField::Param(k) | SortField::Tag(k) => {
            let get = |r: &'_ RunRecord| -> Option<String> {
                match &key.field {
                    SortField::Param(_) => r.params.get(k).cloned(),
                    _ => r.tags.get(k).cloned(),
                }
            };
            let (ra, va) = ranked(get(a));
            let (rb, vb) = ranked(get(b));
            ra.cmp(&rb).then_with(|| directed(va.cmp(&vb)))
        }
        SortField::Attr(attr) if attr.numeric() => {
            let (ra, va) = ranked(attr.number(a));
            let (rb, vb) = ranked(attr.number(b));
            ra.cmp(&rb).then_with(|| directed(va.cmp(&vb)))
        }
        SortField::Attr(attr) => directed(attr.sort_text(a).cmp(&attr.sort_text(b))),
    }
}

pub(crate) fn compare(keys: &[SortKey], a: &RunRecord, b: &RunRecord) -> Ordering {
    keys.iter()
        .map(|k| compare_field(k, a, b))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::LatestMetric;

    fn run(id: &str, start: i64, loss: Option<f64>, param: Option<&str>) -> RunRecord {
        let mut r = RunRecord {
            run_id: id.into(),
            start_time: start,
            ..Default::default()
        };
        if let Some(v) = loss {
            r.latest_metrics.insert(
                "loss".into(),
                LatestMetric {
                    value: v,
                    ..Default::default()
                },
            );
        }
        if let Some(p) = param {
            r.params.insert("model".into(), p.into());
        }
        r.tags.insert("mlflow.runName".into(), format!("name-{id}"));
        r
    }

    fn order(order_by: &[&str], runs: &[RunRecord]) -> Vec<String> {
        let keys = compile_order(&order_by.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("an order");
        let mut runs = runs.to_vec();
        runs.sort_by(|a, b| compare(&keys, a, b));
        runs.into_iter().map(|r| r.run_id).collect()
    }

    fn matching(filter: &str, runs: &[RunRecord]) -> Vec<String> {
        let clauses = compile_filter(filter).expect("a filter");
        runs.iter()
            .filter(|r| clauses.iter().all(|c| c.matches(r)))
            .map(|r| r.run_id.clone())
            .collect()
    }

    fn runs() -> Vec<RunRecord> {
        vec![
            run("a", 3, Some(0.5), Some("cnn")),
            run("b", 1, Some(f64::NAN), Some("rnn")),
            run("c", 2, None, None),
            run("d", 2, Some(0.1), Some("cnn")),
        ]
    }

    /// MLflow's default: newest first, then run id; a metric sorts numbers by the
    /// direction, then NaN, then runs without it, whichever the direction.
    #[test]
    fn orderings_follow_mlflows_rules() {
        let runs = runs();
        assert_eq!(order(&[], &runs), ["a", "c", "d", "b"]);
        assert_eq!(order(&["metrics.loss ASC"], &runs), ["d", "a", "b", "c"]);
        assert_eq!(order(&["metrics.loss DESC"], &runs), ["a", "d", "b", "c"]);
        assert_eq!(order(&["params.model"], &runs), ["a", "d", "b", "c"]);
        assert_eq!(order(&["start_time ASC"], &runs), ["b", "c", "d", "a"]);
        assert!(is_default_order(&compile_order(&[]).expect("the default")));
        assert!(!is_default_order(
            &compile_order(&["metrics.loss".into()]).expect("an order")
        ));
    }

    #[test]
    fn orderings_that_cannot_be_are_refused() {
        for bad in [
            vec!["metrics.loss", "metrics.loss DESC"],
            vec!["attributes.nope"],
            vec!["datasets.name"],
            vec!["metrics.loss sideways"],
        ] {
            let bad: Vec<String> = bad.into_iter().map(String::from).collect();
            assert!(
                matches!(compile_order(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    /// Comparisons on metrics, params, tags and attributes, joined by AND; a run
    /// without the metric or param never matches a comparison on it.
    #[test]
    fn filters_select_what_mlflow_selects() {
        let runs = runs();
        assert_eq!(matching("", &runs), ["a", "b", "c", "d"]);
        assert_eq!(matching("metrics.loss < 0.3", &runs), ["d"]);
        assert_eq!(matching("metrics.loss >= 0.1", &runs), ["a", "d"]);
        assert_eq!(matching("params.model = 'cnn'", &runs), ["a", "d"]);
        assert_eq!(matching("params.model != 'cnn'", &runs), ["b"]);
        assert_eq!(
            matching("params.model LIKE '%nn' AND metrics.loss > 0.2", &runs),
            ["a"]
        );
        assert_eq!(matching("tags.mlflow.runName ILIKE 'NAME-C'", &runs), ["c"]);
        assert_eq!(
            matching("attributes.run_id IN ('b', 'c')", &runs),
            ["b", "c"]
        );
    }

    #[test]
    fn filters_that_cannot_be_are_refused_with_the_position() {
        for bad in [
            "metrics.loss < 'text'",
            "params.model > 1",
            "nope.x = 1",
            "metrics.loss <",
            "params.model = 'a' OR params.model = 'b'",
        ] {
            match compile_filter(bad) {
                Err(Error::InvalidArgument(m)) => assert!(!m.is_empty(), "{bad}"),
                other => panic!("{bad}: {:?}", other.map(|c| c.len())),
            }
        }
    }
}
