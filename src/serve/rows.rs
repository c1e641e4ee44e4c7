//! `POST /predict` bodies: `{"instances": [[...], ...]}` (values in the model's input order:
//! the numeric features, then the categorical ones) or `{"rows": [{"column": value, ...}]}`
//! (by column name, as `torchfit predict` reads a CSV file's header). Text is read by the
//! CSV reader's own cell rule (`cell::parse_cell`): numbers, numeric text, booleans (`true`,
//! `yes`, ... as 1 and 0), and the missing markers (`""`, `NA`, `N/A`, `NaN`); JSON `null`
//! is missing too. Errors name the row and column. An array model takes `{"instances":
//! [sample, ...]}`, each sample nested lists of its input shape (numbers, or whole numbers
//! for an int64 model).

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};

use super::input::{ArrayValues, Rows};
use crate::cell::{is_missing, parse_cell, Cell};
use crate::predict::array::describe;
use crate::predict::{ArrayInput, Dtype, Predictor};

/// The body's rows, checked against the model's features.
pub fn parse(body: &Value, predictor: &Predictor) -> Result<Rows> {
    let Value::Object(fields) = body else { bail!("the body must be a JSON object with `instances` or `rows`") };
    if let Some(array) = predictor.array() {
        return match (fields.get("instances"), fields.get("rows")) {
            (Some(instances), None) => array_instances(instances, array, predictor),
            (_, Some(_)) => bail!("`rows` names columns, but the model takes {}: send `instances`", describe(array)),
            (None, None) => bail!("the body has no `instances` (the model takes {})", describe(array)),
        };
    }
    match (fields.get("instances"), fields.get("rows")) {
        (Some(_), Some(_)) => bail!("give either `instances` or `rows`, not both"),
        (Some(instances), None) => instances_rows(instances, predictor),
        (None, Some(rows)) => named_rows(rows, predictor),
        (None, None) => bail!("the body has neither `instances` nor `rows`"),
    }
}

fn list<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>> {
    match value {
        Value::Array(items) if items.is_empty() => bail!("`{field}` is empty: send at least one row"),
        Value::Array(items) => Ok(items),
        _ => bail!("`{field}` must be a list of rows"),
    }
}

/// The numeric values and text columns being gathered, sized for `count` rows (which the
/// body's own list bounds).
fn columns(count: usize, predictor: &Predictor) -> (Vec<f32>, Vec<Vec<Option<String>>>) {
    let numeric = Vec::with_capacity(count.saturating_mul(predictor.features().len()));
    (numeric, vec![Vec::with_capacity(count); predictor.text_inputs().len()])
}

fn instances_rows(instances: &Value, predictor: &Predictor) -> Result<Rows> {
    let features = predictor.features();
    let categorical = predictor.text_inputs();
    let width = features.len() + categorical.len();
    let items = list(instances, "instances")?;
    let (mut numeric, mut text) = columns(items.len(), predictor);
    for (i, item) in items.iter().enumerate() {
        let Value::Array(values) = item else { bail!("instances[{i}] must be a list of {width} values") };
        if values.len() != width {
            bail!(
                "instances[{i}] has {} values, but the model takes {width} ({})",
                values.len(),
                input_names(predictor)
            );
        }
        for (j, value) in values.iter().enumerate() {
            match j.checked_sub(features.len()) {
                None => {
                    numeric.push(number(value).map_err(|e| anyhow!("instances[{i}][{j}] (`{}`): {e}", features[j]))?)
                }
                Some(c) => text[c].push(self::text(value)),
            }
        }
    }
    Rows::new(predictor, items.len(), numeric, text)
}

/// An array model's samples: each instance nested lists of exactly its input shape.
fn array_instances(instances: &Value, array: &ArrayInput, predictor: &Predictor) -> Result<Rows> {
    let items = list(instances, "instances")?;
    let mut floats = Vec::new();
    let mut ints = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut flat = Vec::new();
        let shape = nested_shape(item, 0, &mut flat)
            .ok_or_else(|| anyhow!("instances[{i}] is not a list of shape {:?} ({})", array.shape, describe(array)))?;
        if shape != array.shape {
            bail!(
                "instances[{i}] has shape {shape:?}, but the model takes samples of shape {:?} ({})",
                array.shape,
                describe(array)
            );
        }
        for (k, value) in flat.into_iter().enumerate() {
            match array.dtype {
                Dtype::Float32 => floats.push(
                    value
                        .as_f64()
                        .map(|v| v as f32)
                        .ok_or_else(|| anyhow!("instances[{i}] value {k} ({value}) is not a number"))?,
                ),
                Dtype::Int64 => ints.push(
                    value
                        .as_i64()
                        .ok_or_else(|| anyhow!("instances[{i}] value {k} ({value}) is not a whole number"))?,
                ),
            }
        }
    }
    let values = match array.dtype {
        Dtype::Float32 => ArrayValues::F32(floats),
        Dtype::Int64 => ArrayValues::I64(ints),
    };
    Rows::array(predictor, items.len(), values)
}

/// The shape of nested JSON lists (their leaves pushed to `flat`); `None` when ragged or
/// deeper than any model's input.
fn nested_shape<'a>(value: &'a Value, depth: usize, flat: &mut Vec<&'a Value>) -> Option<Vec<i64>> {
    const DEEPEST: usize = 16;
    let Value::Array(items) = value else {
        flat.push(value);
        return Some(Vec::new());
    };
    if depth >= DEEPEST {
        return None;
    }
    let mut inner: Option<Vec<i64>> = None;
    for item in items {
        let shape = nested_shape(item, depth + 1, flat)?;
        match &inner {
            Some(seen) if *seen != shape => return None,
            _ => inner = Some(shape),
        }
    }
    // An empty list's inner shape is unknown; [0] is what numpy says of it.
    Some(std::iter::once(items.len() as i64).chain(inner.unwrap_or_default()).collect())
}

fn named_rows(body: &Value, predictor: &Predictor) -> Result<Rows> {
    let items = list(body, "rows")?;
    let (mut numeric, mut text) = columns(items.len(), predictor);
    for (i, item) in items.iter().enumerate() {
        let Value::Object(row) = item else { bail!("rows[{i}] must be an object of column: value") };
        for name in predictor.features() {
            let value = cell(row, i, name, predictor)?;
            numeric.push(number(value).map_err(|e| anyhow!("rows[{i}].{name}: {e}"))?);
        }
        for (j, feature) in predictor.text_inputs().iter().enumerate() {
            text[j].push(self::text(cell(row, i, feature, predictor)?));
        }
    }
    Rows::new(predictor, items.len(), numeric, text)
}

fn cell<'a>(row: &'a Map<String, Value>, i: usize, name: &str, predictor: &Predictor) -> Result<&'a Value> {
    row.get(name)
        .ok_or_else(|| anyhow!("rows[{i}] has no `{name}` (the model's features are {})", input_names(predictor)))
}

/// The model's inputs in order, for messages.
pub fn input_names(predictor: &Predictor) -> String {
    let numeric = predictor.features().iter().map(String::as_str);
    let names: Vec<&str> = numeric.chain(predictor.text_inputs().iter().map(String::as_str)).collect();
    names.join(", ")
}

/// A numeric feature's value: NaN where missing. Infinities are refused: no model was
/// trained on them, and they would come back as NaN predictions.
pub fn number(value: &Value) -> Result<f32> {
    let v = match value {
        Value::Null => return Ok(f32::NAN),
        Value::Bool(b) => return Ok(f32::from(u8::from(*b))),
        Value::Number(n) => n.as_f64().ok_or_else(|| anyhow!("{n} is not a number"))? as f32,
        Value::String(s) => match parse_cell(s.trim(), false) {
            Cell::Missing => return Ok(f32::NAN),
            Cell::Boolean(b) => return Ok(f32::from(u8::from(b))),
            Cell::Number(v) => v,
            _ => bail!("{:?} is not a number", s.trim()),
        },
        Value::Array(_) | Value::Object(_) => bail!("expected a number, got {}", kind(value)),
    };
    finite(v).map_err(|e| anyhow!("{value}: {e}"))
}

/// Refuses infinities (an f64 out of float32 range becomes one).
pub fn finite(v: f32) -> Result<f32> {
    if v.is_infinite() {
        bail!("infinite values are not accepted (out of float32 range?)");
    }
    Ok(v)
}

/// A categorical feature's value as text, trimmed as a CSV cell is; `None` where missing.
pub fn text(value: &Value) -> Option<String> {
    let s = match value {
        Value::Null => return None,
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    (!is_missing(&s)).then_some(s)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
