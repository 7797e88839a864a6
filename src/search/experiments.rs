//! Experiments: MLflow's `SearchExperiments` filter (attributes `name`, `experiment_id`,
//! `creation_time`, `last_update_time`, and tags) and ordering.

use std::cmp::Ordering;

use super::lexer::error_at;
use super::parser::{Entity, Op, parse_filter, parse_order_term};
use super::runs::{NumOp, StrTest, number, str_test};
use crate::domain::Error;
use crate::projection::ExperimentRecord;

pub(crate) enum Clause {
    Name(StrTest),
    Id(StrTest),
    Time {
        last_update: bool,
        op: NumOp,
        value: f64,
    },
    Tag {
        key: String,
        test: StrTest,
    },
}

fn entity_ok(input: &str, ident: &super::parser::Ident) -> Result<(), Error> {
    // MLflow accepts `attribute.` and `tag(s).` here, but not `attributes.`.
    let ok = match ident.entity {
        Entity::Attribute => {
            ident.written.is_empty() || ident.written.eq_ignore_ascii_case("attribute")
        }
        Entity::Tag => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(error_at(
            input,
            ident.pos,
            format!(
                "invalid entity '{}' for experiments; expected an attribute (name, experiment_id, creation_time, last_update_time) or tags.<key>",
                ident.written
            ),
        ))
    }
}

pub(crate) fn compile_filter(input: &str) -> Result<Vec<Clause>, Error> {
    let mut out = Vec::new();
    for c in parse_filter(input)? {
        entity_ok(input, &c.ident)?;
        let key = c.ident.key.clone();
        out.push(match (c.ident.entity, key.as_str()) {
            (Entity::Tag, _) => Clause::Tag {
                test: str_test(input, &c, &[Op::Eq, Op::Ne, Op::Like, Op::ILike, Op::IsNull, Op::IsNotNull], &format!("tag '{key}'"))?,
                key,
            },
            (_, "name") => Clause::Name(str_test(input, &c, &[Op::Eq, Op::Ne, Op::Like, Op::ILike], "attribute 'name'")?),
            (_, "experiment_id") => Clause::Id(str_test(input, &c, &[Op::Eq, Op::Ne, Op::In, Op::NotIn], "attribute 'experiment_id'")?),
            (_, "creation_time" | "last_update_time") => {
                let (op, value) = number(input, &c, &format!("attribute '{key}'"))?;
                Clause::Time { last_update: key == "last_update_time", op, value }
            }
            _ => {
                return Err(error_at(
                    input,
                    c.ident.pos,
                    format!("invalid attribute key '{key}'; expected name, experiment_id, creation_time or last_update_time"),
                ));
            }
        });
    }
    Ok(out)
}

impl Clause {
    pub(crate) fn matches(&self, e: &ExperimentRecord) -> bool {
        match self {
            Clause::Name(t) => t.check(Some(&e.name)),
            Clause::Id(t) => t.check(Some(&e.id.to_string())),
            Clause::Time {
                last_update,
                op,
                value,
            } => {
                let t = if *last_update {
                    e.last_update_time
                } else {
                    e.creation_time
                };
                op.check(t as f64, *value)
            }
            Clause::Tag { key, test } => test.check(e.tags.get(key).map(String::as_str)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Name,
    Id,
    CreationTime,
    LastUpdateTime,
}

/// The given keys, then `creation_time DESC` is MLflow's default, and `experiment_id ASC`
/// breaks ties.
pub(crate) fn compile_order(order_by: &[String]) -> Result<Vec<(Field, bool)>, Error> {
    let mut keys: Vec<(Field, bool)> = Vec::new();
    for entry in order_by {
        let term = parse_order_term(entry)?;
        entity_ok(entry, &term.ident)?;
        let field = match (term.ident.entity, term.ident.key.as_str()) {
            (Entity::Attribute, "name") => Field::Name,
            (Entity::Attribute, "experiment_id") => Field::Id,
            (Entity::Attribute, "creation_time") => Field::CreationTime,
            (Entity::Attribute, "last_update_time") => Field::LastUpdateTime,
            _ => {
                return Err(error_at(
                    entry,
                    term.ident.pos,
                    "experiments can be ordered by name, experiment_id, creation_time or last_update_time",
                ));
            }
        };
        if keys.iter().any(|(f, _)| *f == field) {
            return Err(Error::invalid(format!(
                "`order_by` contains duplicate fields: {order_by:?}"
            )));
        }
        keys.push((field, term.ascending));
    }
    if keys.is_empty() {
        keys.push((Field::CreationTime, false));
    }
    if !keys.iter().any(|(f, _)| *f == Field::Id) {
        keys.push((Field::Id, true));
    }
    Ok(keys)
}

pub(crate) fn compare(
    keys: &[(Field, bool)],
    a: &ExperimentRecord,
    b: &ExperimentRecord,
) -> Ordering {
    for &(field, ascending) in keys {
        let o = match field {
            Field::Name => a.name.cmp(&b.name),
            Field::Id => a.id.cmp(&b.id),
            Field::CreationTime => a.creation_time.cmp(&b.creation_time),
            Field::LastUpdateTime => a.last_update_time.cmp(&b.last_update_time),
        };
        let o = if ascending { o } else { o.reverse() };
        if o.is_ne() {
            return o;
        }
    }
    Ordering::Equal
}
