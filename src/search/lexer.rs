//! Tokens of MLflow's filter language (the subset of SQL that `sqlparse` accepts there),
//! each with its byte position, so errors can say where they are.

use crate::domain::Error;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A bare word: letters, digits, `_`, `.`, `:`, `-` inside it (`tags.mlflow.runName`).
    Word(String),
    /// `` `...` ``
    Backtick(String),
    /// `'...'` or `"..."`, contents verbatim.
    Str(String),
    Number(f64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Dot,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Backtick(w) => format!("`{w}`"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Number(n) => format!("number {n}"),
            Tok::Op(o) => format!("'{o}'"),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Dot => "'.'".into(),
        }
    }

    /// Whether this is the keyword `kw` (case-insensitive).
    pub(crate) fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// Longest excerpt of the input quoted in an error: messages travel in headers and
/// logs, so a megabyte filter must not come back whole.
const EXCERPT_CHARS: usize = 120;

pub(crate) fn error_at(input: &str, pos: usize, msg: impl std::fmt::Display) -> Error {
    let shown = if input.chars().count() <= EXCERPT_CHARS {
        format!("{input:?}")
    } else {
        // Centre the excerpt on the position.
        let at = input.get(..pos).map_or(0, |s| s.chars().count());
        let start = at.saturating_sub(EXCERPT_CHARS / 2);
        let excerpt: String = input.chars().skip(start).take(EXCERPT_CHARS).collect();
        format!("{excerpt:?} (an excerpt from character {start})")
    };
    let msg = crate::domain::bounded(&msg.to_string(), 4 * EXCERPT_CHARS);
    Error::invalid(format!(
        "Invalid search expression {shown}: {msg} at position {pos}"
    ))
}

fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

pub(crate) fn lex(input: &str) -> Result<Vec<Token>, Error> {
    let mut out = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let tok = match c {
            '(' => {
                chars.next();
                Tok::LParen
            }
            ')' => {
                chars.next();
                Tok::RParen
            }
            ',' => {
                chars.next();
                Tok::Comma
            }
            '.' if !matches!(input[pos + 1..].chars().next(), Some(d) if d.is_ascii_digit()) => {
                chars.next();
                Tok::Dot
            }
            '=' => {
                chars.next();
                Tok::Op("=")
            }
            '!' | '<' | '>' => {
                chars.next();
                let next = chars.peek().map(|&(_, c)| c);
                match (c, next) {
                    ('!', Some('=')) => {
                        chars.next();
                        Tok::Op("!=")
                    }
                    ('<', Some('=')) => {
                        chars.next();
                        Tok::Op("<=")
                    }
                    ('<', Some('>')) => {
                        chars.next();
                        Tok::Op("!=")
                    }
                    ('>', Some('=')) => {
                        chars.next();
                        Tok::Op(">=")
                    }
                    ('<', _) => Tok::Op("<"),
                    ('>', _) => Tok::Op(">"),
                    _ => return Err(error_at(input, pos, "expected '!=' after '!'")),
                }
            }
            '\'' | '"' | '`' => {
                chars.next();
                let mut end = None;
                while let Some((i, ch)) = chars.next() {
                    if ch == '\\' && c != '`' {
                        chars.next();
                        continue;
                    }
                    if ch == c {
                        // A doubled quote is a quote inside the string.
                        if c != '`' && matches!(chars.peek(), Some(&(_, n)) if n == c) {
                            chars.next();
                            continue;
                        }
                        end = Some(i);
                        break;
                    }
                }
                let Some(end) = end else {
                    return Err(error_at(
                        input,
                        pos,
                        format!("unterminated {c}-quoted text"),
                    ));
                };
                let body = input[pos + 1..end].to_string();
                if c == '`' {
                    Tok::Backtick(body)
                } else {
                    Tok::Str(body)
                }
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = pos;
                let mut end = pos;
                let mut first = true;
                while let Some(&(i, ch)) = chars.peek() {
                    let sign = first && (ch == '-' || ch == '+');
                    let exp_sign = (ch == '-' || ch == '+')
                        && matches!(input[..i].chars().last(), Some('e' | 'E'));
                    if ch.is_ascii_digit()
                        || ch == '.'
                        || ch == 'e'
                        || ch == 'E'
                        || sign
                        || exp_sign
                    {
                        end = i + ch.len_utf8();
                        chars.next();
                        first = false;
                    } else {
                        break;
                    }
                }
                let text = &input[start..end];
                match text.parse::<f64>() {
                    Ok(n) if n.is_finite() => Tok::Number(n),
                    _ => return Err(error_at(input, start, format!("'{text}' is not a number"))),
                }
            }
            c if word_char(c) => {
                let start = pos;
                let mut end = pos;
                while let Some(&(i, ch)) = chars.peek() {
                    if word_char(ch) || ch == '.' {
                        end = i + ch.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                Tok::Word(input[start..end].to_string())
            }
            other => {
                return Err(error_at(
                    input,
                    pos,
                    format!("unexpected character {other:?}"),
                ));
            }
        };
        out.push(Token { tok, pos });
    }
    Ok(out)
}
