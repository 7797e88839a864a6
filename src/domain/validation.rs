//! MLflow's validation rules and limits (`mlflow/utils/validation.py`), with its
//! messages, so that a client sees the same answer from Arbor as from `mlflow server`.

use super::{Error, KeyValue, MetricPoint};

/// Longest metric, param or run-tag key; longer keys are refused.
pub const MAX_ENTITY_KEY_LENGTH: usize = 250;
/// Longest param value; longer values are truncated, as MLflow does by default.
pub const MAX_PARAM_VAL_LENGTH: usize = 6000;
/// Longest run-tag value; longer values are truncated, as MLflow does by default.
pub const MAX_TAG_VAL_LENGTH: usize = 8000;
/// Longest experiment name; longer names are refused.
pub const MAX_EXPERIMENT_NAME_LENGTH: usize = 500;
/// Longest experiment-tag key; longer keys are refused.
pub const MAX_EXPERIMENT_TAG_KEY_LENGTH: usize = 250;
/// Longest experiment-tag value; never truncated, longer values are refused.
pub const MAX_EXPERIMENT_TAG_VAL_LENGTH: usize = 20000;
/// Most params, and most tags, in one batch.
pub const MAX_PARAMS_TAGS_PER_BATCH: usize = 100;
/// Most metric points in one batch.
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// Most metrics, params and tags together in one batch.
pub const MAX_ENTITIES_PER_BATCH: usize = 1000;
/// Longest artifact location.
pub const MAX_ARTIFACT_LOCATION_LENGTH: usize = 2048;

/// MLflow's message for a required field that is missing or empty.
pub fn missing(param: &str) -> Error {
    Error::invalid(format!(
        "Missing value for required parameter '{param}'. See the API docs for more information about request parameters."
    ))
}

/// Refuses an empty required string.
pub fn require(param: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        Err(missing(param))
    } else {
        Ok(())
    }
}

/// The id of a run brought over by an import: what MLflow and compatible servers make
/// (32 hex digits, or other letters, digits, `-` and `_`), at most 256 characters.
pub fn imported_run_id(id: &str) -> Result<(), Error> {
    require("run_id", id)?;
    if id.len() > 256
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid(format!(
            "Invalid run id '{}': letters, digits, '-' and '_', at most 256",
            super::bounded(id, 64)
        )));
    }
    Ok(())
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Checks a metric, param or tag key: MLflow's character set (`^[/\w.\- :]*$`, with
/// Unicode word characters), a path that `normpath` leaves unchanged, and the length.
pub fn validate_key(param: &str, key: &str, max_len: usize) -> Result<(), Error> {
    if key.is_empty() {
        return Err(missing(param));
    }
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, '_' | '/' | '.' | '-' | ' ' | ':');
    if !key.chars().all(allowed) {
        return Err(Error::invalid(format!(
            "Invalid value \"{key}\" for parameter '{param}' supplied: Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and slashes (/)."
        )));
    }
    if key == "." || key.starts_with("..") || key.starts_with('/') || normpath(key) != key {
        return Err(Error::invalid(format!(
            "Invalid value \"{key}\" for parameter '{param}' supplied: Names may be treated as files in certain cases, and must not resolve to other names when treated as such. This name would resolve to '{}'",
            normpath(key)
        )));
    }
    if char_len(key) > max_len {
        return Err(Error::invalid(format!(
            "'{param}' exceeds the maximum length of {max_len} characters"
        )));
    }
    Ok(())
}

/// Python's `posixpath.normpath` for relative paths (the keys it is used on).
fn normpath(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(p) if *p != "..") {
                    parts.pop();
                } else {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// Cuts a value to `max` characters (MLflow's `MLFLOW_TRUNCATE_LONG_VALUES`, on by default).
pub fn truncate(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((cut, _)) => value[..cut].to_string(),
        None => value.to_string(),
    }
}

pub fn validate_metric(param_prefix: &str, m: &MetricPoint) -> Result<(), Error> {
    // MLflow names a metric's key `name` in its messages (`metrics[3].name`).
    validate_key(
        &format!("{param_prefix}name"),
        &m.key,
        MAX_ENTITY_KEY_LENGTH,
    )?;
    if m.timestamp < 0 {
        return Err(Error::invalid(format!(
            "Invalid value {} for parameter '{param_prefix}timestamp' supplied: Timestamp must be a nonnegative long (64-bit integer)",
            m.timestamp
        )));
    }
    Ok(())
}

/// Validates a param and returns it with its value truncated to MLflow's limit.
pub fn param(param_prefix: &str, p: &KeyValue) -> Result<KeyValue, Error> {
    validate_key(&format!("{param_prefix}key"), &p.key, MAX_ENTITY_KEY_LENGTH)?;
    Ok(KeyValue::new(
        &p.key,
        truncate(&p.value, MAX_PARAM_VAL_LENGTH),
    ))
}

/// Validates a run tag and returns it with its value truncated to MLflow's limit.
pub fn run_tag(param_prefix: &str, t: &KeyValue) -> Result<KeyValue, Error> {
    validate_key(&format!("{param_prefix}key"), &t.key, MAX_ENTITY_KEY_LENGTH)?;
    Ok(KeyValue::new(
        &t.key,
        truncate(&t.value, MAX_TAG_VAL_LENGTH),
    ))
}

pub fn experiment_tag(t: &KeyValue) -> Result<(), Error> {
    validate_key("key", &t.key, MAX_EXPERIMENT_TAG_KEY_LENGTH)?;
    if char_len(&t.value) > MAX_EXPERIMENT_TAG_VAL_LENGTH {
        return Err(Error::invalid(format!(
            "'value' exceeds the maximum length of {MAX_EXPERIMENT_TAG_VAL_LENGTH} characters"
        )));
    }
    Ok(())
}

pub fn experiment_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::invalid("Invalid experiment name: ''"));
    }
    if char_len(name) > MAX_EXPERIMENT_NAME_LENGTH {
        return Err(Error::invalid(format!(
            "'name' exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH} characters"
        )));
    }
    Ok(())
}

pub fn artifact_location(location: &str) -> Result<(), Error> {
    if char_len(location) > MAX_ARTIFACT_LOCATION_LENGTH {
        return Err(Error::invalid(format!(
            "'artifact_location' exceeds the maximum length of {MAX_ARTIFACT_LOCATION_LENGTH} characters"
        )));
    }
    Ok(())
}

/// Parses an experiment id: MLflow's ids are integers rendered as strings.
pub fn experiment_id(id: &str) -> Result<u64, Error> {
    if id.is_empty() {
        return Err(missing("experiment_id"));
    }
    id.parse::<u64>().map_err(|_| {
        Error::invalid(format!(
            "Invalid experiment ID '{id}'. Experiment ID must be a valid integer."
        ))
    })
}

/// The counts MLflow allows in one `LogBatch`.
pub fn batch_limits(metrics: usize, params: usize, tags: usize) -> Result<(), Error> {
    let over = |limit: usize, n: usize, entity: &str| {
        Error::invalid(format!(
            "A batch logging request can contain at most {limit} {entity}. Got {n} {entity}. Please split up {entity} across multiple requests and try again."
        ))
    };
    if metrics > MAX_METRICS_PER_BATCH {
        return Err(over(MAX_METRICS_PER_BATCH, metrics, "metrics"));
    }
    if params > MAX_PARAMS_TAGS_PER_BATCH {
        return Err(over(MAX_PARAMS_TAGS_PER_BATCH, params, "params"));
    }
    if tags > MAX_PARAMS_TAGS_PER_BATCH {
        return Err(over(MAX_PARAMS_TAGS_PER_BATCH, tags, "tags"));
    }
    let total = metrics + params + tags;
    if total > MAX_ENTITIES_PER_BATCH {
        return Err(Error::invalid(format!(
            "A batch logging request can contain at most {MAX_ENTITIES_PER_BATCH} total metrics, params, and tags. Got {total} total. Please split up the request across multiple requests and try again."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_mlflow_rules() {
        for ok in ["loss", "a/b", "a.b-c d:e", "système", "x_1"] {
            validate_key("key", ok, 250).unwrap();
        }
        for bad in [
            "", "a//b", "a/./b", "a/", "/a", "../x", ".", "a\u{0}b", "a?b", "a/../b",
        ] {
            assert!(validate_key("key", bad, 250).is_err(), "{bad:?} accepted");
        }
        assert!(validate_key("key", &"k".repeat(251), 250).is_err());
        validate_key("key", &"k".repeat(250), 250).unwrap();
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[test]
    fn batch_limits_match_mlflow() {
        batch_limits(1000, 0, 0).unwrap();
        assert!(batch_limits(1001, 0, 0).is_err());
        assert!(batch_limits(0, 101, 0).is_err());
        assert!(batch_limits(0, 0, 101).is_err());
        assert!(batch_limits(900, 100, 1).is_err());
        batch_limits(800, 100, 100).unwrap();
    }
}
