//! Using a trained run: `torchfit predict` on an exported `model.pt`, and `torchfit evaluate`
//! of a run directory on new labelled data.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{CModule, IValue, Kind, Tensor};

use crate::config::Config;
use crate::data::{self, Part};
use crate::shim::first_line;
use crate::rundir::TrainedRun;
use crate::{atomic, export, metrics};

/// Predicts for every row of `input` and writes CSV to `output`, or to `stdout` when no
/// output file is given: `prediction` (or `prediction_<i>`) for regression; `label` for
/// classification, plus one `p_<label>` column per class with `proba`.
pub fn predict(
    model_path: &Path,
    input: &Path,
    output: Option<&Path>,
    proba: bool,
    stdout: &mut dyn Write,
) -> Result<()> {
    export::ensure_archive(model_path)?;
    let module = CModule::load(model_path)
        .map_err(|e| anyhow!("{}: cannot load as TorchScript: {}", model_path.display(), first_line(&e.to_string())))?;
    let json = |name: &str| -> Result<Option<Vec<String>>> {
        let bytes = export::read_extra_file(model_path, name)?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b)
                    .with_context(|| format!("{}: extra/{name} is not a JSON list", model_path.display()))
            })
            .transpose()
    };
    let (features, labels) = (json("features.json")?, json("labels.json")?);
    let x = data::read_features(input, features.as_deref())?;
    if data::has_nan(&x) {
        // model.pt fills missing values only when it was trained with data.missing: mean.
        let config = export::read_extra_file(model_path, "config.yaml")?
            .and_then(|yaml| Config::parse(&String::from_utf8_lossy(&yaml), "model.pt", &[]).ok());
        if config.is_none_or(|c| c.data.missing != crate::config::Missing::Mean) {
            let (row, col) = data::first_true(&x.isnan());
            let column = features.as_ref().and_then(|f| f.get(col).cloned()).unwrap_or_else(|| format!("#{}", col + 1));
            bail!(
                "{}: row {} column `{column}` is missing, and {} fills missing values only when trained with data.missing: mean",
                input.display(),
                row + 1,
                model_path.display()
            );
        }
    }
    if let Some(expected) = export::expected_inputs(&module)? {
        let got = x.size()[1] as usize;
        if got != expected {
            let names = features.map(|f| format!(" ({})", f.join(", "))).unwrap_or_default();
            bail!(
                "{}: has {got} feature column(s), but {} expects {expected}{names}",
                input.display(),
                model_path.display()
            );
        }
    }
    let call = |method: &str| -> Result<Tensor> {
        let result = tch::no_grad(|| module.method_is(method, &[IValue::Tensor(x.shallow_clone())]));
        match result
            .map_err(|e| anyhow!("{}: {method} failed: {}", model_path.display(), first_line(&e.to_string())))?
        {
            IValue::Tensor(t) => Ok(t),
            _ => bail!("{}: {method} did not return a tensor", model_path.display()),
        }
    };
    let y = call("forward")?;
    let mut out = csv::Writer::from_writer(Vec::new());
    match labels {
        Some(labels) => {
            let index = Vec::<i64>::try_from(y.flatten(0, -1))?;
            let probabilities = if proba { Some(call("predict_proba")?) } else { None };
            let mut header = vec!["label".to_string()];
            if probabilities.is_some() {
                header.extend(labels.iter().map(|l| format!("p_{l}")));
            }
            out.write_record(&header)?;
            let p = probabilities.map(|p| Vec::<f32>::try_from(p.flatten(0, -1))).transpose()?;
            for (row, class) in index.iter().enumerate() {
                let mut record = vec![labels.get(*class as usize).cloned().unwrap_or_else(|| class.to_string())];
                if let Some(p) = &p {
                    record.extend(p[row * labels.len()..(row + 1) * labels.len()].iter().map(f32::to_string));
                }
                out.write_record(&record)?;
            }
        }
        None => {
            if proba {
                bail!("--proba needs a classification model; {} is a regression", model_path.display());
            }
            let y = if y.dim() == 1 { y.unsqueeze(1) } else { y };
            let cols = y.size()[1] as usize;
            let values = Vec::<f32>::try_from(y.to_kind(Kind::Float).flatten(0, -1))?;
            let header: Vec<String> = if cols == 1 {
                vec!["prediction".into()]
            } else {
                (0..cols).map(|i| format!("prediction_{i}")).collect()
            };
            out.write_record(&header)?;
            for row in values.chunks(cols.max(1)) {
                out.write_record(row.iter().map(f32::to_string))?;
            }
        }
    }
    let csv = out.into_inner().map_err(|e| anyhow!("{e}"))?;
    match output {
        Some(path) => atomic::write(path, &csv),
        None => Ok(stdout.write_all(&csv)?),
    }
}

/// The loss and metrics of a finished run's model on a labelled CSV file, with the run's
/// preprocessing. `target` names the label column when it differs from training's.
pub fn evaluate(run_dir: &Path, data_path: &Path, target: Option<&str>) -> Result<Vec<(String, f64)>> {
    let TrainedRun { config, preprocessing: pre, model, .. } = TrainedRun::load(run_dir, None, "--weights")?;
    let targets = match target {
        Some(t) => vec![t.to_string()],
        None => pre.target_names.clone(),
    };
    let task = config.task();
    // Missing cells are treated as in training: an error, a dropped row, or the training mean.
    let table = data::read_labelled_csv(data_path, b',', config.data.missing, task, &targets, |header| {
        for name in pre.feature_names.iter().chain(&targets) {
            if !header.contains(name) {
                bail!(
                    "{}: no column `{name}` (the run was trained on {}; use --target for another label column)",
                    data_path.display(),
                    pre.feature_names.join(", ")
                );
            }
        }
        Ok(pre.feature_names.clone())
    })?;
    let x = pre.apply(&table.x).with_context(|| data_path.display().to_string())?;
    let y = match &table.values {
        Some(values) if values.size()[1] != pre.target_mean.len() as i64 => {
            bail!("--target: the run predicts {} target(s), got {}", pre.target_mean.len(), values.size()[1])
        }
        Some(values) => pre.scale_targets(values),
        None => pre.encode_labels(&table.labels).with_context(|| data_path.display().to_string())?,
    };
    let (loss, metrics) = metrics::evaluate(&model, &Part { x, y }, &config, &pre)?;
    let mut out = vec![("loss".to_string(), loss)];
    out.extend(config.metrics().iter().map(|m| m.name().to_string()).zip(metrics));
    Ok(out)
}
