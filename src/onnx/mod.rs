//! `torchfit export --format onnx`: the model as an ONNX graph (opset 17), written from the
//! MLP's weights, since libtorch's C++ API has no ONNX exporter. The graph computes what
//! model.pt's `forward` and `predict_proba` do, preprocessing included:
//!
//! - inputs: `numeric`, float32 `[batch, N]`, the numeric features in raw units (NaN where
//!   missing, when the run fills missing values), when the model has any; `codes`, int64
//!   `[batch, C]`, the level index of each categorical feature, when it has any (the indices
//!   of `categorical.json`'s levels, as `torchfit` encodes them; model.pt's `encode` maps
//!   text to them). Typed inputs rather than model.pt's one float matrix: an index is an
//!   integer, and ONNX's OneHot and Gather take it as one.
//! - outputs: regression `predictions`, float32 `[batch, targets]` in the data's units;
//!   classification `predictions`, int64 `[batch]` (the class index) and `probabilities`,
//!   float32 `[batch, classes]`. The names are those of `torchfit serve`'s V2 outputs.
//! - metadata_props: `features`, `labels`, `categorical` (the JSON of model.pt's extra
//!   files), so that a user of the file alone can name columns and classes.
//!
//! The ops are those of the TorchScript, one for one, so that onnxruntime's float32 results
//! equal libtorch's to rounding: Where(IsNaN) for the fill, Sub and Div for the
//! standardisation, OneHot or Gather for the categorical features, Gemm per layer.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use prost::Message;
use tch::{Device, Kind, Tensor};

use crate::atomic;
use crate::config::{Activation, Loss, ModelConfig, ModelKind, TextEncoderKind};
use crate::data::Preprocessing;
use crate::model::{Input, Mlp, Model, EMBEDDINGS};

mod ft_transformer;
mod numeric;
mod proto;
mod resnet;
mod tabm;
mod text;
use proto::*;

/// The ONNX operator set the graph is written for: 17 is the oldest the issue allows, and
/// the widest supported (onnxruntime since 1.11). Gelu is only an op from 20 on, so it is
/// spelt out with Erf.
pub const OPSET: i64 = 17;
/// The IR version of opset 17 (onnx's versioning table: IR 8 came with opset 17).
const IR_VERSION: i64 = 8;
/// The free first dimension of every input and output.
const BATCH: &str = "batch";

/// A kind's network as a graph: the graph, its inputs, the network's output and the model's
/// description.
type Network = (Graph, Vec<ValueInfoProto>, String, &'static str);

/// Writes the ONNX model of a trained built-in model of kind `cfg.kind` (not a user's
/// TorchScript module, whose layers torchfit cannot see) to `path`, atomically.
pub fn write_model(model: &dyn Model, cfg: &ModelConfig, pre: &Preprocessing, loss: Loss, path: &Path) -> Result<()> {
    if let Some(mlp) = model.as_mlp() {
        return write(mlp, pre, loss, path);
    }
    let input = Input::for_model(pre, cfg);
    if let (Some(_), Some(encoder)) = (&input.text, &cfg.text) {
        if encoder.encoder != TextEncoderKind::Bag || cfg.kind == ModelKind::FtTransformer {
            bail!(
                "torchfit has no ONNX export of model.text encoder {} with model.kind {} yet (the bag encoder exports with mlp, resnet and tabm); export TorchScript instead",
                crate::config::yaml_name(&encoder.encoder),
                crate::config::yaml_name(&cfg.kind)
            );
        }
    }
    let state: HashMap<String, Tensor> = model.state_dict()?.into_iter().collect();
    let (g, inputs, x, doc) = match cfg.kind {
        ModelKind::Mlp => numeric::embedded_mlp(&state, cfg, &input, pre)?,
        ModelKind::Resnet => resnet::network(&state, &input, pre)?,
        ModelKind::Tabm => tabm::network(&state, cfg, &input, pre)?,
        ModelKind::FtTransformer => ft_transformer::network(state, cfg, &input, pre)?,
        ModelKind::Torchscript => bail!("torchfit has no ONNX export of a TorchScript module of your own"),
    };
    let bytes = finish(g, inputs, &x, model.outputs(), pre, loss, doc)?.encode_to_vec();
    atomic::write(path, &bytes)
}

/// Writes the ONNX model of `model` with `preprocessing` and the head of `loss` to `path`,
/// atomically.
pub fn write(model: &Mlp, preprocessing: &Preprocessing, loss: Loss, path: &Path) -> Result<()> {
    let bytes = model_proto(model, preprocessing, loss)?.encode_to_vec();
    // atomic::write names the file in its errors.
    atomic::write(path, &bytes)
}

/// The graph, its inputs and outputs, and its metadata.
fn model_proto(model: &Mlp, preprocessing: &Preprocessing, loss: Loss) -> Result<ModelProto> {
    let tables: Vec<Option<Tensor>> = model.embeddings.iter().map(|t| t.as_ref().map(Tensor::shallow_clone)).collect();
    let (mut g, inputs, mut x) = input_stage(&model.input, &tables, &[], preprocessing, None)?;
    let last = model.layers.len() - 1;
    for (i, layer) in model.layers.iter().enumerate() {
        let weight = g.tensor(&format!("{}.weight", 2 * i), &layer.weight)?;
        let bias = g.tensor(&format!("{}.bias", 2 * i), &layer.bias)?;
        x = g.op("Gemm", &[&x, &weight, &bias], vec![int("transB", 1)]);
        if i < last {
            x = activation(&mut g, model.activation, &x);
        }
    }
    finish(g, inputs, &x, model.outputs(), preprocessing, loss, "A torchfit MLP with its preprocessing")
}

/// Each categorical feature's embedding table in a state_dict (`embeddings.<j>.weight`),
/// `None` for a one-hot feature.
fn tables(input: &Input, state: &HashMap<String, Tensor>) -> Result<Vec<Option<Tensor>>> {
    (0..input.categorical.len())
        .map(|j| match input.categorical[j].embedding {
            None => Ok(None),
            Some(_) => {
                let name = format!("{EMBEDDINGS}.{j}.weight");
                state.get(&name).map(|t| Some(t.shallow_clone())).with_context(|| format!("the model has no `{name}`"))
            }
        })
        .collect()
}

/// The graph's inputs and the network's input `h0` from them: the numeric features filled
/// and standardised, then each categorical feature one-hot or looked up in its table
/// (`tables[j]`, `None` for one-hot), then each text column's bag of its embedding table
/// (`text_tables[j]`).
fn input_stage(
    input: &Input,
    tables: &[Option<Tensor>],
    text_tables: &[Tensor],
    preprocessing: &Preprocessing,
    embed: Option<&numeric::Embed>,
) -> Result<(Graph, Vec<ValueInfoProto>, String)> {
    let numeric = input.numeric;
    if preprocessing.input_mean.len() != numeric {
        bail!("the preprocessing has {} numeric features, the model {numeric}", preprocessing.input_mean.len());
    }
    let mut g = Graph::default();
    let mut inputs = Vec::new();
    let mut parts = Vec::new();
    if numeric > 0 {
        let x = numeric_stage(&mut g, &mut inputs, numeric, preprocessing);
        parts.push(match embed {
            Some(embed) => embed.apply(&mut g, &x)?,
            None => x,
        });
    }
    let categorical = &input.categorical;
    if !categorical.is_empty() {
        codes_input(&mut inputs, categorical.len());
        for (j, (c, table)) in categorical.iter().zip(tables).enumerate() {
            let code = code_column(&mut g, j);
            parts.push(match table {
                Some(table) => {
                    let table = g.tensor(&format!("{EMBEDDINGS}.{j}.weight"), table)?;
                    g.op("Gather", &[&table, &code], vec![int("axis", 0)])
                }
                None => {
                    let depth = g.int64s(&format!("levels_{j}"), &[], &[c.levels as i64]);
                    let values = g.floats(&format!("one_hot_values_{j}"), &[2], &[0.0, 1.0]);
                    g.op("OneHot", &[&code, &depth, &values], vec![int("axis", -1)])
                }
            });
        }
    }
    if let Some(text) = &input.text {
        parts.extend(text::bags(&mut g, &mut inputs, text, text_tables)?);
    }
    let x = match parts.len() {
        0 => bail!("the model has no input features"),
        1 => parts.remove(0),
        _ => {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            g.op("Concat", &refs, vec![int("axis", 1)])
        }
    };
    Ok((g, inputs, x))
}

/// The `numeric` input, filled and standardised as model.pt does.
fn numeric_stage(g: &mut Graph, inputs: &mut Vec<ValueInfoProto>, numeric: usize, pre: &Preprocessing) -> String {
    inputs.push(value_info("numeric", FLOAT, &[None, Some(numeric as i64)], "numeric features, raw units"));
    let mut x = "numeric".to_string();
    if let Some(fill) = &pre.input_fill {
        let fill = g.floats("input_fill", &[numeric as i64], fill);
        let nan = g.op("IsNaN", &[&x], vec![]);
        x = g.op("Where", &[&nan, &fill, &x], vec![]);
    }
    let mean = g.floats("input_mean", &[numeric as i64], &pre.input_mean);
    let std = g.floats("input_std", &[numeric as i64], &pre.input_std);
    let centred = g.op("Sub", &[&x, &mean], vec![]);
    g.op("Div", &[&centred, &std], vec![])
}

/// The `codes` input of `columns` categorical features.
fn codes_input(inputs: &mut Vec<ValueInfoProto>, columns: usize) {
    let doc = "level index of each categorical feature (categorical.json)";
    inputs.push(value_info("codes", INT64, &[None, Some(columns as i64)], doc));
}

/// Categorical feature `j`'s codes, `[batch]`.
fn code_column(g: &mut Graph, j: usize) -> String {
    let index = g.int64s(&format!("column_{j}"), &[], &[j as i64]);
    g.op("Gather", &["codes", &index], vec![int("axis", 1)])
}

/// The model around the graph: the head on the network's output `x`, the metadata.
fn finish(
    mut g: Graph,
    inputs: Vec<ValueInfoProto>,
    x: &str,
    outputs: i64,
    preprocessing: &Preprocessing,
    loss: Loss,
    doc: &str,
) -> Result<ModelProto> {
    let outputs = head(&mut g, x, outputs, preprocessing, loss);
    let graph = GraphProto {
        node: g.nodes,
        name: Some("torchfit".into()),
        initializer: g.initializers,
        input: inputs,
        output: outputs,
    };
    let mut metadata = vec![("features", serde_json::to_string(&preprocessing.feature_names)?)];
    if let Some(labels) = &preprocessing.labels {
        metadata.push(("labels", serde_json::to_string(labels)?));
    }
    if !preprocessing.categorical.is_empty() {
        metadata.push(("categorical", serde_json::to_string(&preprocessing.categorical)?));
    }
    if let Some(text) = &preprocessing.text {
        metadata.push(("text", serde_json::to_string(&text.summary())?));
        metadata.push(("tokenizer", serde_json::to_string(&text.tokenizer)?));
    }
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("torchfit".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!("{doc}; see docs/interop.md")),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(k, v)| StringStringEntryProto { key: Some(k.into()), value: Some(v) })
            .collect(),
    })
}

/// The hidden activation applied to `x`, as the ops libtorch's kernel computes it.
fn activation(g: &mut Graph, activation: Activation, x: &str) -> String {
    match activation {
        Activation::Relu => g.op("Relu", &[x], vec![]),
        Activation::Tanh => g.op("Tanh", &[x], vec![]),
        Activation::Sigmoid => g.op("Sigmoid", &[x], vec![]),
        // torch's exact gelu ("none"), as its CPU kernel computes it:
        // x * 0.5 * (1 + erf(x * (1 / sqrt 2))).
        Activation::Gelu => {
            let rsqrt2 = g.scalar(std::f32::consts::FRAC_1_SQRT_2);
            let (half, one) = (g.scalar(0.5), g.scalar(1.0));
            let scaled = g.op("Mul", &[x, &rsqrt2], vec![]);
            let erf = g.op("Erf", &[&scaled], vec![]);
            let shifted = g.op("Add", &[&erf, &one], vec![]);
            let halved = g.op("Mul", &[x, &half], vec![]);
            g.op("Mul", &[&halved, &shifted], vec![])
        }
        Activation::LeakyRelu => g.op("LeakyRelu", &[x], vec![float("alpha", 0.01)]),
        Activation::Elu => g.op("Elu", &[x], vec![float("alpha", 1.0)]),
        Activation::Silu => {
            let sigmoid = g.op("Sigmoid", &[x], vec![]);
            g.op("Mul", &[x, &sigmoid], vec![])
        }
        Activation::Linear => x.to_string(),
    }
}

/// The outputs from the network's output `x`: what model.pt's `forward` (and
/// `predict_proba`) return.
fn head(g: &mut Graph, x: &str, outputs: i64, preprocessing: &Preprocessing, loss: Loss) -> Vec<ValueInfoProto> {
    match loss {
        Loss::CrossEntropy => {
            g.op_into("ArgMax", &[x], vec![int("axis", 1), int("keepdims", 0)], "predictions");
            g.op_into("Softmax", &[x], vec![int("axis", 1)], "probabilities");
            classifier_outputs(outputs)
        }
        Loss::Bce => {
            let axes = g.axes(&[1]);
            let logit = g.op("Squeeze", &[x, &axes], vec![]);
            let zero = g.scalar(0.0);
            let positive = g.op("Greater", &[&logit, &zero], vec![]);
            g.op_into("Cast", &[&positive], vec![int("to", INT64 as i64)], "predictions");
            let p = g.op("Sigmoid", &[x], vec![]);
            let one = g.scalar(1.0);
            let q = g.op("Sub", &[&one, &p], vec![]);
            g.op_into("Concat", &[&q, &p], vec![int("axis", 1)], "probabilities");
            classifier_outputs(2)
        }
        Loss::Mse | Loss::Mae | Loss::Huber => {
            let targets = preprocessing.target_mean.len() as i64;
            let std = g.floats("target_std", &[targets], &preprocessing.target_std);
            let mean = g.floats("target_mean", &[targets], &preprocessing.target_mean);
            let scaled = g.op("Mul", &[x, &std], vec![]);
            g.op_into("Add", &[&scaled, &mean], vec![], "predictions");
            vec![value_info("predictions", FLOAT, &[None, Some(outputs)], "predictions in the data's units")]
        }
    }
}

fn classifier_outputs(classes: i64) -> Vec<ValueInfoProto> {
    vec![
        value_info("predictions", INT64, &[None], "class index (metadata `labels` names it)"),
        value_info("probabilities", FLOAT, &[None, Some(classes)], "class probabilities"),
    ]
}

/// The nodes and constants of a graph being built; values get fresh names `v<n>`.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next: usize,
}

impl Graph {
    /// A node of `op_type` on `inputs`, returning the name of its one output.
    fn op(&mut self, op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let output = format!("v{}", self.next);
        self.op_into(op_type, inputs, attribute, &output);
        output
    }

    /// A node writing to the named `output` (a graph output).
    fn op_into(&mut self, op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>, output: &str) {
        self.next += 1;
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(format!("{op_type}_{}", self.next)),
            op_type: Some(op_type.to_string()),
            attribute,
        });
    }

    fn constant(&mut self, name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type),
            name: Some(name.to_string()),
            raw_data: Some(raw),
        });
        name.to_string()
    }

    fn floats(&mut self, name: &str, dims: &[i64], values: &[f32]) -> String {
        self.constant(name, dims, FLOAT, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn int64s(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        self.constant(name, dims, INT64, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// A one-dimensional int64 constant (axes, slice bounds), one per value list: two
    /// constants of equal value under two names, one used by an Unsqueeze and one by a
    /// Squeeze, make onnxruntime's extended graph optimisations fail to load the model
    /// ("Attempt to replace the existing tensor", onnxruntime 1.32).
    fn axes(&mut self, values: &[i64]) -> String {
        let spelt: Vec<String> = values.iter().map(|v| v.to_string().replace('-', "m")).collect();
        let name = format!("axes_{}", spelt.join("_"));
        if !self.initializers.iter().any(|t| t.name.as_deref() == Some(name.as_str())) {
            self.int64s(&name, &[values.len() as i64], values);
        }
        name
    }

    /// A float32 scalar constant under a fresh name.
    fn scalar(&mut self, value: f32) -> String {
        self.next += 1;
        let name = format!("c{}", self.next);
        self.floats(&name, &[], &[value])
    }

    /// A parameter tensor of the model, as float32.
    fn tensor(&mut self, name: &str, t: &Tensor) -> Result<String> {
        let flat = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]);
        let values = Vec::<f32>::try_from(&flat).with_context(|| format!("reading parameter {name}"))?;
        Ok(self.floats(name, &t.size(), &values))
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        ints: values.to_vec(),
        r#type: Some(ATTRIBUTE_INTS),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(value), r#type: Some(ATTRIBUTE_INT), ..Default::default() }
}

fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), f: Some(value), r#type: Some(ATTRIBUTE_FLOAT), ..Default::default() }
}

/// A float32 or int64 tensor's name, type and shape (`None`: the batch dimension).
fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Some(n) => Dimension { dim_value: Some(*n), dim_param: None },
            None => Dimension { dim_value: None, dim_param: Some(BATCH.into()) },
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type: Some(elem_type), shape: Some(TensorShapeProto { dim }) }),
        }),
        doc_string: Some(doc.into()),
    }
}
