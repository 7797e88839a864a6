//! Parsing filter strings and `order_by` entries into comparisons, MLflow's way: a
//! conjunction (`AND` only) of `<identifier> <comparator> <value>`, identifiers of the
//! form `<entity>.<key>` split on the first dot (`tags.mlflow.parentRunId`), keys that
//! may be backticked or quoted, a bare key meaning an attribute.

use super::lexer::{Tok, Token, error_at, lex};
use crate::domain::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
    Dataset,
}

#[derive(Debug, Clone)]
pub(crate) struct Ident {
    pub entity: Entity,
    /// The entity as written (`attributes`, `tag`, ...); empty for a bare key.
    pub written: String,
    pub key: String,
    pub pos: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

impl Op {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(String),
    Num(f64),
    List(Vec<String>),
    None,
}

#[derive(Debug, Clone)]
pub(crate) struct Comparison {
    pub ident: Ident,
    pub op: Op,
    pub op_pos: usize,
    pub value: Value,
    pub value_pos: usize,
}

/// One `order_by` entry.
#[derive(Debug, Clone)]
pub(crate) struct OrderTerm {
    pub ident: Ident,
    pub ascending: bool,
}

struct Parser<'a> {
    input: &'a str,
    toks: Vec<Token>,
    i: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Result<Self, Error> {
        Ok(Parser {
            input,
            toks: lex(input)?,
            i: 0,
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.input.len(), |t| t.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.i).cloned();
        self.i += 1;
        t
    }

    fn err(&self, pos: usize, msg: impl std::fmt::Display) -> Error {
        error_at(self.input, pos, msg)
    }

    fn expected(&self, what: &str) -> Error {
        match self.toks.get(self.i) {
            Some(t) => self.err(
                t.pos,
                format!("expected {what}, found {}", t.tok.describe()),
            ),
            None => self.err(self.input.len(), format!("expected {what}, found the end")),
        }
    }

    fn entity(&self, written: &str, pos: usize) -> Result<Entity, Error> {
        Ok(match written.to_ascii_lowercase().as_str() {
            "metric" | "metrics" => Entity::Metric,
            "parameter" | "parameters" | "param" | "params" => Entity::Param,
            "tag" | "tags" => Entity::Tag,
            "attribute" | "attributes" | "attr" | "run" => Entity::Attribute,
            "dataset" | "datasets" => Entity::Dataset,
            _ => {
                return Err(self.err(
                    pos,
                    format!(
                        "invalid entity type '{written}'; expected metrics, params, tags, attributes or datasets (or one of their aliases)"
                    ),
                ));
            }
        })
    }

    /// The key after `<entity>.`: a word, a backticked name or a quoted string.
    fn key(&mut self) -> Result<String, Error> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            Some(Tok::Backtick(w) | Tok::Str(w)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            _ => Err(self.expected("a key after the entity's '.'")),
        }
    }

    fn ident(&mut self) -> Result<Ident, Error> {
        let pos = self.pos();
        let (written, key) = match self.next().map(|t| t.tok) {
            Some(Tok::Word(w)) => {
                if let Some(entity) = w.strip_suffix('.') {
                    (entity.to_string(), self.key()?)
                } else if let Some((entity, key)) = w.split_once('.') {
                    (entity.to_string(), key.to_string())
                } else if self.peek() == Some(&Tok::Dot) {
                    self.i += 1;
                    (w, self.key()?)
                } else {
                    (String::new(), w)
                }
            }
            Some(Tok::Backtick(w)) => {
                if self.peek() == Some(&Tok::Dot) {
                    self.i += 1;
                    (w, self.key()?)
                } else if let Some(Tok::Word(k)) = self.peek().cloned()
                    && let Some(k) = k.strip_prefix('.')
                {
                    self.i += 1;
                    (w, k.to_string())
                } else {
                    (String::new(), w)
                }
            }
            Some(Tok::LParen) => {
                return Err(self.err(
                    pos,
                    "parentheses for grouping are not supported (only AND between comparisons)",
                ));
            }
            _ => {
                self.i -= 1;
                return Err(self.expected(
                    "an identifier such as metrics.<key>, params.<key>, tags.<key> or an attribute",
                ));
            }
        };
        if key.is_empty() {
            return Err(self.err(pos, "the key is empty"));
        }
        let entity = if written.is_empty() {
            Entity::Attribute
        } else {
            self.entity(&written, pos)?
        };
        Ok(Ident {
            entity,
            written,
            key,
            pos,
        })
    }

    fn op(&mut self) -> Result<(Op, usize), Error> {
        let pos = self.pos();
        let op = match self.next().map(|t| t.tok) {
            Some(Tok::Op("=")) => Op::Eq,
            Some(Tok::Op("!=")) => Op::Ne,
            Some(Tok::Op("<")) => Op::Lt,
            Some(Tok::Op("<=")) => Op::Le,
            Some(Tok::Op(">")) => Op::Gt,
            Some(Tok::Op(">=")) => Op::Ge,
            Some(t) if t.is_kw("like") => Op::Like,
            Some(t) if t.is_kw("ilike") => Op::ILike,
            Some(t) if t.is_kw("in") => Op::In,
            Some(t) if t.is_kw("not") => match self.next().map(|t| t.tok) {
                Some(t) if t.is_kw("in") => Op::NotIn,
                _ => {
                    self.i -= 1;
                    return Err(self.expected("IN after NOT"));
                }
            },
            Some(t) if t.is_kw("is") => {
                let negated = matches!(self.peek(), Some(t) if t.is_kw("not"));
                if negated {
                    self.i += 1;
                }
                match self.next().map(|t| t.tok) {
                    Some(t) if t.is_kw("null") => {
                        if negated {
                            Op::IsNotNull
                        } else {
                            Op::IsNull
                        }
                    }
                    _ => {
                        self.i -= 1;
                        return Err(self.expected("NULL after IS"));
                    }
                }
            }
            _ => {
                self.i -= 1;
                return Err(self.expected(
                    "a comparator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL)",
                ));
            }
        };
        Ok((op, pos))
    }

    fn value(&mut self, op: Op) -> Result<(Value, usize), Error> {
        let pos = self.pos();
        match op {
            Op::IsNull | Op::IsNotNull => Ok((Value::None, pos)),
            Op::In | Op::NotIn => {
                if self.next().map(|t| t.tok) != Some(Tok::LParen) {
                    self.i -= 1;
                    return Err(self.expected("'(' to open the list"));
                }
                let mut items = Vec::new();
                loop {
                    match self.next().map(|t| t.tok) {
                        Some(Tok::Str(s)) => items.push(s),
                        _ => {
                            self.i -= 1;
                            return Err(self.expected("a quoted string in the list"));
                        }
                    }
                    match self.next().map(|t| t.tok) {
                        Some(Tok::Comma) => {}
                        Some(Tok::RParen) => break,
                        _ => {
                            self.i -= 1;
                            return Err(self.expected("',' or ')' in the list"));
                        }
                    }
                }
                Ok((Value::List(items), pos))
            }
            _ => {
                match self.next().map(|t| t.tok) {
                    Some(Tok::Str(s)) => Ok((Value::Str(s), pos)),
                    Some(Tok::Number(n)) => Ok((Value::Num(n), pos)),
                    Some(Tok::Word(w)) if !w.eq_ignore_ascii_case("and") => {
                        // An unquoted word: MLflow wants strings quoted.
                        Err(self.err(
                        pos,
                        format!("the value '{w}' is not quoted; use single or double quotes for strings"),
                    ))
                    }
                    _ => {
                        self.i -= 1;
                        Err(self.expected("a value"))
                    }
                }
            }
        }
    }
}

/// Parses a filter into its comparisons; an empty filter has none.
pub(crate) fn parse_filter(input: &str) -> Result<Vec<Comparison>, Error> {
    let mut p = Parser::new(input)?;
    let mut out = Vec::new();
    if p.toks.is_empty() {
        return Ok(out);
    }
    loop {
        let ident = p.ident()?;
        let (op, op_pos) = p.op()?;
        let (value, value_pos) = p.value(op)?;
        out.push(Comparison {
            ident,
            op,
            op_pos,
            value,
            value_pos,
        });
        match p.next().map(|t| t.tok) {
            None => return Ok(out),
            Some(t) if t.is_kw("and") => {}
            Some(t) if t.is_kw("or") => {
                p.i -= 1;
                return Err(p.err(
                    p.pos(),
                    "Invalid clause(s) in filter string: 'OR' (only AND is supported)",
                ));
            }
            _ => {
                p.i -= 1;
                return Err(p.expected("AND or the end of the filter"));
            }
        }
    }
}

/// Parses one `order_by` entry: `<identifier> [ASC|DESC]`.
pub(crate) fn parse_order_term(input: &str) -> Result<OrderTerm, Error> {
    let mut p = Parser::new(input)?;
    if p.toks.is_empty() {
        return Err(p.err(0, "the order_by entry is empty"));
    }
    let ident = p.ident()?;
    let ascending = match p.next().map(|t| t.tok) {
        None => true,
        Some(t) if t.is_kw("asc") => true,
        Some(t) if t.is_kw("desc") => false,
        _ => {
            p.i -= 1;
            return Err(p.expected("ASC, DESC or the end"));
        }
    };
    if p.peek().is_some() {
        return Err(p.expected("the end of the order_by entry"));
    }
    Ok(OrderTerm { ident, ascending })
}
