//! Reading an MLflow request the way MLflow's server does: GET parameters from the query
//! string (repeated keys for lists, numbers as text), other methods from a JSON body;
//! field names in snake_case or lowerCamelCase; int64 as numbers or strings; enums by
//! name or number; doubles also as `"NaN"`, `"Infinity"`, `"-Infinity"`. Type errors and
//! missing required fields get MLflow's messages.

use serde_json::{Map, Value};

use crate::domain::{Error, validation};

pub(crate) struct Params {
    map: Map<String, Value>,
    /// Where these fields sit in the request, for messages (`metrics[3].`).
    prefix: String,
}

fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    crate::domain::bounded(&s, 100)
}

impl Params {
    pub(crate) fn from_query(query: &str) -> Params {
        let mut map = Map::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match map.get_mut(k.as_ref()) {
                Some(Value::Array(items)) => items.push(Value::String(v.into_owned())),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(v.into_owned())]);
                }
                None => {
                    map.insert(k.into_owned(), Value::String(v.into_owned()));
                }
            }
        }
        Params {
            map,
            prefix: String::new(),
        }
    }

    pub(crate) fn from_body(body: &[u8]) -> Result<Params, Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Params {
                map: Map::new(),
                prefix: String::new(),
            });
        }
        let bad = |e: serde_json::Error| {
            Error::BadRequest(format!("Malformed JSON in the request body: {e}"))
        };
        let mut value: Value = serde_json::from_slice(body).map_err(bad)?;
        // MLflow accepts a body that is a JSON string holding the JSON object.
        if let Value::String(inner) = &value {
            value = serde_json::from_str(inner).map_err(bad)?;
        }
        match value {
            Value::Object(map) => Ok(Params {
                map,
                prefix: String::new(),
            }),
            _ => Err(Error::BadRequest(
                "The request body must be a JSON object".into(),
            )),
        }
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    fn get(&self, field: &str) -> Option<&Value> {
        match self.map.get(field).or_else(|| self.map.get(&camel(field))) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    /// MLflow's "Missing value" error for a field here.
    pub(crate) fn missing(&self, field: &str) -> Error {
        validation::missing(&self.name(field))
    }

    fn invalid(&self, field: &str, v: &Value, why: &str) -> Error {
        Error::invalid(format!(
            "Invalid value {} for parameter '{}' supplied: {why}",
            show(v),
            self.name(field)
        ))
    }

    pub(crate) fn string(&self, field: &str) -> Result<Option<String>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(items)) if items.len() == 1 => match &items[0] {
                Value::String(s) => Ok(Some(s.clone())),
                v => Err(self.invalid(field, v, "expected a string")),
            },
            Some(v) => Err(self.invalid(field, v, "expected a string")),
        }
    }

    pub(crate) fn string_or_empty(&self, field: &str) -> Result<String, Error> {
        Ok(self.string(field)?.unwrap_or_default())
    }

    /// A required string: absent or empty is MLflow's "Missing value" error.
    pub(crate) fn required(&self, field: &str) -> Result<String, Error> {
        match self.string(field)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(validation::missing(&self.name(field))),
        }
    }

    /// `run_id`, or the legacy `run_uuid`.
    pub(crate) fn run_id(&self) -> Result<String, Error> {
        match self.string("run_id")? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => match self.string("run_uuid")? {
                Some(s) if !s.is_empty() => Ok(s),
                _ => Err(validation::missing(&self.name("run_id"))),
            },
        }
    }

    pub(crate) fn int(&self, field: &str) -> Result<Option<i64>, Error> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let parsed = match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            }),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            Value::Array(items) if items.len() == 1 => {
                items[0].as_str().and_then(|s| s.trim().parse().ok())
            }
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| self.invalid(field, v, "expected a 64-bit integer"))
    }

    pub(crate) fn required_int(&self, field: &str) -> Result<i64, Error> {
        self.int(field)?
            .ok_or_else(|| validation::missing(&self.name(field)))
    }

    pub(crate) fn double(&self, field: &str) -> Result<Option<f64>, Error> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let parse = |s: &str| match s.trim() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" | "Inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" | "-Inf" => Some(f64::NEG_INFINITY),
            other => other.parse::<f64>().ok(),
        };
        let parsed = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => parse(s),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            self.invalid(
                field,
                v,
                "Please specify value as a valid double (64-bit floating point)",
            )
        })
    }

    pub(crate) fn bool(&self, field: &str) -> Result<Option<bool>, Error> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        match v {
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) if s == "true" || s == "True" => Ok(Some(true)),
            Value::String(s) if s == "false" || s == "False" => Ok(Some(false)),
            _ => Err(self.invalid(field, v, "expected true or false")),
        }
    }

    /// A repeated string: a JSON array, or repeated query keys, or one value.
    pub(crate) fn strings(&self, field: &str) -> Result<Vec<String>, Error> {
        match self.get(field) {
            None => Ok(vec![]),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| self.invalid(field, v, "expected a list of strings"))
                })
                .collect(),
            Some(v) => Err(self.invalid(field, v, "expected a list of strings")),
        }
    }

    /// A repeated message.
    pub(crate) fn objects(&self, field: &str) -> Result<Vec<Params>, Error> {
        match self.get(field) {
            None => Ok(vec![]),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(map) => Ok(Params {
                        map: map.clone(),
                        prefix: format!("{}{field}[{i}].", self.prefix),
                    }),
                    v => Err(self.invalid(field, v, "expected a list of objects")),
                })
                .collect(),
            Some(v) => Err(self.invalid(field, v, "expected a list of objects")),
        }
    }

    pub(crate) fn object(&self, field: &str) -> Result<Option<Params>, Error> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Params {
                map: map.clone(),
                prefix: format!("{}{field}.", self.prefix),
            })),
            Some(v) => Err(self.invalid(field, v, "expected an object")),
        }
    }

    /// An enum by name or number, from `values` (name, number).
    pub(crate) fn enumeration(
        &self,
        field: &str,
        values: &[(&str, i32)],
    ) -> Result<Option<i32>, Error> {
        let Some(v) = self.get(field) else {
            return Ok(None);
        };
        let found = match v {
            Value::String(s) => values
                .iter()
                .find(|(name, _)| name == s)
                .map(|(_, n)| *n)
                .or_else(|| {
                    s.parse::<i32>()
                        .ok()
                        .filter(|n| values.iter().any(|(_, m)| m == n))
                }),
            Value::Number(n) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| values.iter().any(|(_, m)| m == n)),
            _ => None,
        };
        let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
        found
            .map(Some)
            .ok_or_else(|| self.invalid(field, v, &format!("expected one of {}", names.join(", "))))
    }

    pub(crate) fn key_values(&self, field: &str) -> Result<Vec<crate::domain::KeyValue>, Error> {
        self.objects(field)?
            .iter()
            .map(|p| {
                Ok(crate::domain::KeyValue::new(
                    p.required("key")?,
                    p.string_or_empty("value")?,
                ))
            })
            .collect()
    }
}

pub(crate) const RUN_STATUS: &[(&str, i32)] = &[
    ("RUNNING", 1),
    ("SCHEDULED", 2),
    ("FINISHED", 3),
    ("FAILED", 4),
    ("KILLED", 5),
];
pub(crate) const VIEW_TYPE: &[(&str, i32)] = &[("ACTIVE_ONLY", 1), ("DELETED_ONLY", 2), ("ALL", 3)];
pub(crate) const LOGGED_MODEL_STATUS: &[(&str, i32)] = &[
    ("LOGGED_MODEL_STATUS_UNSPECIFIED", 0),
    ("LOGGED_MODEL_PENDING", 1),
    ("LOGGED_MODEL_READY", 2),
    ("LOGGED_MODEL_UPLOAD_FAILED", 3),
];

pub(crate) fn view_type(p: &Params, field: &str) -> Result<crate::domain::ViewType, Error> {
    Ok(match p.enumeration(field, VIEW_TYPE)? {
        Some(2) => crate::domain::ViewType::DeletedOnly,
        Some(3) => crate::domain::ViewType::All,
        _ => crate::domain::ViewType::ActiveOnly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mlflow_shapes() {
        let p = Params::from_query("run_id=r&experiment_ids=1&experiment_ids=2&max_results=25000");
        assert_eq!(p.run_id().unwrap(), "r");
        assert_eq!(p.strings("experiment_ids").unwrap(), vec!["1", "2"]);
        assert_eq!(p.int("max_results").unwrap(), Some(25000));
        let b = Params::from_body(
            br#"{"runUuid":"x","value":"NaN","timestamp":"17","step":3.0,"status":"FINISHED"}"#,
        )
        .unwrap();
        assert_eq!(b.run_id().unwrap(), "x");
        assert!(b.double("value").unwrap().unwrap().is_nan());
        assert_eq!(b.int("timestamp").unwrap(), Some(17));
        assert_eq!(b.int("step").unwrap(), Some(3));
        assert_eq!(b.enumeration("status", RUN_STATUS).unwrap(), Some(3));
        let e = Params::from_body(br#"{"step":"foo"}"#)
            .unwrap()
            .int("step")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Invalid value \"foo\" for parameter 'step' supplied"),
            "{e}"
        );
        let nested = Params::from_body(br#"{"metrics":[{"key":"k","value":1}]}"#).unwrap();
        let m = &nested.objects("metrics").unwrap()[0];
        let e = m.required_int("timestamp").unwrap_err().to_string();
        assert!(e.contains("'metrics[0].timestamp'"), "{e}");
        let double = Params::from_body(br#""{\"run_id\": \"y\"}""#).unwrap();
        assert_eq!(double.run_id().unwrap(), "y");
    }
}
