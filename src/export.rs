//! The artifacts a Python user loads: `weights.safetensors` and `model.pt`, a TorchScript
//! module built through the C++ shim in `csrc/torchscript.cpp`. Unlike a traced module, its
//! weights are real parameters named as `torch.nn.Sequential` names them, so `state_dict()`,
//! `load_state_dict` and fine-tuning work in PyTorch.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Tensor};

use crate::atomic;
use crate::config::Loss;
use crate::data::Preprocessing;
use crate::model::Model;
use crate::rundir::{self, TrainedRun};

/// Builds and compiles the module that [`write_torchscript`] would save, without saving it:
/// training calls it first, so that a script error shows before the hours of training
/// rather than after them.
pub fn check_script(model: &dyn Model, preprocessing: &Preprocessing, loss: Loss) -> Result<()> {
    model.export(preprocessing, loss).map(drop)
}

/// Writes `model.pt` atomically: the module of [`script_module`], with extra files
/// `config.yaml`, `features.json` and, for classification, `labels.json`.
pub fn write_torchscript(
    model: &dyn Model,
    preprocessing: &Preprocessing,
    loss: Loss,
    config_yaml: &str,
    path: &Path,
) -> Result<()> {
    let root = model.export(preprocessing, loss)?;
    let features = serde_json::to_vec(&preprocessing.feature_names)?;
    let mut extra: Vec<(&str, &[u8])> = vec![("config.yaml", config_yaml.as_bytes()), ("features.json", &features)];
    let labels = preprocessing.labels.as_ref().map(serde_json::to_vec).transpose()?;
    if let Some(labels) = &labels {
        extra.push(("labels.json", labels));
    }
    // Array runs: the per-sample shape and dtype that `predict` and `serve` check inputs by.
    let input = preprocessing.input.as_ref().map(serde_json::to_vec).transpose()?;
    if let Some(input) = &input {
        extra.push(("input.json", input));
    }
    let categorical = serde_json::to_vec(&preprocessing.categorical)?;
    if !preprocessing.categorical.is_empty() {
        extra.push(("categorical.json", &categorical));
    }
    // Text runs: the text columns (extra/text.json) and the tokenizer that makes their ids,
    // which Python's `tokenizers.Tokenizer.from_str` reads as it is.
    let text = preprocessing
        .text
        .as_ref()
        .map(|t| Ok::<_, anyhow::Error>((serde_json::to_vec(&t.summary())?, t.tokenizer_json()?)))
        .transpose()?;
    if let Some((summary, tokenizer)) = &text {
        extra.push(("text.json", summary));
        extra.push(("tokenizer.json", tokenizer.as_bytes()));
    }
    atomic::write_with(path, |tmp| root.save(tmp, &extra))
}

/// The extra files of a saved TorchScript archive (`_extra_files` of `torch.jit.save`), read
/// straight from its zip entries `<archive>/extra/<name>`, which torch stores uncompressed:
/// no module is loaded to read them.
pub struct ExtraFiles {
    path: PathBuf,
    zip: zip::ZipArchive<File>,
    /// `<archive>/extra/`. torch names the archive's top folder after the file it first
    /// saved to (not necessarily this one), and reads it from the first entry; so do we.
    prefix: String,
}

impl ExtraFiles {
    pub fn open(path: &Path) -> Result<ExtraFiles> {
        let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let not_torchscript =
            || anyhow!("{} is not a TorchScript model (torch.jit.save writes a zip archive)", path.display());
        let mut zip = zip::ZipArchive::new(file).map_err(|_| not_torchscript())?;
        let first = zip.by_index_raw(0).map_err(|_| not_torchscript())?.name().to_string();
        let (top, _) = first.split_once('/').ok_or_else(not_torchscript)?;
        Ok(ExtraFiles { path: path.to_path_buf(), prefix: format!("{top}/extra/"), zip })
    }

    /// Whether the module's compiled code (`code/...py`) names `word`: what an archive's
    /// extra files do not say about how it was built (whether it fills missing values).
    pub fn code_mentions(&mut self, word: &str) -> Result<bool> {
        let code = format!("{}code/", self.prefix.trim_end_matches("extra/"));
        let names: Vec<String> =
            self.zip.file_names().filter(|n| n.starts_with(&code) && n.ends_with(".py")).map(String::from).collect();
        for name in names {
            let mut text = String::new();
            let mut entry =
                self.zip.by_name(&name).with_context(|| format!("{}: cannot read {name}", self.path.display()))?;
            entry.read_to_string(&mut text).with_context(|| format!("{}: cannot read {name}", self.path.display()))?;
            if text.contains(word) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether the archive has `extra/<name>`.
    pub fn has(&mut self, name: &str) -> bool {
        self.zip.by_name(&format!("{}{name}", self.prefix)).is_ok()
    }

    /// The bytes of `extra/<name>`: `None` when the archive has no such file, and an empty
    /// vector when it has an empty one.
    pub fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let mut entry = match self.zip.by_name(&format!("{}{name}", self.prefix)) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => bail!("{}: cannot read extra/{name}: {e}", self.path.display()),
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).with_context(|| format!("{}: cannot read extra/{name}", self.path.display()))?;
        Ok(Some(bytes))
    }
}

/// Reads one extra file of a saved TorchScript archive; see [`ExtraFiles::read`].
pub fn read_extra_file(path: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    ExtraFiles::open(path)?.read(name)
}

/// The formats `torchfit export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Torchscript,
    Safetensors,
    Onnx,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Torchscript => "torchscript",
            Format::Safetensors => "safetensors",
            Format::Onnx => "onnx",
        }
    }

    /// The format a file name's extension stands for: `.pt`, `.pth`, `.ts`, `.safetensors` or
    /// `.onnx`.
    pub fn of_file(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "pt" | "pth" | "ts" => Some(Format::Torchscript),
            "safetensors" => Some(Format::Safetensors),
            "onnx" => Some(Format::Onnx),
            _ => None,
        }
    }
}

/// The format to write: `--format`, else the one `--output`'s extension stands for, else
/// TorchScript. A `--format` that the extension contradicts is refused rather than written
/// under a misleading name.
fn choose_format(format: Option<Format>, output: Option<&Path>) -> Result<Format> {
    let implied = output.and_then(Format::of_file);
    match (format, implied, output) {
        (Some(asked), Some(implied), Some(output)) if asked != implied => bail!(
            "--format {} contradicts --output {}, a {} file name; drop --format or rename the output",
            asked.name(),
            output.display(),
            implied.name()
        ),
        (Some(asked), _, _) => Ok(asked),
        (None, implied, _) => Ok(implied.unwrap_or(Format::Torchscript)),
    }
}

/// Re-exports a run (a finished one, or any with `weights`: a safetensors file or checkpoint
/// of the same names and shapes) to `output`, in `format` or the one `output`'s extension
/// names. Without `output` it rewrites the run's own `model.pt` or `weights.safetensors`,
/// which only the run's own weights may do. Returns the path written.
pub fn export_run(
    run: &Path,
    format: Option<Format>,
    weights: Option<&Path>,
    output: Option<&Path>,
) -> Result<PathBuf> {
    let format = choose_format(format, output)?;
    let trained = TrainedRun::load(run, weights, "--weights")?;
    let own_name = match format {
        Format::Torchscript => rundir::MODEL,
        Format::Safetensors => rundir::WEIGHTS,
        Format::Onnx => rundir::ONNX,
    };
    let own = trained.dir.file(own_name);
    // The run's model.pt and weights.safetensors must stay what summary.json describes.
    let output = match (output, weights) {
        (Some(output), Some(weights)) if same_file(output, &own) => bail!(
            "--output {} is the run's own {}; export --weights {} to another file",
            output.display(),
            own.display(),
            weights.display()
        ),
        (Some(output), _) => output.to_path_buf(),
        (None, Some(weights)) => bail!(
            "--weights {}: pass --output FILE too; without it the export would overwrite {}, which must stay the run's own",
            weights.display(),
            own.display()
        ),
        (None, None) => own.clone(),
    };
    match format {
        Format::Torchscript => {
            let config_yaml = trained.config.to_yaml()?;
            write_torchscript(&*trained.model, &trained.preprocessing, trained.config.loss(), &config_yaml, &output)?
        }
        Format::Safetensors => write_safetensors(&*trained.model, &output)?,
        Format::Onnx if trained.config.model.kind == crate::config::ModelKind::Torchscript => {
            bail!(
                "{}: torchfit exports its own model kinds to ONNX, not {} (libtorch has no ONNX exporter for a \
                 module of your own); export it from Python instead: \
                 torch.onnx.export(torch.jit.load(\"{}\").net, (example_input,), \"model.onnx\", dynamo=False) \
                 (`net` is the trained module, without the preprocessing that model.pt's forward adds)",
                run.display(),
                crate::config::yaml_name(&trained.config.model.kind),
                trained.dir.file(rundir::MODEL).display()
            )
        }
        Format::Onnx => {
            let (pre, loss) = (&trained.preprocessing, trained.config.loss());
            crate::onnx::write_model(&*trained.model, &trained.config.model, pre, loss, &output)?
        }
    }
    if same_file(&output, &own) {
        // Rewritten from the run's own weights, checked against the manifest on loading.
        trained.dir.update_manifest(own_name)?;
    }
    Ok(output)
}

/// Whether two paths name one existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Writes `weights.safetensors` atomically: the model's state_dict (`torch.nn.Sequential`
/// names for the MLP; a user module's own names, buffers included).
pub fn write_safetensors(model: &dyn Model, path: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> =
        model.state_dict()?.into_iter().map(|(name, t)| (name, t.detach().to_device(Device::Cpu))).collect();
    atomic::write_with(path, |tmp| Tensor::write_safetensors(&named, tmp).map_err(Into::into))
}

/// A loaded TorchScript model's input width, from its first layer's weight `0.weight`, when
/// it has a 2-D one. That is the fan-in of the first Dense layer, which is the number of
/// input columns only for numeric-only models: with categorical features, one-hot and
/// embedding columns widen it (`Input::width` against `Input::columns`).
pub fn expected_inputs(module: &tch::CModule) -> Result<Option<usize>> {
    let params = module.named_parameters()?;
    let first = params.iter().find(|(n, _)| n == "0.weight").map(|(_, t)| t.size());
    Ok(first.filter(|size| size.len() == 2).map(|size| size[1] as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, Init, ModelConfig};
    use crate::model::{script_source, Categorical, Input, Mlp};
    use tch::{CModule, IValue, Kind};

    /// An MLP with hidden layers [6, 5] on `input`, PyTorch's initialisation.
    fn mlp(activation: Activation, input: &Input, outputs: usize) -> Mlp {
        let cfg = ModelConfig { hidden: vec![6, 5], activation, init: Init::Torch, ..ModelConfig::default() };
        Mlp::new(&cfg, input, outputs, Device::Cpu).unwrap()
    }

    fn model(activation: Activation, outputs: usize) -> Mlp {
        mlp(activation, &Input::numeric_only(4), outputs)
    }

    fn identity(targets: usize) -> Preprocessing {
        Preprocessing {
            feature_names: (0..4).map(|i| format!("f{i}")).collect(),
            target_names: vec!["y".into()],
            input_mean: vec![0.0; 4],
            input_std: vec![1.0; 4],
            input_fill: None,
            target_mean: vec![0.0; targets],
            target_std: vec![1.0; targets],
            labels: None,
            input: None,
            categorical: Vec::new(),
            numeric_bins: None,
            text: None,
        }
    }

    fn method(m: &CModule, name: &str, x: &Tensor) -> Tensor {
        match m.method_is(name, &[IValue::Tensor(x.shallow_clone())]).unwrap() {
            IValue::Tensor(t) => t,
            other => panic!("{name} returned {other:?}"),
        }
    }

    #[test]
    fn torchscript_export_matches_the_model_for_every_activation() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let x = Tensor::randn([9, 4], (Kind::Float, Device::Cpu));
        for activation in Activation::ALL {
            let m = model(activation, 2);
            let path = dir.path().join("model.pt");
            if let Err(e) = write_torchscript(&m, &identity(2), Loss::Mse, "name: t\n", &path) {
                panic!("{activation:?}: {e:?}")
            }
            let loaded = CModule::load(&path).unwrap();
            let diff = (loaded.forward_ts(&[&x]).unwrap() - m.forward(&x)).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "{activation:?}: {diff}");
            // One sample at a time works too, and float64 input is accepted.
            assert_eq!(loaded.forward_ts(&[x.narrow(0, 0, 1).to_kind(Kind::Double)]).unwrap().size(), vec![1, 2]);
        }
    }

    #[test]
    fn preprocessing_lives_inside_the_module() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        let m = model(Activation::Relu, 1);
        let pre = Preprocessing {
            input_mean: vec![1.0, 2.0, 3.0, 4.0],
            input_std: vec![2.0, 2.0, 0.5, 1.0],
            input_fill: Some(vec![9.0, 9.0, 9.0, 9.0]),
            target_mean: vec![100.0],
            target_std: vec![10.0],
            ..identity(1)
        };
        write_torchscript(&m, &pre, Loss::Mse, "", &path).unwrap();
        let loaded = CModule::load(&path).unwrap();
        let raw = Tensor::from_slice(&[f32::NAN, 0.0, 1.0, 2.0]).reshape([1, 4]);
        let got = loaded.forward_ts(&[&raw]).unwrap();
        let want = m.forward(&pre.apply(&raw).unwrap()) * 10.0 + 100.0;
        assert!((got - want).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn classification_exports_class_indices_and_probabilities() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let x = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let labels = Preprocessing { labels: Some(vec!["a".into(), "b".into(), "c".into()]), ..identity(0) };
        let path = dir.path().join("ce.pt");
        let m = model(Activation::Relu, 3);
        write_torchscript(&m, &labels, Loss::CrossEntropy, "", &path).unwrap();
        let loaded = CModule::load(&path).unwrap();
        assert!(loaded.forward_ts(&[&x]).unwrap().equal(&m.forward(&x).argmax(1, false)));
        let proba = method(&loaded, "predict_proba", &x);
        assert!((proba.sum_dim_intlist(1, false, Kind::Float) - 1.0).abs().max().double_value(&[]) < 1e-6);
        assert_eq!(read_extra_file(&path, "labels.json").unwrap().as_deref(), Some(&b"[\"a\",\"b\",\"c\"]"[..]));

        let two = Preprocessing { labels: Some(vec!["no".into(), "yes".into()]), ..identity(0) };
        let path = dir.path().join("bce.pt");
        let m = model(Activation::Relu, 1);
        write_torchscript(&m, &two, Loss::Bce, "", &path).unwrap();
        let loaded = CModule::load(&path).unwrap();
        let p_yes = m.forward(&x).sigmoid().squeeze_dim(1);
        assert!((method(&loaded, "predict_proba", &x).select(1, 1) - &p_yes).abs().max().double_value(&[]) < 1e-6);
        assert!(loaded.forward_ts(&[&x]).unwrap().equal(&p_yes.gt(0.5).to_kind(Kind::Int64)));
    }

    #[test]
    fn parameters_keep_sequential_names_and_config_rides_along() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        write_torchscript(&model(Activation::Relu, 2), &identity(2), Loss::Mse, "name: carried\n", &path).unwrap();
        let loaded = CModule::load(&path).unwrap();
        let names: Vec<String> = loaded.named_parameters().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]);
        assert_eq!(expected_inputs(&loaded).unwrap(), Some(4));
        assert_eq!(read_extra_file(&path, "config.yaml").unwrap().as_deref(), Some(&b"name: carried\n"[..]));
        assert_eq!(read_extra_file(&path, "labels.json").unwrap(), None);
    }

    /// 2 numeric features, then a one-hot feature of 3 levels and an embedded one of 4.
    fn categorical_model(activation: Activation, outputs: usize) -> Mlp {
        let categorical =
            vec![Categorical { levels: 3, embedding: None }, Categorical { levels: 4, embedding: Some(2) }];
        mlp(activation, &Input { numeric: 2, categorical, text: None }, outputs)
    }

    /// Preprocessing for the 2 numeric features of `categorical_model`.
    fn two_numeric(targets: usize) -> Preprocessing {
        Preprocessing {
            feature_names: vec!["a".into(), "b".into()],
            input_mean: vec![0.0; 2],
            input_std: vec![1.0; 2],
            ..identity(targets)
        }
    }

    /// Encoded rows for `categorical_model`: numeric values, then every pair of levels.
    fn categorical_rows() -> Tensor {
        let codes: Vec<f32> = (0..3).flat_map(|a| (0..4).flat_map(move |b| [a as f32, b as f32])).collect();
        let codes = Tensor::from_slice(&codes).view([12, 2]);
        Tensor::cat(&[Tensor::randn([12, 2], (Kind::Float, Device::Cpu)), codes], 1)
    }

    #[test]
    fn categorical_features_export_as_the_model_computes_them() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let x = categorical_rows();
        for activation in Activation::ALL {
            let m = categorical_model(activation, 2);
            let path = dir.path().join("model.pt");
            if let Err(e) = write_torchscript(&m, &two_numeric(2), Loss::Mse, "", &path) {
                panic!("{activation:?}: {e:?}")
            }
            let loaded = CModule::load(&path).unwrap();
            let diff = (loaded.forward_ts(&[&x]).unwrap() - m.forward(&x)).abs().max().double_value(&[]);
            assert!(diff <= 1e-6, "{activation:?}: {diff}");
            // float64 input, codes included, is accepted too.
            let double = loaded.forward_ts(&[x.to_kind(Kind::Double)]).unwrap();
            assert!((double - m.forward(&x)).abs().max().double_value(&[]) <= 1e-6, "{activation:?}");
        }
    }

    #[test]
    fn categorical_preprocessing_touches_the_numeric_columns_only() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        let m = categorical_model(Activation::Tanh, 1);
        let pre = Preprocessing {
            input_mean: vec![1.0, -2.0],
            input_std: vec![2.0, 0.5],
            input_fill: Some(vec![3.0, 4.0]),
            target_mean: vec![100.0],
            target_std: vec![10.0],
            ..two_numeric(1)
        };
        write_torchscript(&m, &pre, Loss::Mse, "", &path).unwrap();
        let loaded = CModule::load(&path).unwrap();
        let raw = Tensor::from_slice(&[f32::NAN, 0.0, 2.0, 3.0, 5.0, f32::NAN, 0.0, 1.0]).view([2, 4]);
        let numeric = Tensor::from_slice(&[(3.0f32 - 1.0) / 2.0, 2.0 / 0.5, 2.0, 6.0 / 0.5]).view([2, 2]);
        let encoded = Tensor::cat(&[numeric, raw.narrow(1, 2, 2)], 1);
        let want = m.forward(&encoded) * 10.0 + 100.0;
        let got = loaded.forward_ts(&[&raw]).unwrap();
        assert!((got - want).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn embeddings_are_parameters_of_the_module() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        let m = categorical_model(Activation::Relu, 2);
        write_torchscript(&m, &two_numeric(2), Loss::Mse, "", &path).unwrap();
        let loaded = CModule::load(&path).unwrap();
        let saved = loaded.named_parameters().unwrap();
        let names: Vec<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "embeddings.1.weight"]);
        for ((name, want), (_, got)) in m.named_parameters().into_iter().zip(&saved) {
            assert!(got.equal(want), "{name}");
        }
        // The first Dense layer's fan-in: numeric, one-hot and embedding columns.
        assert_eq!(expected_inputs(&loaded).unwrap(), Some(2 + 3 + 2));
        // Preprocessing for another number of numeric features is refused before saving.
        let err = write_torchscript(&m, &identity(2), Loss::Mse, "", &path).unwrap_err().to_string();
        assert_eq!(err, "the preprocessing has 4 numeric features, the model 2");
    }

    #[test]
    fn numeric_only_models_script_as_before() {
        let m = model(Activation::Relu, 1);
        let want = concat!(
            "def logits(self, x: Tensor) -> Tensor:\n    x = x.float()\n",
            "    x = torch.where(torch.isnan(x), self.input_fill, x)\n",
            "    x = (x - self.input_mean) / self.input_std\n",
            "    layer = getattr(self, \"0\")\n    x = torch.linear(x, layer.weight, layer.bias)\n    x = torch.relu(x)\n",
            "    layer = getattr(self, \"2\")\n    x = torch.linear(x, layer.weight, layer.bias)\n    x = torch.relu(x)\n",
            "    layer = getattr(self, \"4\")\n    x = torch.linear(x, layer.weight, layer.bias)\n",
            "    return x\n\n",
            "def forward(self, x: Tensor) -> Tensor:\n    return self.logits(x) * self.target_std + self.target_mean\n",
        );
        let pre = Preprocessing { input_fill: Some(vec![0.0; 4]), ..identity(1) };
        assert_eq!(script_source(&m.input, &m.script(), &pre, Loss::Mse), want);
    }

    #[test]
    fn not_an_archive_is_a_clear_error() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        std::fs::write(&path, b"not a model").unwrap();
        let err = read_extra_file(&path, "config.yaml").unwrap_err().to_string();
        assert!(err.contains("model.pt is not a TorchScript model"), "{err}");
    }

    #[test]
    fn an_empty_extra_file_is_not_an_absent_one() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        write_torchscript(&model(Activation::Relu, 2), &identity(2), Loss::Mse, "", &path).unwrap();
        let mut extra = ExtraFiles::open(&path).unwrap();
        assert_eq!(extra.read("config.yaml").unwrap(), Some(Vec::new()));
        assert_eq!(extra.read("features.json").unwrap().as_deref(), Some(&b"[\"f0\",\"f1\",\"f2\",\"f3\"]"[..]));
        assert_eq!(extra.read("labels.json").unwrap(), None);
    }

    #[test]
    fn check_script_compiles_every_kind_of_model() {
        let _rng = crate::testing::seed(0);
        let two = Preprocessing { labels: Some(vec!["no".into(), "yes".into()]), ..identity(0) };
        for activation in Activation::ALL {
            for (loss, outputs, pre) in
                [(Loss::Mse, 2, identity(2)), (Loss::CrossEntropy, 2, two.clone()), (Loss::Bce, 1, two.clone())]
            {
                let filled = Preprocessing { input_fill: Some(vec![0.0; 4]), ..pre.clone() };
                if let Err(e) = check_script(&model(activation, outputs), &filled, loss) {
                    panic!("{activation:?} {loss:?}: {e:#}");
                }
                let categorical = Preprocessing {
                    input_mean: vec![0.0; 2],
                    input_std: vec![1.0; 2],
                    input_fill: Some(vec![0.0; 2]),
                    ..pre
                };
                if let Err(e) = check_script(&categorical_model(activation, outputs), &categorical, loss) {
                    panic!("categorical {activation:?} {loss:?}: {e:#}");
                }
            }
        }
    }

    #[test]
    fn the_format_comes_from_the_output_name_unless_given() {
        let pick = |format, output: Option<&str>| choose_format(format, output.map(Path::new));
        assert_eq!(pick(None, None).unwrap(), Format::Torchscript);
        assert_eq!(pick(None, Some("w.safetensors")).unwrap(), Format::Safetensors);
        assert_eq!(pick(None, Some("m.PTH")).unwrap(), Format::Torchscript);
        assert_eq!(pick(None, Some("model.bin")).unwrap(), Format::Torchscript);
        assert_eq!(pick(Some(Format::Safetensors), Some("model.bin")).unwrap(), Format::Safetensors);
        let err = pick(Some(Format::Torchscript), Some("x.safetensors")).unwrap_err().to_string();
        assert!(err.contains("--format torchscript contradicts --output x.safetensors"), "{err}");
    }

    #[test]
    fn safetensors_round_trip() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.safetensors");
        let m = model(Activation::Relu, 2);
        write_safetensors(&m, &path).unwrap();
        let back = Tensor::read_safetensors(&path).unwrap();
        assert_eq!(back.len(), 6);
        for (name, t) in m.named_parameters() {
            let (_, stored) = back.iter().find(|(n, _)| *n == name).unwrap();
            assert!(stored.equal(t), "{name}");
        }
    }
}
