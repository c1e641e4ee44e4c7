//! What MLflow is sent, shaped to its limits (mlflow/utils/validation.py): the resolved
//! config as dotted param keys, keys in its character set, values no longer than it keeps,
//! and log-batch calls no larger than it takes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Params (and tags) per log-batch call.
pub const MAX_PARAMS_PER_BATCH: usize = 100;
/// Metrics per log-batch call (also the most entities of all kinds together).
pub const MAX_METRICS_PER_BATCH: usize = 1000;
/// A param value's longest (MLflow 2.x and 3.x).
pub const MAX_PARAM_VALUE: usize = 6000;
/// A param or metric key's longest.
pub const MAX_KEY: usize = 250;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    pub key: String,
    pub value: String,
}

/// One metric point, as log-batch takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    /// A JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` (protobuf's JSON mapping of a
    /// double, which MLflow parses; JSON itself has no such numbers).
    pub value: Value,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub step: i64,
}

impl Metric {
    pub fn new(key: &str, value: f64, timestamp: i64, step: usize) -> Metric {
        let value = match value {
            v if v.is_nan() => Value::from("NaN"),
            v if v == f64::INFINITY => Value::from("Infinity"),
            v if v == f64::NEG_INFINITY => Value::from("-Infinity"),
            v => Value::from(v),
        };
        Metric { key: key_of(key), value, timestamp, step: step as i64 }
    }
}

/// The config's hyperparameters (`track::hyperparameters`) as params: a string as it is,
/// another value (a list: compact JSON, `[64,32]`) as its JSON text.
pub fn params(leaves: &[(String, Value)]) -> Vec<Param> {
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    leaves.iter().map(|(key, value)| param(key, &text(value))).collect()
}

fn param(key: &str, value: &str) -> Param {
    Param { key: key_of(key), value: truncate(value, MAX_PARAM_VALUE).to_string() }
}

/// `key` in MLflow's character set (letters, digits, `_ - . :` and spaces; `/` too, but a
/// config key with one could read as a path, which MLflow refuses): others become `_`.
pub fn key_of(key: &str) -> String {
    let key: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | ':') { c } else { '_' })
        .collect();
    truncate(&key, MAX_KEY).to_string()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..end]
}

/// `items` in chunks of at most `size`.
pub fn chunks<T: Clone>(items: &[T], size: usize) -> Vec<Vec<T>> {
    items.chunks(size.max(1)).map(<[T]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn hyperparameters_become_params_with_strings_as_they_are() {
        let leaves = [("model.hidden", json!([64, 32])), ("model.act", json!("relu")), ("training.amp", json!(false))];
        let leaves: Vec<(String, Value)> = leaves.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let got: Vec<(String, String)> = params(&leaves).into_iter().map(|p| (p.key, p.value)).collect();
        let want = [("model.hidden", "[64,32]"), ("model.act", "relu"), ("training.amp", "false")];
        assert_eq!(got, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn keys_and_values_keep_to_mlflows_limits() {
        assert_eq!(key_of("data.columns.price (€)/m²"), "data.columns.price ____m_");
        assert_eq!(key_of(&"k".repeat(300)).len(), MAX_KEY);
        let long = "é".repeat(MAX_PARAM_VALUE);
        let p = param("x", &long);
        assert!(p.value.len() <= MAX_PARAM_VALUE && p.value.len() >= MAX_PARAM_VALUE - 1);
        assert!(long.starts_with(&p.value));
    }

    #[test]
    fn batches_hold_at_most_the_limit() {
        let params: Vec<usize> = (0..250).collect();
        let sizes: Vec<usize> = chunks(&params, MAX_PARAMS_PER_BATCH).iter().map(Vec::len).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert!(chunks::<usize>(&[], MAX_PARAMS_PER_BATCH).is_empty());
    }

    #[test]
    fn non_finite_values_are_protobuf_strings() {
        assert_eq!(Metric::new("loss", f64::NAN, 0, 1).value, json!("NaN"));
        assert_eq!(Metric::new("loss", f64::NEG_INFINITY, 0, 1).value, json!("-Infinity"));
        assert_eq!(Metric::new("loss", 0.25, 0, 1).value, json!(0.25));
    }
}
