//! Losses and metrics. Metrics accumulate on the device over an epoch (or an evaluation) and
//! are read back once at the end, computed as Keras's stateful metrics are: over all samples
//! seen, not as a mean of per-batch values (which would be wrong for rmse, r2 and f1).

use tch::{Kind, Reduction, Tensor};

use crate::config::{Loss, Metric};

/// The mean loss of a batch, from the model's raw outputs and the training-space targets.
pub fn loss_value(loss: Loss, output: &Tensor, target: &Tensor) -> Tensor {
    match loss {
        Loss::Mse => output.mse_loss(target, Reduction::Mean),
        Loss::Mae => output.l1_loss(target, Reduction::Mean),
        Loss::Huber => output.huber_loss(target, Reduction::Mean, 1.0),
        Loss::CrossEntropy => output.cross_entropy_loss::<Tensor>(target, None, Reduction::Mean, -100, 0.0),
        Loss::Bce => output.squeeze_dim(1).binary_cross_entropy_with_logits::<Tensor>(
            &target.to_kind(Kind::Float),
            None,
            None,
            Reduction::Mean,
        ),
    }
}

/// Running sums for one pass over some data.
pub struct Accumulator {
    loss: Loss,
    metrics: Vec<Metric>,
    /// Regression: target std and mean, to report metrics in the data's own units.
    target_scale: Option<(Tensor, Tensor)>,
    classes: i64,
    samples: i64,
    loss_sum: Tensor,
    /// Training epochs: each step's mean loss and batch size, so that the first non-finite
    /// step can be named (a skipped batch has size 0).
    step_losses: Option<(Tensor, Vec<i64>)>,
    abs_sum: Tensor,
    /// Per target: squared error, sum of targets, sum of squared targets (for mse and r2).
    sq_sum: Tensor,
    y_sum: Tensor,
    y2_sum: Tensor,
    correct: Tensor,
    /// Classification: confusion counts, `true * classes + predicted`.
    confusion: Tensor,
    log_loss_sum: Tensor,
}

impl Accumulator {
    /// `outputs` is the model's output width; `target_scale` the (std, mean) that maps
    /// training-space regression targets back to the data's units.
    pub fn new(
        loss: Loss,
        metrics: &[Metric],
        outputs: i64,
        classes: Option<usize>,
        target_scale: Option<(Tensor, Tensor)>,
        device: tch::Device,
    ) -> Accumulator {
        let zeros = |n: i64| Tensor::zeros([n], (Kind::Float, device));
        let classes = classes.unwrap_or(0) as i64;
        Accumulator {
            loss,
            metrics: metrics.to_vec(),
            target_scale,
            classes,
            samples: 0,
            loss_sum: zeros(1),
            step_losses: None,
            abs_sum: zeros(1),
            sq_sum: zeros(outputs),
            y_sum: zeros(outputs),
            y2_sum: zeros(outputs),
            correct: zeros(1),
            confusion: zeros(classes * classes),
            log_loss_sum: zeros(1),
        }
    }

    /// Records each step's loss separately (for a training epoch of `batch_sizes.len()`
    /// steps) instead of only their sum.
    pub fn with_steps(mut self, batch_sizes: Vec<i64>) -> Accumulator {
        let slots = Tensor::zeros([batch_sizes.len() as i64], (Kind::Float, self.loss_sum.device()));
        self.step_losses = Some((slots, batch_sizes));
        self
    }

    /// Adds a batch: the model's outputs, the training-space targets and the batch's mean
    /// loss. Call under `no_grad` with detached tensors.
    pub fn add(&mut self, output: &Tensor, target: &Tensor, batch_loss: &Tensor) {
        let n = output.size()[0];
        self.samples += n;
        self.loss_sum += batch_loss * n as f64;
        self.add_metrics(output, target);
    }

    /// `add` for step `step` of an accumulator made `with_steps`.
    pub fn add_step(&mut self, step: usize, output: &Tensor, target: &Tensor, batch_loss: &Tensor) {
        let Some((slots, _)) = &self.step_losses else { return self.add(output, target, batch_loss) };
        self.samples += output.size()[0];
        slots.get(step as i64).copy_(&batch_loss.reshape([]));
        self.add_metrics(output, target);
    }

    /// Marks step `step` as skipped: it counts towards neither the loss nor the metrics.
    pub fn skip_step(&mut self, step: usize) {
        if let Some((_, sizes)) = &mut self.step_losses {
            sizes[step] = 0;
        }
    }

    /// The first step (0-based) whose loss was not finite.
    pub fn first_non_finite_step(&self) -> Option<usize> {
        let (slots, sizes) = self.step_losses.as_ref()?;
        let losses = Vec::<f32>::try_from(slots).ok()?;
        losses.iter().zip(sizes).position(|(l, &size)| size > 0 && !l.is_finite())
    }

    fn add_metrics(&mut self, output: &Tensor, target: &Tensor) {
        if self.classes > 0 {
            self.add_classes(output, target);
        } else {
            self.add_values(output, target);
        }
    }

    /// The running sums as named tensors (for a checkpoint), and the sample count.
    pub fn state(&self) -> (i64, Vec<(String, Tensor)>) {
        let mut named: Vec<(String, Tensor)> =
            self.sums().into_iter().map(|(n, t)| (format!("running.{n}"), t.shallow_clone())).collect();
        if let Some((slots, sizes)) = &self.step_losses {
            named.push(("running.step_losses".into(), slots.shallow_clone()));
            named.push(("running.batch_sizes".into(), Tensor::from_slice(sizes)));
        }
        (self.samples, named)
    }

    /// Restores what `state` saved into an accumulator made the same way.
    pub fn restore(
        &mut self,
        samples: i64,
        tensors: &mut std::collections::HashMap<String, Tensor>,
    ) -> anyhow::Result<()> {
        self.samples = samples;
        let device = self.loss_sum.device();
        let mut restored = Vec::new();
        for (name, t) in self.sums() {
            let saved = crate::checkpoint::take(tensors, &format!("running.{name}"), &t.size())?;
            restored.push((t.shallow_clone(), saved));
        }
        for (mut slot, saved) in restored {
            slot.copy_(&saved.to_device(device));
        }
        if let Some((slots, sizes)) = &mut self.step_losses {
            let saved = crate::checkpoint::take(tensors, "running.step_losses", &slots.size())?;
            slots.copy_(&saved.to_device(device));
            let saved_sizes = crate::checkpoint::take(tensors, "running.batch_sizes", &[sizes.len() as i64])?;
            *sizes = Vec::<i64>::try_from(&saved_sizes)?;
        }
        Ok(())
    }

    fn sums(&self) -> [(&'static str, &Tensor); 8] {
        [
            ("loss_sum", &self.loss_sum),
            ("abs_sum", &self.abs_sum),
            ("sq_sum", &self.sq_sum),
            ("y_sum", &self.y_sum),
            ("y2_sum", &self.y2_sum),
            ("correct", &self.correct),
            ("confusion", &self.confusion),
            ("log_loss_sum", &self.log_loss_sum),
        ]
    }

    fn add_values(&mut self, output: &Tensor, target: &Tensor) {
        let (prediction, target) = match &self.target_scale {
            Some((std, mean)) => (output * std + mean, target * std + mean),
            None => (output.shallow_clone(), target.shallow_clone()),
        };
        let error = &prediction - &target;
        if self.metrics.contains(&Metric::Mae) {
            self.abs_sum += error.abs().sum(Kind::Float);
        }
        if self.metrics.iter().any(|m| matches!(m, Metric::Mse | Metric::Rmse | Metric::R2)) {
            self.sq_sum += error.square().sum_dim_intlist(0, false, Kind::Float);
        }
        if self.metrics.contains(&Metric::R2) {
            self.y_sum += target.sum_dim_intlist(0, false, Kind::Float);
            self.y2_sum += target.square().sum_dim_intlist(0, false, Kind::Float);
        }
    }

    fn add_classes(&mut self, output: &Tensor, target: &Tensor) {
        let predicted = if self.loss == Loss::Bce {
            output.squeeze_dim(1).gt(0.0).to_kind(Kind::Int64)
        } else {
            output.argmax(1, false)
        };
        if self.metrics.contains(&Metric::Accuracy) {
            self.correct += predicted.eq_tensor(target).sum(Kind::Float);
        }
        if self.metrics.contains(&Metric::F1) {
            let cells = target * self.classes + &predicted;
            self.confusion += cells.bincount::<Tensor>(None, self.classes * self.classes).to_kind(Kind::Float);
        }
        if self.metrics.contains(&Metric::LogLoss) {
            let batch = match self.loss {
                Loss::Bce => output.squeeze_dim(1).binary_cross_entropy_with_logits::<Tensor>(
                    &target.to_kind(Kind::Float),
                    None,
                    None,
                    Reduction::Sum,
                ),
                _ => output.cross_entropy_loss::<Tensor>(target, None, Reduction::Sum, -100, 0.0),
            };
            self.log_loss_sum += batch;
        }
    }

    /// The mean loss and the metrics, in the order given to `new`. Reads the device once per
    /// accumulated quantity.
    pub fn finish(&self) -> (f64, Vec<f64>) {
        let read = |t: &Tensor| Vec::<f64>::try_from(t.to_kind(Kind::Double)).unwrap_or_default();
        let first = |t: &Tensor| read(t).first().copied().unwrap_or(f64::NAN);
        let n = self.samples.max(1) as f64;
        let outputs = self.sq_sum.size()[0].max(1) as f64;
        let metrics = self
            .metrics
            .iter()
            .map(|metric| match metric {
                Metric::Mae => first(&self.abs_sum) / (n * outputs),
                Metric::Mse => read(&self.sq_sum).iter().sum::<f64>() / (n * outputs),
                Metric::Rmse => (read(&self.sq_sum).iter().sum::<f64>() / (n * outputs)).sqrt(),
                Metric::R2 => {
                    // Keras's R2Score: 1 - SSE/SST per target, averaged uniformly.
                    let (sse, ys, y2s) = (read(&self.sq_sum), read(&self.y_sum), read(&self.y2_sum));
                    let r2: Vec<f64> = sse
                        .iter()
                        .zip(&ys)
                        .zip(&y2s)
                        .map(|((sse, s), s2)| 1.0 - sse / (s2 - s * s / n).max(f64::MIN_POSITIVE))
                        .collect();
                    r2.iter().sum::<f64>() / r2.len().max(1) as f64
                }
                Metric::Accuracy => first(&self.correct) / n,
                Metric::F1 => macro_f1(&read(&self.confusion), self.classes as usize),
                Metric::LogLoss => first(&self.log_loss_sum) / n,
            })
            .collect();
        let loss = match &self.step_losses {
            Some((slots, sizes)) => {
                let losses = read(slots);
                let total: i64 = sizes.iter().sum();
                losses.iter().zip(sizes).map(|(l, &s)| if s > 0 { l * s as f64 } else { 0.0 }).sum::<f64>()
                    / total.max(1) as f64
            }
            None => first(&self.loss_sum) / n,
        };
        (loss, metrics)
    }
}

/// Macro F1 from a row-major confusion matrix (rows: true class, columns: predicted); a class
/// never true nor predicted scores 0, as scikit-learn's default.
fn macro_f1(confusion: &[f64], classes: usize) -> f64 {
    let f1: Vec<f64> = (0..classes)
        .map(|c| {
            let tp = confusion[c * classes + c];
            let predicted: f64 = (0..classes).map(|r| confusion[r * classes + c]).sum();
            let actual: f64 = (0..classes).map(|p| confusion[c * classes + p]).sum();
            let denominator = predicted + actual;
            if denominator == 0.0 {
                0.0
            } else {
                2.0 * tp / denominator
            }
        })
        .collect();
    f1.iter().sum::<f64>() / classes.max(1) as f64
}

/// Tracks the best value of a monitored quantity, as Keras's callbacks do: a new value
/// improves on the best when it beats it by more than `min_delta`.
#[derive(Debug, Clone)]
pub struct Plateau {
    higher_is_better: bool,
    min_delta: f64,
    pub best: Option<f64>,
    /// Epochs since the last improvement.
    pub wait: usize,
}

/// What a checkpoint keeps of a `Plateau`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlateauState {
    pub best: Option<f64>,
    pub wait: usize,
}

impl Plateau {
    pub fn new(monitor: &str, mode: crate::config::Mode, min_delta: f64) -> Plateau {
        let higher_is_better = match mode {
            crate::config::Mode::Auto => Metric::higher_is_better(monitor),
            crate::config::Mode::Max => true,
            crate::config::Mode::Min => false,
        };
        Plateau { higher_is_better, min_delta, best: None, wait: 0 }
    }

    /// Records a new value; returns whether it improved on the best.
    pub fn observe(&mut self, value: f64) -> bool {
        let improved = match self.best {
            None => !value.is_nan(),
            Some(best) if self.higher_is_better => value > best + self.min_delta,
            Some(best) => value < best - self.min_delta,
        };
        if improved {
            self.best = Some(value);
            self.wait = 0;
        } else {
            self.wait += 1;
        }
        improved
    }

    pub fn state(&self) -> PlateauState {
        PlateauState { best: self.best, wait: self.wait }
    }

    pub fn restore(&mut self, state: &PlateauState) {
        (self.best, self.wait) = (state.best, state.wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn regression_metrics_span_batches_like_keras() {
        let y = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).unsqueeze(1);
        let p = Tensor::from_slice(&[1.5f32, 2.0, 2.0, 5.0]).unsqueeze(1);
        let metrics = [Metric::Mae, Metric::Mse, Metric::Rmse, Metric::R2];
        let mut acc = Accumulator::new(Loss::Mse, &metrics, 1, None, None, Device::Cpu);
        for (start, len) in [(0, 3), (3, 1)] {
            let (pb, yb) = (p.narrow(0, start, len), y.narrow(0, start, len));
            acc.add(&pb, &yb, &loss_value(Loss::Mse, &pb, &yb));
        }
        let (loss, m) = acc.finish();
        // errors 0.5, 0, -1, 1: mse = 2.25/4, mae = 2.5/4; SST = 5, r2 = 1 - 2.25/5.
        assert!((loss - 0.5625).abs() < 1e-6);
        assert!((m[0] - 0.625).abs() < 1e-6 && (m[1] - 0.5625).abs() < 1e-6 && (m[2] - 0.75).abs() < 1e-6);
        assert!((m[3] - 0.55).abs() < 1e-6, "r2 {}", m[3]);
    }

    #[test]
    fn metrics_come_back_in_data_units_when_targets_are_scaled() {
        let scale = Some((Tensor::from_slice(&[10.0f32]), Tensor::from_slice(&[100.0f32])));
        let mut acc = Accumulator::new(Loss::Mse, &[Metric::Mae], 1, None, scale, Device::Cpu);
        let (p, y) = (Tensor::from_slice(&[0.5f32]).unsqueeze(1), Tensor::from_slice(&[0.0f32]).unsqueeze(1));
        acc.add(&p, &y, &loss_value(Loss::Mse, &p, &y));
        let (loss, m) = acc.finish();
        assert!((loss - 0.25).abs() < 1e-6, "loss stays in training units");
        assert!((m[0] - 5.0).abs() < 1e-5, "mae in data units: {}", m[0]);
    }

    #[test]
    fn classification_accuracy_f1_and_log_loss() {
        // Three classes; logits favour: 0, 1, 1, 2 ; truth: 0, 1, 2, 2.
        let logits = Tensor::from_slice(&[5.0f32, 0., 0., 0., 5., 0., 0., 5., 0., 0., 0., 5.]).reshape([4, 3]);
        let y = Tensor::from_slice(&[0i64, 1, 2, 2]);
        let mut acc = Accumulator::new(
            Loss::CrossEntropy,
            &[Metric::Accuracy, Metric::F1, Metric::LogLoss],
            3,
            Some(3),
            None,
            Device::Cpu,
        );
        acc.add(&logits, &y, &loss_value(Loss::CrossEntropy, &logits, &y));
        let (loss, m) = acc.finish();
        assert!((m[0] - 0.75).abs() < 1e-6);
        // F1: class 0 = 1, class 1 = 2*1/(2+1) = 2/3, class 2 = 2*1/(1+2) = 2/3.
        assert!((m[1] - (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-6, "f1 {}", m[1]);
        assert!((m[2] - loss).abs() < 1e-6, "log_loss is the mean cross-entropy");
    }

    #[test]
    fn bce_predicts_from_the_sign_of_one_logit() {
        let logits = Tensor::from_slice(&[2.0f32, -1.0, 0.5]).unsqueeze(1);
        let y = Tensor::from_slice(&[1i64, 1, 1]);
        let mut acc = Accumulator::new(Loss::Bce, &[Metric::Accuracy], 1, Some(2), None, Device::Cpu);
        acc.add(&logits, &y, &loss_value(Loss::Bce, &logits, &y));
        assert!((acc.finish().1[0] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn plateau_counts_epochs_without_improvement() {
        let mut p = Plateau::new("val_loss", crate::config::Mode::Auto, 0.1);
        assert!(p.observe(1.0));
        assert!(!p.observe(0.95), "within min_delta");
        assert_eq!(p.wait, 1);
        assert!(p.observe(0.8));
        assert_eq!((p.best, p.wait), (Some(0.8), 0));
        let mut acc = Plateau::new("val_accuracy", crate::config::Mode::Auto, 0.0);
        assert!(acc.observe(0.5) && acc.observe(0.6) && !acc.observe(0.55));
    }
}
