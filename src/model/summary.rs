//! A model's layers as Keras's `model.summary()` lists them: name, class, output shape and
//! parameters (trainable and frozen), for the summary a run prints when it starts.

use anyhow::Result;
use tch::Tensor;

use super::{activation, Dense};
use crate::config::Activation;
use crate::shim::ScriptModule;

/// One row of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// The child's name, as parameter names and model.pt spell it (`0`, `blocks`, ...).
    pub name: String,
    /// Its class (`Linear`, `ReLU`, a TorchScript module's class name).
    pub class: String,
    /// Its output's shape with the batch dimension as -1, when known.
    pub output: Option<Vec<i64>>,
    pub trainable: i64,
    pub frozen: i64,
}

/// The hand-written MLP's layers (`linear`, `embeddings`, `act`; `frozen` ranges of its flat
/// parameters), as its nn.Sequential in model.pt names them: each
/// categorical feature's embedding table, then Linear and activation by turns.
pub fn mlp_layers(
    linear: &[Dense],
    embeddings: &[Option<Tensor>],
    act: Activation,
    frozen: &[(i64, i64)],
) -> Vec<Layer> {
    let mut offset = 0;
    let mut counts = |t: &Tensor| {
        let n = t.numel() as i64;
        let held: i64 = frozen.iter().map(|&(start, len)| overlap((offset, n), (start, len))).sum();
        offset += n;
        (n - held, held)
    };
    let mut dense = Vec::new();
    let last = linear.len().saturating_sub(1);
    for (i, layer) in linear.iter().enumerate() {
        let (w, b) = (counts(&layer.weight), counts(&layer.bias));
        let width = layer.bias.size()[0];
        let name = super::child_name(i);
        dense.push(Layer {
            name,
            class: "Linear".into(),
            output: Some(vec![-1, width]),
            trainable: w.0 + b.0,
            frozen: w.1 + b.1,
        });
        if i < last && activation::op(act).script.is_some() {
            let name = (2 * i + 1).to_string();
            let class = activation_class(act).into();
            dense.push(Layer { name, class, output: Some(vec![-1, width]), trainable: 0, frozen: 0 });
        }
    }
    let mut layers = Vec::new();
    for (j, table) in embeddings.iter().enumerate() {
        if let Some(table) = table {
            let (trainable, frozen) = counts(table);
            let name = format!("{}.{j}", super::EMBEDDINGS);
            let output = Some(vec![-1, table.size()[1]]);
            layers.push(Layer { name, class: "Embedding".into(), output, trainable, frozen });
        }
    }
    layers.extend(dense);
    layers
}

/// A TorchScript module's children, run on `inputs` and on `fewer` (their first rows, one
/// row less: evaluation mode, no graph) for their output shapes, in which a dimension that
/// follows the rows is the batch's; their parameters are counted by name.
pub fn script_layers(module: &ScriptModule, inputs: &[&Tensor], fewer: &[&Tensor]) -> Result<Vec<Layer>> {
    let children = tch::no_grad(|| module.layers(inputs))?;
    let again = match fewer.first().is_some_and(|t| t.size().first() > Some(&0)) {
        true => tch::no_grad(|| module.layers(fewer))?,
        false => Vec::new(),
    };
    let params = module.named_tensors(false)?;
    Ok(children
        .into_iter()
        .enumerate()
        .map(|(i, child)| {
            let prefix = format!("{}.", child.name);
            let (mut trainable, mut frozen) = (0, 0);
            for (_, t) in params.iter().filter(|(name, _)| name.starts_with(&prefix)) {
                match t.requires_grad() {
                    true => trainable += t.numel() as i64,
                    false => frozen += t.numel() as i64,
                }
            }
            let other = again.get(i).and_then(|c| c.output.as_ref());
            let output = child.output.map(|shape| match other {
                Some(other) if other.len() == shape.len() => {
                    shape.iter().zip(other).map(|(&a, &b)| if a == b { a } else { -1 }).collect()
                }
                _ => shape,
            });
            Layer { name: child.name, class: class_name(&child.class), output, trainable, frozen }
        })
        .collect())
}

/// The rows as a table: `Layer (type)  Output shape  Param #`, Keras's columns, with the
/// batch dimension shown as `None` as Keras shows it, and a frozen count where there is one.
pub fn table(layers: &[Layer]) -> String {
    let rows: Vec<[String; 3]> = layers
        .iter()
        .map(|l| {
            let shape = l.output.as_ref().map_or("?".to_string(), |s| {
                let dims: Vec<String> = s.iter().map(|&d| if d < 0 { "None".into() } else { d.to_string() }).collect();
                format!("({})", dims.join(", "))
            });
            let params = match l.frozen {
                0 => (l.trainable).to_string(),
                f => format!("{} ({f} frozen)", l.trainable + f),
            };
            [format!("{} ({})", l.name, l.class), shape, params]
        })
        .collect();
    let header = ["Layer (type)".to_string(), "Output shape".into(), "Param #".into()];
    let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (a, b) = (width(0), width(1));
    let mut text = String::new();
    for row in [&header].into_iter().chain(&rows) {
        text += format!("  {:<a$}  {:<b$}  {}\n", row[0], row[1], row[2]).trim_end();
        text.push('\n');
    }
    text
}

/// A TorchScript class's name as Python spells it: the last part of its qualified name; a
/// module torchfit generated numbers its classes apart (`Linear0`, `Linear2`), which the
/// summary leaves out.
fn class_name(qualified: &str) -> String {
    let name = qualified.rsplit('.').next().unwrap_or(qualified);
    match qualified.starts_with(GENERATED) {
        true => name.trim_end_matches(|c: char| c.is_ascii_digit()).to_string(),
        false => name.to_string(),
    }
}

/// Where the classes of the modules torchfit generates live (`ScriptModule::new`'s names).
const GENERATED: &str = "__torch__.torchfit.";

fn overlap((a, n): (i64, i64), (b, m): (i64, i64)) -> i64 {
    ((a + n).min(b + m) - a.max(b)).max(0)
}

/// The torch.nn class applying `activation`.
fn activation_class(activation: Activation) -> &'static str {
    match activation {
        Activation::Relu => "ReLU",
        Activation::Tanh => "Tanh",
        Activation::Sigmoid => "Sigmoid",
        Activation::Gelu => "GELU",
        Activation::LeakyRelu => "LeakyReLU",
        Activation::Elu => "ELU",
        Activation::Silu => "SiLU",
        Activation::Linear => "Identity",
    }
}
