//! What a run prints and records when it starts, as Keras's `model.summary()` and
//! Lightning's parameter table do: the model's layers with output shapes and parameters,
//! trainable and frozen; the data (rows per split, features by kind); where and how it
//! trains; and, resuming, where it continues. Written to `<run>/model_summary.txt`.

use anyhow::Result;

use super::trainer::Trainer;
use crate::config::yaml_name;
use crate::data::Prepared;
use crate::device::device_name;
use crate::model::layer_table;

/// The summary's text. `world_size` processes train the run.
pub fn overview(trainer: &Trainer, data: &Prepared, world_size: usize) -> Result<String> {
    let config = trainer.config;
    let probe = data.train.x.narrow(0, 0, data.train.len().min(3) as i64).to_device(trainer.device);
    let layers = trainer.model.layers(&probe)?;
    let (trainable, frozen) = (trainer.model.parameter_count(), trainer.model.frozen_count());
    let mut text = format!("Model: {}\n", model_name(trainer));
    text += &layer_table(&layers);
    text += &format!("Parameters: {} ({trainable} trainable, {frozen} frozen)\n", trainable + frozen);
    text += &format!("Data: {}; {}\n", rows(data), features(data));
    let processes = if world_size == 1 { "1 process".to_string() } else { format!("{world_size} processes") };
    let epochs = config.training.epochs;
    text += &format!(
        "Training: {epochs} epoch{} of batch {} on {}, {processes}, {}, {} thread{}\n",
        if epochs == 1 { "" } else { "s" },
        config.training.batch_size,
        device_name(trainer.device),
        yaml_name(&config.training.precision),
        trainer.threads(),
        if trainer.threads() == 1 { "" } else { "s" },
    );
    Ok(text)
}

/// Where a resumed run continues; `None` for a run that starts from its first epoch.
pub fn resumed_at(trainer: &Trainer) -> Option<String> {
    let epochs = trainer.config.training.epochs;
    match (trainer.epoch, &trainer.running) {
        (0, None) => None,
        (done, None) => Some(format!("Resuming after epoch {done} of {epochs}, at epoch {}\n", done + 1)),
        (done, Some(running)) => {
            let steps = trainer.batch_sizes().len();
            Some(format!("Resuming in epoch {} of {epochs}, after step {} of {steps}\n", done + 1, running.step))
        }
    }
}

fn model_name(trainer: &Trainer) -> String {
    let model = &trainer.config.model;
    let kind = yaml_name(&model.kind);
    match (&model.path, trainer.model.as_mlp()) {
        (Some(path), _) => format!("{kind} ({})", path.display()),
        (None, Some(mlp)) if mlp.uses_autograd() => format!("{kind} (autograd backward pass)"),
        (None, Some(_)) => format!("{kind} (hand-written backward pass)"),
        (None, None) => kind,
    }
}

fn rows(data: &Prepared) -> String {
    let count = |part: Option<&crate::data::Part>| part.map_or(0, |p| p.len());
    format!(
        "{} training rows, {} validation, {} test",
        data.train.len(),
        count(data.validation.as_ref()),
        count(data.test.as_ref())
    )
}

fn features(data: &Prepared) -> String {
    let pre = &data.preprocessing;
    if let Some(input) = &pre.input {
        let dims: Vec<String> = input.shape.iter().map(i64::to_string).collect();
        return format!("each sample an array of shape ({})", dims.join(", "));
    }
    let mut kinds = vec![format!("{} numeric", pre.feature_names.len())];
    if !pre.categorical.is_empty() {
        kinds.push(format!("{} categorical", pre.categorical.len()));
    }
    if let Some(text) = &pre.text {
        kinds.push(format!("{} text ({} tokens each)", text.columns.len(), text.max_length));
    }
    let total = pre.feature_names.len() + pre.categorical.len() + pre.text.as_ref().map_or(0, |t| t.columns.len());
    format!("{total} features: {}", kinds.join(", "))
}
