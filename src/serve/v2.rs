//! The Open Inference Protocol (KServe V2) as Triton speaks it over REST: model metadata,
//! and inference requests and responses, with the binary tensor extension that Triton's
//! clients use by default (a JSON header of `Inference-Header-Content-Length` bytes, then
//! each binary tensor's bytes in order: little-endian numbers, and BYTES elements as a
//! 4-byte little-endian length and the bytes).
//!
//! Inputs: `input`, FP32 `[batch, numeric features]`; and, for each categorical feature, a
//! BYTES tensor `[batch]` (or `[batch, 1]`) named after its column. Outputs: `predictions`
//! (regression: FP32 `[batch, targets]` in the data's units; classification: INT64 class
//! indices `[batch]`), and for classifiers `labels` (BYTES `[batch]`) and `probabilities`
//! (FP32 `[batch, classes]`). An array model takes one input, `input`, `[batch, ...its
//! per-sample dims]`, FP32 or INT64 as it was trained (model.pt's input.json).

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

use super::batcher::Predicted;
use super::input::{ArrayValues, Rows};
use super::rows::{finite, text};
use crate::data::clip;
use crate::predict::array::v2_datatype;
use crate::predict::{ArrayInput, Dtype, Predictor};

pub const INPUT: &str = "input";

/// The model's metadata: `GET /v2/models/{name}`.
pub fn metadata(name: &str, predictor: &Predictor, targets: usize) -> Value {
    let mut inputs = match predictor.array() {
        Some(array) => {
            let shape: Vec<i64> = std::iter::once(-1).chain(array.shape.iter().copied()).collect();
            vec![json!({"name": INPUT, "datatype": v2_datatype(array.dtype), "shape": shape})]
        }
        // A model of text columns only takes no numeric input.
        None if predictor.features().is_empty() => Vec::new(),
        None => vec![json!({"name": INPUT, "datatype": "FP32", "shape": [-1, predictor.features().len()]})],
    };
    for feature in predictor.text_inputs() {
        inputs.push(json!({"name": feature, "datatype": "BYTES", "shape": [-1]}));
    }
    let outputs = match predictor.labels() {
        Some(labels) => vec![
            json!({"name": "predictions", "datatype": "INT64", "shape": [-1]}),
            json!({"name": "labels", "datatype": "BYTES", "shape": [-1]}),
            json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, labels.len()]}),
        ],
        None => vec![json!({"name": "predictions", "datatype": "FP32", "shape": [-1, targets]})],
    };
    // Beyond the protocol's fields: what `input`'s columns are (an array model's input.json
    // instead), and the classes' labels.
    let parameters = match predictor.array() {
        Some(array) => json!({"input": array, "labels": predictor.labels()}),
        None => json!({"features": predictor.features(), "labels": predictor.labels()}),
    };
    json!({"name": name, "versions": ["1"], "platform": "torchfit", "inputs": inputs, "outputs": outputs, "parameters": parameters})
}

/// An inference request: its JSON header and the binary part after it (empty without the
/// binary extension).
pub struct Request {
    pub header: Value,
    pub binary: Vec<u8>,
}

impl Request {
    /// Splits a body at `Inference-Header-Content-Length` (the whole body without it).
    pub fn parse(body: &[u8], header_length: Option<&str>) -> Result<Request> {
        let length = match header_length {
            None => body.len(),
            Some(text) => text.trim().parse::<usize>().ok().filter(|&n| n <= body.len()).ok_or_else(|| {
                anyhow!(
                    "Inference-Header-Content-Length {text:?} is not a length within the body's {} bytes",
                    body.len()
                )
            })?,
        };
        let header = serde_json::from_slice(&body[..length]).map_err(|e| anyhow!("the body is not valid JSON: {e}"))?;
        Ok(Request { header, binary: body[length..].to_vec() })
    }

    /// The rows of the request's inputs, checked against the model's: every input's
    /// datatype and shape, and its values (JSON or binary) against its shape, before
    /// anything is allocated for them.
    pub fn rows(&self, predictor: &Predictor) -> Result<Rows> {
        let Value::Object(fields) = &self.header else { bail!("the body must be a JSON object with `inputs`") };
        let Some(Value::Array(inputs)) = fields.get("inputs") else { bail!("the body has no `inputs` list") };
        if let Some(array) = predictor.array() {
            return self.array_rows(inputs, array, predictor);
        }
        let features = predictor.features().len();
        let categorical = predictor.text_inputs();
        let mut numeric: Option<(usize, Vec<f32>)> = None;
        let mut text: Vec<Option<(usize, Vec<Option<String>>)>> = vec![None; categorical.len()];
        let mut offset = 0;
        for (k, input) in inputs.iter().enumerate() {
            let tensor = Tensor::of(input, k)?;
            let data = tensor.data(&self.binary, &mut offset)?;
            if tensor.name == INPUT {
                if numeric.is_some() {
                    bail!("input `{INPUT}` is given twice");
                }
                tensor.expect("FP32", features)?;
                numeric = Some((tensor.shape[0], tensor.floats(&data)?));
            } else if let Some(j) = categorical.iter().position(|c| *c == tensor.name) {
                if text[j].is_some() {
                    bail!("input `{}` is given twice", tensor.name);
                }
                tensor.expect("BYTES", 1)?;
                text[j] = Some((tensor.shape[0], tensor.strings(&data)?));
            } else {
                bail!("the model has no input `{}` (its inputs are {})", tensor.name, input_names(predictor));
            }
        }
        if offset != self.binary.len() {
            bail!(
                "the binary part has {} bytes, but the inputs' binary_data_size add up to {offset}",
                self.binary.len()
            );
        }
        // Without numeric features the first text column sets the batch's rows.
        let (batch, (count, numeric)) = match (numeric, categorical.first()) {
            (Some(numeric), _) => (INPUT, numeric),
            (None, Some(first)) if features == 0 => {
                (first.as_str(), (text[0].as_ref().map_or(0, |(rows, _)| *rows), Vec::new()))
            }
            (None, _) => bail!("input `{INPUT}` is missing (FP32 [batch, {features}])"),
        };
        let mut columns = Vec::with_capacity(categorical.len());
        for (feature, column) in categorical.iter().zip(text) {
            let (rows, values) = column.ok_or_else(|| anyhow!("input `{feature}` is missing (BYTES [batch])"))?;
            if rows != count {
                bail!("input `{feature}` has {rows} rows, but `{batch}` has {count}");
            }
            columns.push(values);
        }
        Rows::new(predictor, count, numeric, columns)
    }

    /// An array model's one input, `input`: its datatype and shape `[batch, ...dims]` as the
    /// model's, its values as many as the shape holds.
    fn array_rows(&self, inputs: &[Value], array: &ArrayInput, predictor: &Predictor) -> Result<Rows> {
        let want = || format!("{} {}", v2_datatype(array.dtype), array.batch_shape("batch"));
        let [input] = inputs else {
            bail!("the model takes one input, `{INPUT}` ({}); {} were given", want(), inputs.len());
        };
        let tensor = Tensor::of(input, 0)?;
        if tensor.name != INPUT {
            bail!("the model has no input `{}` (its input is `{INPUT}`, {})", tensor.name, want());
        }
        if tensor.datatype != v2_datatype(array.dtype) {
            bail!("input `{INPUT}` has datatype {}, but the model takes {}", tensor.datatype, want());
        }
        let dims: Vec<i64> = tensor.shape.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
        if dims.len() != array.shape.len() + 1 || dims[1..] != array.shape[..] {
            bail!("input `{INPUT}` has shape {:?}, but the model takes {}", tensor.shape, want());
        }
        let mut offset = 0;
        let data = tensor.data(&self.binary, &mut offset)?;
        if offset != self.binary.len() {
            bail!("the binary part has {} bytes, but the input's binary_data_size is {offset}", self.binary.len());
        }
        let values = match array.dtype {
            Dtype::Float32 => ArrayValues::F32(tensor.floats(&data)?),
            Dtype::Int64 => ArrayValues::I64(tensor.ints(&data)?),
        };
        Rows::array(predictor, tensor.shape[0], values)
    }

    /// The outputs asked for (all of them by default), each with whether it is wanted as
    /// binary: checked before the request is queued.
    pub fn outputs(&self, predictor: &Predictor) -> Result<Vec<(&'static str, bool)>> {
        let parameters = self.header.get("parameters");
        let all_binary = parameters.and_then(|p| p.get("binary_data_output")).and_then(Value::as_bool).unwrap_or(false);
        let available = output_names(predictor);
        let Some(asked) = self.header.get("outputs") else {
            return Ok(available.iter().map(|&name| (name, all_binary)).collect());
        };
        let Value::Array(asked) = asked else { bail!("`outputs` must be a list") };
        asked
            .iter()
            .enumerate()
            .map(|(k, o)| {
                let name =
                    o.get("name").and_then(Value::as_str).ok_or_else(|| anyhow!("outputs[{k}] has no `name`"))?;
                let name = available.iter().find(|&&a| a == name).ok_or_else(|| {
                    let names: Vec<String> = available.iter().map(|o| format!("`{o}`")).collect();
                    anyhow!("the model has no output `{}` (its outputs are {})", clip(name), names.join(", "))
                })?;
                let binary = o.get("parameters").and_then(|p| p.get("binary_data")).and_then(Value::as_bool);
                Ok((*name, binary.unwrap_or(all_binary)))
            })
            .collect()
    }
}

fn input_names(predictor: &Predictor) -> String {
    if predictor.array().is_some() {
        return format!("`{INPUT}`");
    }
    let numeric = (!predictor.features().is_empty()).then(|| format!("`{INPUT}`"));
    let names: Vec<String> =
        numeric.into_iter().chain(predictor.text_inputs().iter().map(|c| format!("`{c}`"))).collect();
    names.join(", ")
}

/// One input tensor's header.
struct Tensor<'a> {
    name: String,
    datatype: &'a str,
    shape: Vec<usize>,
    json: Option<&'a Value>,
    binary_size: Option<usize>,
}

/// An input's values, from JSON or from the binary part.
enum Data<'a> {
    Json(Vec<&'a Value>),
    Binary(&'a [u8]),
}

impl<'a> Tensor<'a> {
    fn of(input: &'a Value, k: usize) -> Result<Tensor<'a>> {
        let field = |f: &str| input.get(f).ok_or_else(|| anyhow!("inputs[{k}] has no `{f}`"));
        let name = field("name")?.as_str().ok_or_else(|| anyhow!("inputs[{k}].name must be a string"))?;
        let name = clip(name).into_owned();
        let datatype =
            field("datatype")?.as_str().ok_or_else(|| anyhow!("input `{name}`: datatype must be a string"))?;
        let shape = field("shape")?
            .as_array()
            .and_then(|dims| dims.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect())
            .ok_or_else(|| anyhow!("input `{name}`: shape must be a list of whole numbers >= 0"))?;
        let binary_size = match input.get("parameters").and_then(|p| p.get("binary_data_size")) {
            None => None,
            Some(size) => Some(
                size.as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| anyhow!("input `{name}`: binary_data_size must be a whole number"))?,
            ),
        };
        Ok(Tensor { name, datatype: cut_str(datatype), shape, json: input.get("data"), binary_size })
    }

    /// Checks the datatype and the shape: `[batch, width]`, or `[batch]` for width 1.
    fn expect(&self, datatype: &str, width: usize) -> Result<()> {
        let name = &self.name;
        if self.datatype != datatype {
            bail!("input `{name}` has datatype {}, but the model takes {datatype}", self.datatype);
        }
        let fits = match self.shape.as_slice() {
            [_, w] => *w == width,
            [_] => width == 1,
            _ => false,
        };
        if !fits {
            let want = if width == 1 { "[batch] or [batch, 1]".to_string() } else { format!("[batch, {width}]") };
            bail!("input `{name}` has shape {:?}, but the model takes {want}", self.shape);
        }
        Ok(())
    }

    /// The number of values the shape holds, in checked arithmetic: a shape's product is
    /// the client's number, and may not fit in memory or even in a machine word.
    fn elements(&self) -> Result<usize> {
        let product = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        product.ok_or_else(|| anyhow!("input `{}` has shape {:?}, which holds too many values", self.name, self.shape))
    }

    /// The input's values as given: its `data`, or its bytes of the binary part (at
    /// `offset`, which moves past them). Nothing is allocated for the declared shape.
    fn data(&self, binary: &'a [u8], offset: &mut usize) -> Result<Data<'a>> {
        let name = &self.name;
        match (self.json, self.binary_size) {
            (Some(_), Some(_)) => bail!("input `{name}` has both `data` and binary_data_size"),
            (None, None) => bail!("input `{name}` has no `data`"),
            (None, Some(size)) => {
                let bytes = offset.checked_add(size).and_then(|end| binary.get(*offset..end)).ok_or_else(|| {
                    anyhow!(
                        "input `{name}`: binary_data_size {size} runs past the body's binary part ({} bytes)",
                        binary.len()
                    )
                })?;
                *offset += size;
                Ok(Data::Binary(bytes))
            }
            (Some(data), None) => {
                // As many values as the body holds, whatever the shape claims.
                let mut flat = Vec::new();
                flatten(data, &mut flat);
                Ok(Data::Json(flat))
            }
        }
    }

    /// FP32 values, exactly as many as the shape holds, all finite or missing.
    fn floats(&self, data: &Data) -> Result<Vec<f32>> {
        let name = &self.name;
        let want = self.elements()?;
        let values: Vec<f32> = match data {
            Data::Json(values) => {
                self.count(values.len(), want)?;
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_f64().map(|v| v as f32).ok_or_else(|| {
                            anyhow!("input `{name}`: value {i} ({}) is not a number", clip(&v.to_string()))
                        })
                    })
                    .collect::<Result<_>>()?
            }
            Data::Binary(bytes) => {
                self.binary(bytes, want, 4, "FP32")?.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
        };
        for (i, &v) in values.iter().enumerate() {
            finite(v).map_err(|e| anyhow!("input `{name}`: value {i}: {e}"))?;
        }
        Ok(values)
    }

    /// INT64 values, exactly as many as the shape holds: JSON whole numbers, or 8
    /// little-endian bytes each.
    fn ints(&self, data: &Data) -> Result<Vec<i64>> {
        let name = &self.name;
        let want = self.elements()?;
        match data {
            Data::Json(values) => {
                self.count(values.len(), want)?;
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_i64().ok_or_else(|| {
                            anyhow!("input `{name}`: value {i} ({}) is not a whole number", clip(&v.to_string()))
                        })
                    })
                    .collect()
            }
            Data::Binary(bytes) => Ok(self
                .binary(bytes, want, 8, "INT64")?
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect()),
        }
    }

    /// The `width`-byte elements of a binary tensor of `datatype`, which must be exactly `want`
    /// of them.
    fn binary<'b>(
        &self,
        bytes: &'b [u8],
        want: usize,
        width: usize,
        datatype: &str,
    ) -> Result<std::slice::ChunksExact<'b, u8>> {
        if want.checked_mul(width) != Some(bytes.len()) {
            bail!(
                "input `{}`: binary_data_size is {} bytes, but its shape {:?} of {datatype} takes {want} x {width} bytes",
                self.name,
                bytes.len(),
                self.shape
            );
        }
        Ok(bytes.chunks_exact(width))
    }

    /// BYTES elements as text, exactly as many as the shape holds.
    fn strings(&self, data: &Data) -> Result<Vec<Option<String>>> {
        let name = &self.name;
        let want = self.elements()?;
        let out = match data {
            Data::Json(values) => values.iter().map(|v| text(v)).collect(),
            Data::Binary(mut bytes) => {
                let mut out = Vec::new();
                while !bytes.is_empty() && out.len() < want {
                    let (length, rest) = bytes
                        .split_first_chunk::<4>()
                        .ok_or_else(|| anyhow!("input `{name}`: binary BYTES data ends inside a length"))?;
                    let length = u32::from_le_bytes(*length) as usize;
                    let element = rest
                        .get(..length)
                        .ok_or_else(|| anyhow!("input `{name}`: binary BYTES data ends inside an element"))?;
                    let element = std::str::from_utf8(element)
                        .map_err(|_| anyhow!("input `{name}`: element {} is not UTF-8 text", out.len()))?;
                    out.push(text(&Value::String(element.to_string())));
                    bytes = &rest[length..];
                }
                if !bytes.is_empty() {
                    bail!("input `{name}`: the binary data holds more elements than its shape {:?}", self.shape);
                }
                out
            }
        };
        self.count(out.len(), want)?;
        Ok(out)
    }

    fn count(&self, got: usize, want: usize) -> Result<()> {
        if got != want {
            bail!("input `{}` has {got} values, but its shape {:?} holds {want}", self.name, self.shape);
        }
        Ok(())
    }
}

/// A datatype from a request, as a message may quote it.
fn cut_str(text: &str) -> &str {
    text.char_indices().nth(40).map_or(text, |(end, _)| &text[..end])
}

/// V2 allows `data` flat or nested row-major.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other),
    }
}

/// The response to an inference request, and its binary part (for outputs asked for as
/// binary: by the output's `binary_data` parameter, or the request's `binary_data_output`).
/// `asked` is [`Request::outputs`], checked when the request came in.
pub fn response(
    name: &str,
    request: &Request,
    asked: &[(&str, bool)],
    predictor: &Predictor,
    predicted: &Predicted,
) -> Result<(Value, Vec<u8>)> {
    let available = outputs(predictor, predicted);
    let mut out = Vec::new();
    let mut binary = Vec::new();
    for &(wanted, as_binary) in asked {
        let output = available
            .iter()
            .find(|o| o.name == wanted)
            .ok_or_else(|| anyhow!("output `{wanted}` is not in the model's answer"))?;
        let mut entry = Map::new();
        entry.insert("name".into(), json!(output.name));
        entry.insert("datatype".into(), json!(output.datatype));
        entry.insert("shape".into(), json!(output.shape));
        if as_binary {
            let bytes = output.values.to_bytes();
            entry.insert("parameters".into(), json!({"binary_data_size": bytes.len()}));
            binary.extend(bytes);
        } else {
            entry.insert("data".into(), output.values.to_json());
        }
        out.push(Value::Object(entry));
    }
    let mut header = json!({"model_name": name, "model_version": "1", "outputs": out});
    if let Some(id) = request.header.get("id") {
        header["id"] = id.clone();
    }
    Ok((header, binary))
}

/// The outputs' names: what [`outputs`] answers for this model.
fn output_names(predictor: &Predictor) -> &'static [&'static str] {
    match predictor.labels() {
        Some(_) => &["predictions", "labels", "probabilities"],
        None => &["predictions"],
    }
}

struct Output {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<usize>,
    values: Values,
}

enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Text(Vec<String>),
}

impl Values {
    fn to_json(&self) -> Value {
        match self {
            Values::F32(v) => floats(v),
            Values::I64(v) => json!(v),
            Values::Text(v) => json!(v),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::Text(v) => {
                v.iter().flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes())).collect()
            }
        }
    }
}

fn outputs(predictor: &Predictor, predicted: &Predicted) -> Vec<Output> {
    match predicted {
        Predicted::Values { targets, values } => vec![Output {
            name: "predictions",
            datatype: "FP32",
            shape: vec![values.len() / targets.max(&1), *targets],
            values: Values::F32(values.clone()),
        }],
        Predicted::Classes { index, classes, proba } => {
            let labels = predictor.labels().unwrap_or_default();
            let names = index.iter().map(|&c| label(labels, c)).collect();
            vec![
                Output {
                    name: "predictions",
                    datatype: "INT64",
                    shape: vec![index.len()],
                    values: Values::I64(index.clone()),
                },
                Output { name: "labels", datatype: "BYTES", shape: vec![index.len()], values: Values::Text(names) },
                Output {
                    name: "probabilities",
                    datatype: "FP32",
                    shape: vec![index.len(), *classes],
                    values: Values::F32(proba.clone()),
                },
            ]
        }
    }
}

/// Float32 values as JSON numbers, each written as the shortest decimal that reads back
/// as the same float32 (as `torchfit predict` writes them), not as the float64 it widens to.
pub fn floats(values: &[f32]) -> Value {
    Value::Array(values.iter().map(|&v| float(v)).collect())
}

fn float(v: f32) -> Value {
    let shortest: f64 = v.to_string().parse().unwrap_or(f64::from(v));
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

/// A class index's label (the index itself should the model answer outside its labels).
pub fn label(labels: &[String], class: i64) -> String {
    usize::try_from(class).ok().and_then(|c| labels.get(c)).cloned().unwrap_or_else(|| class.to_string())
}
