//! A torchfit model.pt loaded once for many predictions: what `torchfit predict` runs on a
//! file, and what a server holds for its requests.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tch::{CModule, Device, IValue, Tensor};

use crate::config::{Config, Missing};
use crate::data::{self, CategoricalFeature, TextColumn, TextFeatures};
use crate::export::{self, ExtraFiles};
use crate::rundir;
use crate::shim::first_line;

use super::array::{self, ArrayInput};

/// A torchfit model: the TorchScript module (the preprocessing is inside it) and what its
/// extra files say about it: the feature names in input order, the class labels, the config.
pub struct Predictor {
    path: PathBuf,
    module: CModule,
    /// Where the module's parameters and buffers live, and so where its inputs go.
    device: Device,
    config: Config,
    features: Vec<String>,
    /// The categorical features (extra/categorical.json), whose level codes follow the
    /// numeric features in the model's input.
    categorical: Vec<CategoricalFeature>,
    labels: Option<Vec<String>>,
    /// A model trained on arrays: what one sample is (extra/input.json); `None` for a
    /// table's model.
    array: Option<ArrayInput>,
    /// Whether model.pt fills a missing numeric value (see [`Predictor::no_fill`]).
    fills: bool,
    /// A model with free-text columns: what they are (extra/text.json) and the tokenizer
    /// that turns them into the ids the model takes (extra/tokenizer.json).
    text: Option<(TextFeatures, torchfit_tokenize::TextTokenizer)>,
    /// The names of the inputs that take text: the categorical columns, then the free-text
    /// ones.
    text_inputs: Vec<String>,
}

/// What a model predicts for a batch of rows.
pub struct Prediction {
    /// Regression: `[rows, targets]` in the data's units. Classification: class indices
    /// `[rows]` into [`Predictor::labels`].
    pub output: Tensor,
    /// Classification, when asked for: `[rows, classes]` probabilities.
    pub proba: Option<Tensor>,
}

// A server shares one Predictor between its threads.
#[allow(dead_code)]
fn predictor_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Predictor>();
}

impl Predictor {
    /// Loads a model.pt that torchfit wrote, or a run directory's own, on the CPU.
    pub fn load(path: &Path) -> Result<Predictor> {
        Predictor::load_on(path, Device::Cpu)
    }

    /// [`Predictor::load`] onto `device`: its predictions take and return CPU tensors all
    /// the same, moving them to and from the device.
    pub fn load_on(path: &Path, device: Device) -> Result<Predictor> {
        let path = rundir::model_file(path)?;
        let file = path.display();
        // The extra files come straight from the archive, before libtorch parses anything:
        // TorchScript that torchfit did not write has none of them.
        let mut extra = ExtraFiles::open(&path)?;
        let not_ours = |name: &str| anyhow!("{file} is not a torchfit model (it has no extra/{name})");
        let array = extra.read("input.json")?.map(|bytes| array::parse(&bytes, &file.to_string())).transpose()?;
        // An array model's input is input.json's; features.json, if any, names nothing it reads.
        let features = match (extra.read("features.json")?, &array) {
            (_, Some(_)) => Vec::new(),
            (Some(bytes), None) => json_names(&path, "features.json", &bytes)?,
            (None, None) => return Err(not_ours("features.json")),
        };
        // A table of categorical or text features only has no numeric ones to name.
        let other = ["categorical.json", "text.json"];
        if features.is_empty() && array.is_none() && other.iter().all(|f| !extra.has(f)) {
            bail!("{file}: extra/features.json names no features");
        }
        let yaml = extra.read("config.yaml")?.ok_or_else(|| not_ours("config.yaml"))?;
        let yaml = String::from_utf8(yaml).map_err(|_| anyhow!("{file}: extra/config.yaml is not UTF-8 text"))?;
        let config = Config::parse(&yaml, &format!("{file}: extra/config.yaml"), &[])?;
        let labels = extra.read("labels.json")?.map(|bytes| json_names(&path, "labels.json", &bytes)).transpose()?;
        let categorical = match extra.read("categorical.json")? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{file}: extra/categorical.json is not a list of categorical features"))?,
            None => Vec::new(),
        };
        // Under data.missing: mean, model.pt fills where its code reads a fill: earlier
        // versions left it out when the training table had no missing value.
        let fills =
            config.data.missing == Missing::Mean && (features.is_empty() || extra.code_mentions("input_fill")?);
        let text = read_text(&mut extra, &file.to_string())?;
        let module = load_module(&path, device)?;
        let numeric_only = categorical.is_empty() && array.is_none() && text.is_none();
        if let Some(width) = export::expected_inputs(&module)?.filter(|&w| numeric_only && w != features.len()) {
            bail!("{file}: extra/features.json names {} features, but the model takes {width}", features.len());
        }
        let free = text.iter().flat_map(|(t, _)| t.columns.iter().cloned());
        let text_inputs = categorical.iter().map(|c: &CategoricalFeature| c.name.clone()).chain(free).collect();
        Ok(Predictor { path, module, device, config, features, categorical, labels, array, fills, text, text_inputs })
    }

    /// Why a missing numeric value cannot be predicted for (it would come out NaN), said
    /// after "the model": `None` when model.pt fills it.
    pub fn no_fill(&self) -> Option<&'static str> {
        match (self.fills, self.config.data.missing) {
            (true, _) => None,
            (false, Missing::Mean) => Some(
                "has no value to fill it with: it was trained on a table with none missing, by a torchfit that filled only columns with a missing value (export the run again with `torchfit export RUN --output FILE.pt`, or retrain it)",
            ),
            (false, _) => Some("fills missing values only when trained with data.missing: mean"),
        }
    }

    /// The model.pt this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The numeric features' names, in the order the model takes its input columns.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// The categorical features, whose level codes the model takes after the numeric ones.
    pub fn categorical(&self) -> &[CategoricalFeature] {
        &self.categorical
    }

    /// The categorical features' names.
    pub fn categorical_names(&self) -> Vec<String> {
        self.categorical.iter().map(|c| c.name.clone()).collect()
    }

    /// The names of the columns the model takes as text, in input order: the categorical
    /// features, then the free-text columns (`data.text`).
    pub fn text_inputs(&self) -> &[String] {
        &self.text_inputs
    }

    /// The columns of model.pt's input `x` for a table's model: the numeric features, the
    /// categorical codes, and each text column's ids (`max_length` each).
    pub fn encoded_width(&self) -> usize {
        let ids = self.text.as_ref().map_or(0, |(t, _)| t.width());
        self.features.len() + self.categorical.len() + ids
    }

    /// The free-text columns' names (`data.text`), whose token ids the model takes after the
    /// categorical codes.
    pub fn text_names(&self) -> Vec<String> {
        self.text.as_ref().map_or(Vec::new(), |(t, _)| t.columns.clone())
    }

    /// Classification: the class labels, in class-index order.
    pub fn labels(&self) -> Option<&[String]> {
        self.labels.as_deref()
    }

    /// A model trained on arrays: what one sample is. `None` for a table's model, whose
    /// input [`Predictor::features`] and [`Predictor::categorical`] describe.
    pub fn array(&self) -> Option<&ArrayInput> {
        self.array.as_ref()
    }

    /// Where the model runs.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The config the model was trained with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The CSV delimiter the model was trained with (`data.delimiter`).
    pub fn delimiter(&self) -> u8 {
        self.config.data.delimiter()
    }

    /// Predicts for `x`, `[rows, features]` raw values in [`Predictor::features`] order (NaN
    /// where one is missing), and the categorical columns as text (any order, by name), with
    /// the class probabilities too when `proba` is asked of a classifier. Errors do not name
    /// the input, which the caller knows.
    pub fn predict(&self, x: &Tensor, text: &[TextColumn], proba: bool) -> Result<Prediction> {
        let model = self.path.display();
        if let Some(input) = &self.array {
            bail!("{model} takes {}, not rows of features", array::describe(input));
        }
        let expected = self.features.len();
        if x.dim() != 2 {
            bail!("expected a 2-D array [rows, features], got shape {:?}", x.size());
        }
        let got = x.size()[1] as usize;
        if got != expected {
            bail!("has {got} feature column(s), but {model} expects {expected} ({})", self.features.join(", "));
        }
        // Unfilled, a missing value would make the row's prediction NaN.
        if let Some(why) = self.no_fill().filter(|_| data::has_nan(x)) {
            let (row, col) = data::first_true(&x.isnan());
            bail!("row {} column `{}` is missing, and {model} {why}", row + 1, self.features[col]);
        }
        if proba && self.labels.is_none() {
            bail!("{model} is a regression: it has no class probabilities");
        }
        let rows = x.size()[0] as usize;
        let mut parts = vec![x.f_to_kind(tch::Kind::Float)?];
        if !self.categorical.is_empty() {
            parts.push(data::categorical_codes(&self.categorical, text, rows)?);
        }
        if self.text.is_some() {
            parts.push(self.token_ids(text)?.f_to_kind(tch::Kind::Float)?);
        }
        let x = if parts.len() == 1 { x.shallow_clone() } else { Tensor::f_cat(&parts, 1)? };
        let output = self.call("forward", &x)?;
        let proba = if proba { Some(self.call("predict_proba", &x)?) } else { None };
        Ok(Prediction { output, proba })
    }

    /// Predicts for `x`, samples of an array model's input ([`Predictor::array`]), checked
    /// against it and converted to its dtype. Errors say what `x` is wrong in, the caller
    /// what `x` is: "x.npy: has shape ...".
    pub fn predict_array(&self, x: &Tensor, proba: bool) -> Result<Prediction> {
        let model = self.path.display();
        let Some(input) = &self.array else {
            bail!("{model} takes rows of features ({}), not arrays", self.features.join(", "));
        };
        let x = input.convert("input", x)?;
        if proba && self.labels.is_none() {
            bail!("{model} is a regression: it has no class probabilities");
        }
        let output = self.call("forward", &x)?;
        let proba = if proba { Some(self.call("predict_proba", &x)?) } else { None };
        Ok(Prediction { output, proba })
    }

    /// The token ids of the free-text columns among `text` (by name), int64 `[rows, text
    /// columns * max_length]`: model.pt's input after the categorical codes.
    pub fn token_ids(&self, text: &[TextColumn]) -> Result<Tensor> {
        let Some((features, tokenizer)) = &self.text else { bail!("{} has no text columns", self.path.display()) };
        features.encode_named(tokenizer, text)
    }

    fn call(&self, method: &str, x: &Tensor) -> Result<Tensor> {
        let model = self.path.display();
        // A no-op on the CPU; elsewhere one copy in and one out per batch.
        let x = x.f_to_device(self.device)?;
        let result = tch::no_grad(|| self.module.method_is(method, &[IValue::Tensor(x)]));
        match result.map_err(|e| anyhow!("{model}: {method} failed: {}", first_line(&e.to_string())))? {
            IValue::Tensor(t) => Ok(t.f_to_device(Device::Cpu)?),
            _ => bail!("{model}: {method} did not return a tensor"),
        }
    }
}

/// Loads a TorchScript archive; a damaged one is one line naming the file, with libtorch's
/// reason (its message starts with a bare "Internal torch error:" line, which says nothing).
pub fn load_module(path: &Path, device: Device) -> Result<CModule> {
    CModule::load_on_device(path, device).map_err(|e| {
        let text = e.to_string();
        let reason = first_line(text.trim_start().trim_start_matches("Internal torch error:"));
        let reason: String = reason.chars().take(200).collect();
        anyhow!("{} is not a TorchScript archive that libtorch can load (damaged?): {reason}", path.display())
    })
}

/// A text model's extra/text.json and extra/tokenizer.json; `None` for a model without text.
fn read_text(extra: &mut ExtraFiles, file: &str) -> Result<Option<(TextFeatures, torchfit_tokenize::TextTokenizer)>> {
    let Some(bytes) = extra.read("text.json")? else { return Ok(None) };
    let features: TextFeatures = serde_json::from_slice(&bytes)
        .with_context(|| format!("{file}: extra/text.json does not describe text columns"))?;
    let json = extra
        .read("tokenizer.json")?
        .ok_or_else(|| anyhow!("{file}: has extra/text.json but no extra/tokenizer.json"))?;
    let json = String::from_utf8(json).map_err(|_| anyhow!("{file}: extra/tokenizer.json is not UTF-8 text"))?;
    let tokenizer = torchfit_tokenize::TextTokenizer::from_json(&json, features.max_length)
        .with_context(|| format!("{file}: extra/tokenizer.json"))?;
    Ok(Some((features, tokenizer)))
}

fn json_names(path: &Path, name: &str, bytes: &[u8]) -> Result<Vec<String>> {
    serde_json::from_slice(bytes)
        .with_context(|| format!("{}: extra/{name} is not a JSON list of names", path.display()))
}
