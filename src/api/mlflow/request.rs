//! Reading an MLflow request the way MLflow's server does, into `#[derive(Deserialize)]`
//! types: GET parameters from the query string (repeated keys for lists, numbers as
//! text), other methods from a JSON body (also a JSON string holding the object);
//! fields in snake_case or lowerCamelCase (serde aliases on each type); int64 as numbers
//! or strings; enums by name or number; doubles also as `"NaN"`, `"Infinity"`,
//! `"-Infinity"`. A value of the wrong type gets MLflow's message naming the field by
//! its path (`metrics[3].timestamp`), found by `serde_path_to_error`; bodies are parsed
//! straight into the typed request, never into a JSON tree first.

use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};

use crate::domain::{Error, LoggedModelStatus, RunStatus, ViewType};

/// A request body or query string read into `T`.
pub(crate) struct Mlflow<T>(pub T);

/// Largest JSON request body unless `--max-json-body-mb` says otherwise. A full
/// `log-batch` is about 150 KB; artifact uploads stream and are not bound by this.
pub const JSON_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The JSON body limit the server was started with, put on every request by the router.
#[derive(Debug, Clone, Copy)]
pub struct JsonBodyLimit(pub usize);

/// The body in one buffer sized from `Content-Length`, each received chunk copied in and
/// dropped at once. Collecting the chunks first and joining them after would hold the
/// body twice, and the allocator keeps the chunks' memory after they are freed.
async fn read_body(req: Request) -> Result<Vec<u8>, Error> {
    use http_body_util::BodyExt;
    let limit = req
        .extensions()
        .get::<JsonBodyLimit>()
        .map_or(JSON_BODY_LIMIT, |l| l.0);
    let too_large = || {
        Error::BadRequest(format!(
            "The request body is larger than {} MiB (--max-json-body-mb)",
            limit.div_ceil(1 << 20)
        ))
    };
    let expected = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if expected > limit {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut buf = Vec::with_capacity(expected);
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Error::BadRequest(format!("Could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Mlflow<T> {
    type Rejection = Error;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Error> {
        let is_get = req.method() == Method::GET;
        let query = req.uri().query().unwrap_or("").to_string();
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
        let body = read_body(req).await?;
        if is_get || body.iter().all(u8::is_ascii_whitespace) {
            return from_query(&query).map(Mlflow);
        }
        if !is_json {
            return Err(Error::BadRequest(
                "Bad Request. Content-Type must be application/json.".into(),
            ));
        }
        from_body(&body).map(Mlflow)
    }
}

/// `T` from a query string: a key given once is a string, a repeated key a list.
pub(crate) fn from_query<T: DeserializeOwned>(query: &str) -> Result<T, Error> {
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = serde_json::Value::String(v.into_owned());
        match map.get_mut(k.as_ref()) {
            Some(serde_json::Value::Array(items)) => items.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = serde_json::Value::Array(vec![first, v]);
            }
            None => {
                map.insert(k.into_owned(), v);
            }
        }
    }
    let doc = serde_json::Value::Object(map);
    // Set for this synchronous read only, on this thread, and unset however it ends.
    struct Reading;
    impl Drop for Reading {
        fn drop(&mut self) {
            FROM_QUERY.set(false);
        }
    }
    FROM_QUERY.set(true);
    let reading = Reading;
    let read = serde_path_to_error::deserialize(&doc);
    drop(reading);
    read.map_err(|e| type_error(&e, &doc))
}

thread_local! {
    /// Whether the request being read is a query string, where a list given once is one
    /// string (`experiment_ids=1`); in a JSON body a list must be a list, as MLflow
    /// checks. Readers are synchronous, so a flag of the thread says which is being read.
    static FROM_QUERY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `T` from a JSON body, or from a JSON string that holds the JSON object (MLflow accepts
/// both).
pub(crate) fn from_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'"') {
        let inner: String = serde_json::from_slice(body).map_err(malformed)?;
        return from_body(inner.as_bytes());
    }
    if first != Some(&b'{') {
        return Err(Error::BadRequest(
            "The request body must be a JSON object".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        if e.inner().is_data() {
            // Only now, for the message: the body as a document, to show the value.
            let doc = serde_json::from_slice(body).unwrap_or_default();
            type_error(&e, &doc)
        } else {
            malformed(e.into_inner())
        }
    })?;
    de.end().map_err(malformed)?;
    Ok(value)
}

fn malformed(e: serde_json::Error) -> Error {
    Error::BadRequest(format!("Malformed JSON in the request body: {e}"))
}

/// A value of the wrong type, raised by the field readers below; `type_error` then says
/// so in MLflow's words, with the value as the client sent it.
fn invalid<E: de::Error>() -> E {
    E::custom("a value of the wrong type")
}

/// Longest rendering of a client's value in a type error (the message is bounded again
/// where it is answered).
const SHOWN_VALUE_CHARS: usize = 1000;

/// MLflow's message for a value of the wrong type, the one place it is written: its
/// `invalid_value` (the value as Python's `json.dumps(v, sort_keys=True,
/// separators=(",", ":"))` writes it) with the hint its server's schema check adds (the
/// value's Python type). A bad element of a list of scalars is reported as the whole
/// list, since MLflow checks the list. The field is named by its path
/// (`metrics[3].timestamp`), looked up in `doc`, the request as a JSON document.
fn type_error(e: &serde_path_to_error::Error<serde_json::Error>, doc: &serde_json::Value) -> Error {
    use serde_path_to_error::Segment;
    let mut path: Vec<&Segment> = e.path().iter().collect();
    let at = |path: &[&Segment]| {
        path.iter().try_fold(doc, |v, seg| match seg {
            Segment::Seq { index } => v.get(*index),
            Segment::Map { key } => v.get(key.as_str()),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
    };
    if matches!(path.last(), Some(Segment::Seq { .. })) && at(&path).is_some_and(|v| !v.is_object())
    {
        path.pop();
    }
    let name = path.iter().fold(String::new(), |mut name, seg| {
        match seg {
            Segment::Seq { index } => name.push_str(&format!("[{index}]")),
            Segment::Map { key } if name.is_empty() => name.push_str(key),
            Segment::Map { key } => name.push_str(&format!(".{key}")),
            Segment::Enum { variant } => name.push_str(&format!(".{variant}")),
            Segment::Unknown => name.push_str(".?"),
        }
        name
    });
    let Some(value) = at(&path) else {
        return Error::invalid(format!(
            "Invalid value for parameter '{name}' supplied: {}",
            e.inner()
        ));
    };
    let mut shown = String::new();
    python_json(value, &mut shown);
    Error::invalid(format!(
        "Invalid value {} for parameter '{name}' supplied:  Hint: Value was of type '{}'. See the API docs for more information about request parameters.",
        crate::domain::bounded(&shown, SHOWN_VALUE_CHARS),
        python_type(value)
    ))
}

/// Python's name for the type `json.loads` gives a JSON value.
fn python_type(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `v` as Python's `json.dumps(v, sort_keys=True, separators=(",", ":"))` writes it:
/// keys sorted, no spaces, non-ASCII escaped, floats as Python's `repr`.
fn python_json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => out.push_str(&python_float(x)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => python_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                python_json(item, out);
                if out.len() > SHOWN_VALUE_CHARS {
                    break;
                }
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                python_str(key, out);
                out.push(':');
                python_json(&map[key], out);
                if out.len() > SHOWN_VALUE_CHARS {
                    break;
                }
            }
            out.push('}');
        }
    }
}

/// A JSON string as Python writes it (`ensure_ascii`: every non-ASCII character as
/// `\uXXXX`, UTF-16 surrogate pairs beyond the BMP).
fn python_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // Python escapes the C0 controls, not DEL.
            c if c.is_ascii() && c >= ' ' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `repr` writes it: the shortest digits that read back the same,
/// in fixed notation from 1e-4 up to 1e16 (with `.0` when whole), in scientific notation
/// beyond (`1e+20`, `1.5e-07`).
fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's `{:e}` gives the same shortest digits: "1.5e-7", "9e0".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = format!("{x}");
        if fixed.contains('.') {
            fixed
        } else {
            format!("{fixed}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// What a client sent for a scalar field, before the field's reader decides whether it
/// fits: one visitor for every field type, so each reader is a `match`.
enum Scalar {
    Absent,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    List(Vec<Scalar>),
    Object,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d)
    }
}

fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Scalar;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
            Ok(Scalar::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
            Ok(Scalar::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
            Ok(Scalar::UInt(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
            Ok(Scalar::Float(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
            Ok(Scalar::Text(v.to_string()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
            Ok(Scalar::Text(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
            Ok(Scalar::Absent)
        }
        fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
            Ok(Scalar::Absent)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Scalar>()? {
                items.push(item);
            }
            Ok(Scalar::List(items))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Scalar::Object)
        }
    }
    d.deserialize_any(V)
}

/// A string; `null` reads as absent.
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match scalar(d)? {
        Scalar::Absent => Ok(None),
        Scalar::Text(s) => Ok(Some(s)),
        _ => Err(invalid()),
    }
}

/// A 64-bit integer, as a JSON number (a whole float too) or as text.
pub(crate) fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = scalar(d)?;
    let n = match &v {
        Scalar::Absent => return Ok(None),
        Scalar::Int(n) => Some(*n),
        Scalar::UInt(n) => i64::try_from(*n).ok(),
        // Whole and in range, so the conversion is exact.
        #[allow(clippy::cast_possible_truncation)]
        Scalar::Float(x) if x.fract() == 0.0 && x.abs() < 9.2e18 => Some(*x as i64),
        Scalar::Text(t) => t.trim().parse().ok(),
        _ => None,
    };
    n.map(Some).ok_or_else(invalid)
}

/// A double, also as text: `"NaN"`, `"Infinity"`, `"-Infinity"` or a number.
pub(crate) fn double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = scalar(d)?;
    // JSON integers read as doubles, as MLflow's parser reads them (large ones round).
    #[allow(clippy::cast_precision_loss)]
    let x = match &v {
        Scalar::Absent => return Ok(None),
        Scalar::Float(x) => Some(*x),
        Scalar::Int(n) => Some(*n as f64),
        Scalar::UInt(n) => Some(*n as f64),
        Scalar::Text(t) => match t.trim() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" | "Inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" | "-Inf" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    };
    x.map(Some).ok_or_else(invalid)
}

/// A boolean, also as text (`true`, `True`, `false`, `False`).
pub(crate) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match scalar(d)? {
        Scalar::Absent => Ok(None),
        Scalar::Bool(b) => Ok(Some(b)),
        Scalar::Text(t) if t == "true" || t == "True" => Ok(Some(true)),
        Scalar::Text(t) if t == "false" || t == "False" => Ok(Some(false)),
        _ => Err(invalid()),
    }
}

/// A repeated string: a JSON array, or repeated query keys (one key given once is one
/// string; in a JSON body a string is not a list, as MLflow checks).
pub(crate) fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match scalar(d)? {
        Scalar::Absent => Ok(vec![]),
        Scalar::Text(s) if FROM_QUERY.get() => Ok(vec![s]),
        Scalar::List(items) => items
            .into_iter()
            .map(|item| match item {
                Scalar::Text(s) => Ok(s),
                _ => Err(invalid()),
            })
            .collect(),
        _ => Err(invalid()),
    }
}

/// A repeated message of which at most `MAX` are kept: further elements are skipped
/// without being built, so an oversized batch costs no memory, and counted in `total`,
/// so the limit's message can name the real count as MLflow's does.
#[derive(Debug)]
pub(crate) struct Capped<T, const MAX: usize> {
    pub items: Vec<T>,
    pub total: usize,
}

impl<T, const MAX: usize> Default for Capped<T, MAX> {
    fn default() -> Self {
        Capped {
            items: Vec::new(),
            total: 0,
        }
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for Capped<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const MAX: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for V<T, MAX> {
            type Value = Capped<T, MAX>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of objects")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Capped::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Capped::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while items.len() < MAX {
                    match seq.next_element()? {
                        Some(item) => items.push(item),
                        None => {
                            let total = items.len();
                            return Ok(Capped { items, total });
                        }
                    }
                }
                let mut total = items.len();
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    total += 1;
                }
                Ok(Capped { items, total })
            }
        }
        d.deserialize_any(V::<T, MAX>(std::marker::PhantomData))
    }
}

/// A wire enum read by name or number, from its table of (name, number).
pub(crate) trait WireEnum: Sized {
    const VALUES: &'static [(&'static str, i32)];
    fn from_number(n: i32) -> Option<Self>;
}

impl WireEnum for RunStatus {
    const VALUES: &'static [(&'static str, i32)] = &[
        ("RUNNING", 1),
        ("SCHEDULED", 2),
        ("FINISHED", 3),
        ("FAILED", 4),
        ("KILLED", 5),
    ];
    fn from_number(n: i32) -> Option<Self> {
        RunStatus::from_i32(n)
    }
}

impl WireEnum for ViewType {
    const VALUES: &'static [(&'static str, i32)] =
        &[("ACTIVE_ONLY", 1), ("DELETED_ONLY", 2), ("ALL", 3)];
    fn from_number(n: i32) -> Option<Self> {
        match n {
            1 => Some(ViewType::ActiveOnly),
            2 => Some(ViewType::DeletedOnly),
            3 => Some(ViewType::All),
            _ => None,
        }
    }
}

impl WireEnum for LoggedModelStatus {
    const VALUES: &'static [(&'static str, i32)] = &[
        ("LOGGED_MODEL_STATUS_UNSPECIFIED", 0),
        ("LOGGED_MODEL_PENDING", 1),
        ("LOGGED_MODEL_READY", 2),
        ("LOGGED_MODEL_UPLOAD_FAILED", 3),
    ];
    fn from_number(n: i32) -> Option<Self> {
        LoggedModelStatus::ALL.into_iter().find(|s| *s as i32 == n)
    }
}

/// An enum by name or by number (also as text).
pub(crate) fn enumeration<'de, D: Deserializer<'de>, T: WireEnum>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let v = scalar(d)?;
    let number = match &v {
        Scalar::Absent => return Ok(None),
        Scalar::Text(s) => T::VALUES
            .iter()
            .find(|(name, _)| name == s)
            .map(|(_, n)| *n)
            .or_else(|| s.parse().ok()),
        Scalar::Int(n) => i32::try_from(*n).ok(),
        Scalar::UInt(n) => i32::try_from(*n).ok(),
        _ => None,
    };
    number
        .and_then(T::from_number)
        .map(Some)
        .ok_or_else(invalid)
}

/// A required string field: absent or empty is MLflow's "Missing value" error.
pub(crate) fn required(field: &str, value: Option<String>) -> Result<String, Error> {
    match value {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(crate::domain::validation::missing(field)),
    }
}

/// A required field of another type.
pub(crate) fn present<T>(field: &str, value: Option<T>) -> Result<T, Error> {
    value.ok_or_else(|| crate::domain::validation::missing(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Metric {
        #[serde(default, deserialize_with = "int64")]
        timestamp: Option<i64>,
        #[serde(default, deserialize_with = "double")]
        value: Option<f64>,
    }

    #[derive(Debug, Deserialize)]
    struct Req {
        #[serde(default, deserialize_with = "string", alias = "runUuid")]
        run_uuid: Option<String>,
        #[serde(default, deserialize_with = "strings")]
        experiment_ids: Vec<String>,
        #[serde(default, deserialize_with = "int64")]
        max_results: Option<i64>,
        #[serde(default, deserialize_with = "enumeration")]
        status: Option<RunStatus>,
        #[serde(default)]
        metrics: Capped<Metric, 2>,
    }

    /// Query strings: repeated keys make lists, numbers come as text.
    #[test]
    fn reads_query_strings() {
        let r: Req =
            from_query("run_uuid=r&experiment_ids=1&experiment_ids=2&max_results=25000").unwrap();
        assert_eq!(r.run_uuid.as_deref(), Some("r"));
        assert_eq!(r.experiment_ids, vec!["1", "2"]);
        assert_eq!(r.max_results, Some(25000));
    }

    /// Bodies: camelCase aliases, int64 as text or whole floats, NaN as text, enums by name.
    #[test]
    fn reads_mlflow_json_shapes() {
        let r: Req = from_body(
            br#"{"runUuid":"x","max_results":"17","status":"FINISHED","metrics":[{"value":"NaN","timestamp":3.0}]}"#,
        )
        .unwrap();
        assert_eq!(r.run_uuid.as_deref(), Some("x"));
        assert_eq!(r.max_results, Some(17));
        assert_eq!(r.status, Some(RunStatus::Finished));
        assert!(r.metrics.items[0].value.unwrap().is_nan());
        assert_eq!(r.metrics.items[0].timestamp, Some(3));
        let r: Req = from_body(br#""{\"run_uuid\": \"y\"}""#).unwrap();
        assert_eq!(r.run_uuid.as_deref(), Some("y"));
    }

    /// A value of the wrong type is named by its path, with MLflow's wording: the value
    /// as Python's `json.dumps` writes it, and Python's name of its type.
    #[test]
    fn type_errors_name_the_field_in_mlflows_words() {
        let message = |body: &[u8]| from_body::<Req>(body).unwrap_err().to_string();
        let hint = |shown: &str, field: &str, ty: &str| {
            format!(
                "Invalid value {shown} for parameter '{field}' supplied:  Hint: Value was of type '{ty}'. See the API docs for more information about request parameters."
            )
        };
        assert_eq!(
            message(br#"{"metrics":[{"timestamp":"foo"}]}"#),
            hint("\"foo\"", "metrics[0].timestamp", "str")
        );
        assert_eq!(
            message(br#"{"run_uuid":9.0}"#),
            hint("9.0", "run_uuid", "float")
        );
        assert_eq!(message(br#"{"run_uuid":9}"#), hint("9", "run_uuid", "int"));
        assert_eq!(
            message(br#"{"run_uuid":1e20}"#),
            hint("1e+20", "run_uuid", "float")
        );
        assert_eq!(
            message(br#"{"run_uuid":true}"#),
            hint("true", "run_uuid", "bool")
        );
        // Python escapes the C0 controls and leaves DEL as it is.
        assert_eq!(
            message(br#"{"run_uuid":["\u0001\u007f"]}"#),
            hint("[\"\\u0001\u{7f}\"]", "run_uuid", "list")
        );
        assert_eq!(
            message(br#"{"run_uuid":{"b":[1, 2.5],"a":"\u00e9\n"}}"#),
            hint(r#"{"a":"\u00e9\n","b":[1,2.5]}"#, "run_uuid", "dict")
        );
        // A bad element of a list of scalars: the list, as MLflow checks it.
        assert_eq!(
            message(br#"{"experiment_ids":["1", 2]}"#),
            hint(r#"["1",2]"#, "experiment_ids", "list")
        );
        assert_eq!(
            message(br#"{"metrics":"foo"}"#),
            hint("\"foo\"", "metrics", "str")
        );
        assert_eq!(
            message(br#"{"status":"DONE"}"#),
            hint("\"DONE\"", "status", "str")
        );
        assert_eq!(
            from_query::<Req>("max_results=x").unwrap_err().to_string(),
            hint("\"x\"", "max_results", "str")
        );
    }

    /// Floats as Python's `repr` writes them.
    #[test]
    fn floats_read_as_python_writes_them() {
        for (x, python) in [
            (9.0, "9.0"),
            (9.5, "9.5"),
            (-0.0, "-0.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.1, "0.1"),
        ] {
            assert_eq!(python_float(x), python, "{x}");
        }
    }

    /// Lists past their cap keep the cap and count the rest without building them.
    #[test]
    fn capped_lists_count_what_they_skip() {
        let r: Req = from_body(br#"{"metrics":[{},{},{"timestamp":"not built"},{}]}"#).unwrap();
        assert_eq!((r.metrics.items.len(), r.metrics.total), (2, 4));
    }

    /// Malformed JSON and non-objects are BAD_REQUEST, not parameter errors.
    #[test]
    fn malformed_bodies_are_bad_requests() {
        assert!(matches!(
            from_body::<Req>(b"{not json"),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            from_body::<Req>(b"[1,2]"),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            from_body::<Req>(b"{} x"),
            Err(Error::BadRequest(_))
        ));
    }
}
