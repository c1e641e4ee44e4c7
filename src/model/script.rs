//! The TorchScript module of an MLP's `model.pt`: its weights as real parameters named as
//! `torch.nn.Sequential` names them (so `state_dict()`, `load_state_dict` and fine-tuning
//! work in PyTorch), the preprocessing as buffers, and methods compiled from source.

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::dense::child_name;
use super::dense::Dense;
use super::input::{Input, EMBEDDINGS};
use crate::config::Loss;
use crate::data::{self, ArrayDtype, Preprocessing};
use crate::shim::ScriptModule;

/// TorchScript source for the exported module: `logits` (raw features in, the network's
/// output out: the same operations as `Mlp::forward` after the preprocessing, which applies
/// to the numeric features only; categorical features come in as level indices), `forward`
/// (what `torchfit predict` returns: values in the data's units, or class indices) and, for
/// classification, `predict_proba`.
pub fn script_source(input: &Input, network: &str, preprocessing: &Preprocessing, loss: Loss) -> String {
    let mut src = preprocess_source(input, preprocessing);
    src += network;
    src += "    return x\n\n";
    src + &prediction_source(preprocessing, loss)
}

/// The start of `logits`: raw features in `x`; the preprocessed numeric features in `x` and,
/// with categorical features, their level indices in `codes`.
fn preprocess_source(input: &Input, preprocessing: &Preprocessing) -> String {
    let mut src = String::from("def logits(self, x: Tensor) -> Tensor:\n    x = x.float()\n");
    src += &input.script_codes();
    if preprocessing.input_fill.is_some() {
        src += "    x = torch.where(torch.isnan(x), self.input_fill, x)\n";
    }
    src + "    x = (x - self.input_mean) / self.input_std\n"
}

/// `forward` and `predict_proba` from `logits`, and the categorical helpers.
fn prediction_source(preprocessing: &Preprocessing, loss: Loss) -> String {
    let mut src = String::from(match loss {
        Loss::CrossEntropy => concat!(
            "def forward(self, x: Tensor) -> Tensor:\n    return torch.argmax(self.logits(x), 1)\n\n",
            "def predict_proba(self, x: Tensor) -> Tensor:\n    return torch.softmax(self.logits(x), 1)\n",
        ),
        Loss::Bce => concat!(
            "def forward(self, x: Tensor) -> Tensor:\n    return (self.logits(x).squeeze(1) > 0.0).long()\n\n",
            "def predict_proba(self, x: Tensor) -> Tensor:\n    p = torch.sigmoid(self.logits(x))\n",
            "    return torch.cat([1.0 - p, p], 1)\n",
        ),
        Loss::Mse | Loss::Mae | Loss::Huber => {
            "def forward(self, x: Tensor) -> Tensor:\n    return self.logits(x) * self.target_std + self.target_mean\n"
        }
    });
    if !preprocessing.categorical.is_empty() {
        src += "\n";
        src += &data::categorical_script(&preprocessing.categorical, preprocessing.labels.is_some());
    }
    src
}

/// The trained module's attribute name inside `model.pt`'s wrapper (`m.net` in Python).
pub const USER_MODULE: &str = "net";

/// What an MLP's module is made of: its input stage, its layers' and embedding tables'
/// parameters, and the TorchScript of its network (`Mlp::script`).
pub(super) struct MlpParts<'a> {
    pub input: &'a Input,
    pub layers: &'a [Dense],
    pub embeddings: &'a [Option<Tensor>],
    pub network: String,
}

/// `model.pt` for a user module: a wrapper whose child `net` is (a CPU copy of) the trained
/// module, its own methods kept, with the preprocessing as buffers and `logits` (preprocess,
/// then `self.net`), `forward` and `predict_proba` as an MLP's model.pt has them, so
/// everything that runs a model.pt runs it alike.
pub(super) fn user_module(module: &ScriptModule, preprocessing: &Preprocessing, loss: Loss) -> Result<ScriptModule> {
    let net = module.deep_copy()?;
    tch::no_grad(|| -> Result<()> {
        for (_, t) in net.named_tensors(false)?.into_iter().chain(net.named_tensors(true)?) {
            t.shallow_clone().f_set_data(&t.f_to_device(tch::Device::Cpu)?)?;
        }
        Ok(())
    })?;
    net.set_training(false)?;
    let mut root = ScriptModule::new("__torch__.torchfit.UserModel")?;
    root.register_module(USER_MODULE, &net)?;
    register_preprocessing(&mut root, preprocessing)?;
    let input = Input::of(preprocessing);
    // Arrays go to the module as stored: float32, or int64 token ids.
    let mut src = match &preprocessing.input {
        Some(array) => {
            let cast = if array.dtype == ArrayDtype::Int64 { "long" } else { "float" };
            format!("def logits(self, x: Tensor) -> Tensor:\n    x = x.{cast}()\n")
        }
        None => preprocess_source(&input, preprocessing),
    };
    src += &format!("    return self.{USER_MODULE}.forward({})\n\n", input.arguments());
    src += &prediction_source(preprocessing, loss);
    root.define(&src).context("compiling the TorchScript methods around the module")?;
    root.set_training(false)?;
    Ok(root)
}

/// The preprocessing's buffers: `input_mean`, `input_std`, `input_fill` (with
/// `missing: mean`) and, for regression, `target_mean` and `target_std`.
fn register_preprocessing(root: &mut ScriptModule, preprocessing: &Preprocessing) -> Result<()> {
    let buffer = |values: &[f32]| Tensor::from_slice(values);
    root.register_tensor("input_mean", &buffer(&preprocessing.input_mean), true)?;
    root.register_tensor("input_std", &buffer(&preprocessing.input_std), true)?;
    if let Some(fill) = &preprocessing.input_fill {
        root.register_tensor("input_fill", &buffer(fill), true)?;
    }
    if preprocessing.labels.is_none() {
        root.register_tensor("target_mean", &buffer(&preprocessing.target_mean), true)?;
        root.register_tensor("target_std", &buffer(&preprocessing.target_std), true)?;
    }
    Ok(())
}

/// The module `export::write_torchscript` saves: parameters as `<2i>.weight` / `<2i>.bias` of child
/// modules `"0"`, `"2"`, ..., embedding tables as `weight` of the children `"<j>"` of child
/// `embeddings` (`j` the categorical feature's index), the preprocessing of the numeric
/// features as buffers (`input_mean`, `input_std`, `input_fill`, `target_mean`,
/// `target_std`), and the methods of [`script_source`], compiled.
pub(super) fn mlp_module(mlp: MlpParts, preprocessing: &Preprocessing, loss: Loss) -> Result<ScriptModule> {
    let MlpParts { input, layers, embeddings, network } = mlp;
    // The script would only fail on the first prediction, broadcasting one against the other.
    if preprocessing.input_mean.len() != input.numeric {
        bail!("the preprocessing has {} numeric features, the model {}", preprocessing.input_mean.len(), input.numeric);
    }
    let mut root = ScriptModule::new("__torch__.torchfit.Mlp")?;
    for (i, layer) in layers.iter().enumerate() {
        let child = child_name(i);
        let mut dense = ScriptModule::new(&format!("__torch__.torchfit.Linear{child}"))?;
        dense.register_tensor("weight", &layer.weight, false)?;
        dense.register_tensor("bias", &layer.bias, false)?;
        root.register_module(&child, &dense)?;
    }
    if embeddings.iter().any(Option::is_some) {
        let mut tables = ScriptModule::new("__torch__.torchfit.Embeddings")?;
        for (j, table) in embeddings.iter().enumerate() {
            if let Some(table) = table {
                let mut embedding = ScriptModule::new(&format!("__torch__.torchfit.Embedding{j}"))?;
                embedding.register_tensor("weight", table, false)?;
                tables.register_module(&j.to_string(), &embedding)?;
            }
        }
        root.register_module(EMBEDDINGS, &tables)?;
    }
    register_preprocessing(&mut root, preprocessing)?;
    root.define(&script_source(input, &network, preprocessing, loss)).context("compiling the TorchScript methods")?;
    Ok(root)
}
