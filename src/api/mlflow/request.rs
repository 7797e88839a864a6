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
    serde_path_to_error::deserialize(serde_json::Value::Object(map)).map_err(type_error)
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
            type_error(e)
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

/// Separates the offending value from the reason in messages our field readers make, so
/// that the message can name the field by its path, which only the caller knows.
const MARK: char = '\u{1f}';

fn invalid<E: de::Error>(shown: impl std::fmt::Display, why: &str) -> E {
    E::custom(format!("{MARK}{shown}{MARK}{why}"))
}

/// MLflow's "Invalid value X for parameter 'path' supplied: why".
fn type_error(e: serde_path_to_error::Error<serde_json::Error>) -> Error {
    let path = e.path().to_string();
    let text = e.inner().to_string();
    // serde_json appends " at line L column C" to data errors from a body.
    let text = match text.rfind(" at line ") {
        Some(i) if text[i..].contains(" column ") => &text[..i],
        _ => &text,
    };
    match text.strip_prefix(MARK).and_then(|t| t.split_once(MARK)) {
        Some((shown, why)) => Error::invalid(format!(
            "Invalid value {shown} for parameter '{path}' supplied: {why}"
        )),
        None => Error::invalid(format!(
            "Invalid value for parameter '{path}' supplied: {text}"
        )),
    }
}

/// Shows a client's value in a message, bounded.
fn show(v: impl std::fmt::Debug) -> String {
    crate::domain::bounded(&format!("{v:?}"), 100)
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

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Scalar::Absent => f.write_str("null"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::UInt(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(t) => f.write_str(&show(t)),
            Scalar::List(_) => f.write_str("[...]"),
            Scalar::Object => f.write_str("{...}"),
        }
    }
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
        other => Err(invalid(other, "expected a string")),
    }
}

/// A 64-bit integer, as a JSON number (a whole float too) or as text.
pub(crate) fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    const WHY: &str = "expected a 64-bit integer";
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
    n.map(Some).ok_or_else(|| invalid(v, WHY))
}

/// A double, also as text: `"NaN"`, `"Infinity"`, `"-Infinity"` or a number.
pub(crate) fn double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    const WHY: &str = "Please specify value as a valid double (64-bit floating point)";
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
    x.map(Some).ok_or_else(|| invalid(v, WHY))
}

/// A boolean, also as text (`true`, `True`, `false`, `False`).
pub(crate) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match scalar(d)? {
        Scalar::Absent => Ok(None),
        Scalar::Bool(b) => Ok(Some(b)),
        Scalar::Text(t) if t == "true" || t == "True" => Ok(Some(true)),
        Scalar::Text(t) if t == "false" || t == "False" => Ok(Some(false)),
        other => Err(invalid(other, "expected true or false")),
    }
}

/// A repeated string: a JSON array, repeated query keys, or one value.
pub(crate) fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    const WHY: &str = "expected a list of strings";
    match scalar(d)? {
        Scalar::Absent => Ok(vec![]),
        Scalar::Text(s) => Ok(vec![s]),
        Scalar::List(items) => items
            .into_iter()
            .map(|item| match item {
                Scalar::Text(s) => Ok(s),
                other => Err(invalid(other, WHY)),
            })
            .collect(),
        other => Err(invalid(other, WHY)),
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
    number.and_then(T::from_number).map(Some).ok_or_else(|| {
        let names: Vec<&str> = T::VALUES.iter().map(|(n, _)| *n).collect();
        invalid(v, &format!("expected one of {}", names.join(", ")))
    })
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

    /// A value of the wrong type is named by its path, with MLflow's wording.
    #[test]
    fn type_errors_name_the_field() {
        let e = from_body::<Req>(br#"{"metrics":[{"timestamp":"foo"}]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "Invalid value \"foo\" for parameter 'metrics[0].timestamp' supplied: expected a 64-bit integer"
        );
        let e = from_body::<Req>(br#"{"run_uuid":["a"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'run_uuid'") && e.contains("expected a string"),
            "{e}"
        );
        let e = from_body::<Req>(br#"{"status":"DONE"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected one of RUNNING"), "{e}");
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
