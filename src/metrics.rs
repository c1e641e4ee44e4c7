//! Losses and metrics. Metrics accumulate on the device over an epoch (or an evaluation) and
//! are read back once at the end, computed as Keras's stateful metrics are: over all samples
//! seen, not as a mean of per-batch values (which would be wrong for rmse, r2 and f1).

use anyhow::Result;
use tch::{Device, Kind, Reduction, Tensor};

use crate::config::{Config, Loss, Metric};
use crate::data::{Part, Preprocessing};
use crate::model::Model;

/// An accumulator for `config`'s loss and metrics over a model with `outputs` outputs.
pub fn accumulator(config: &Config, pre: &Preprocessing, outputs: usize, device: Device) -> Accumulator {
    let scale = pre.scales_targets().then(|| {
        (Tensor::from_slice(&pre.target_std).to_device(device), Tensor::from_slice(&pre.target_mean).to_device(device))
    });
    Accumulator::new(config.loss(), &config.metrics(), outputs as i64, pre.classes(), scale, device)
}

/// The loss and metrics of `model` on `part`, in chunks that bound memory on large parts.
pub fn evaluate(model: &dyn Model, part: &Part, config: &Config, pre: &Preprocessing) -> Result<(f64, Vec<f64>)> {
    let acc = accumulator(config, pre, model.outputs() as usize, part.x.device());
    accumulate(model, part, config, acc)?.finish()
}

/// [`evaluate`], and a classifier's confusion counts from the same pass (`torchfit
/// evaluate`'s matrix): row-major, `true * classes + predicted`; `None` for a regression.
pub fn evaluate_with_confusion(
    model: &dyn Model,
    part: &Part,
    config: &Config,
    pre: &Preprocessing,
) -> Result<(f64, Vec<f64>, Option<Vec<i64>>)> {
    let acc = accumulator(config, pre, model.outputs() as usize, part.x.device()).keep_confusion();
    let acc = accumulate(model, part, config, acc)?;
    let (loss, metrics) = acc.finish()?;
    Ok((loss, metrics, acc.confusion()?))
}

/// `acc` with every row of `part` added, `model` run on chunks of it.
fn accumulate(model: &dyn Model, part: &Part, config: &Config, mut acc: Accumulator) -> Result<Accumulator> {
    const CHUNK: i64 = 8192;
    let n = part.len() as i64;
    for start in (0..n).step_by(CHUNK as usize) {
        let len = CHUNK.min(n - start);
        let (x, y) = (part.x.narrow(0, start, len), part.y.narrow(0, start, len));
        let output = model.forward(&x)?;
        let loss = loss_value(config.loss(), &output, &y);
        acc.add(&output, &y, &loss);
    }
    Ok(acc)
}

/// A classifier's predicted class indices `[rows]` from its raw outputs: the sign of bce's
/// one logit, else the largest output.
fn predicted_classes(loss: Loss, output: &Tensor) -> Tensor {
    if loss == Loss::Bce {
        output.squeeze_dim(1).gt(0.0).to_kind(Kind::Int64)
    } else {
        output.argmax(1, false)
    }
}

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

/// The batch loss with each sample's loss multiplied by its class's weight (`class_weight`:
/// one per class, on the output's device), reduced as Keras does, sum(w_i * l_i) / batch,
/// not as PyTorch's weighted mean, which divides by the sum of the weights. Without
/// weights, or for a regression loss (which has no classes; the config keeps weights off
/// it), `loss_value` itself.
pub fn weighted_loss_value(loss: Loss, output: &Tensor, target: &Tensor, class_weight: Option<&Tensor>) -> Tensor {
    let Some(class_weight) = class_weight else { return loss_value(loss, output, target) };
    match loss {
        // Summed, cross_entropy weighs each sample by its class; its Mean would divide by
        // the weights' sum.
        Loss::CrossEntropy => {
            output.cross_entropy_loss(target, Some(class_weight), Reduction::Sum, -100, 0.0) / output.size()[0] as f64
        }
        // Here the weight is per element, and Mean divides by the batch.
        Loss::Bce => output.squeeze_dim(1).binary_cross_entropy_with_logits::<Tensor>(
            &target.to_kind(Kind::Float),
            Some(class_weight.index_select(0, target)),
            None,
            Reduction::Mean,
        ),
        Loss::Mse | Loss::Mae | Loss::Huber => loss_value(loss, output, target),
    }
}

/// The gradient of a batch's mean loss with respect to the model's output, for the manual
/// backward pass (`Mlp::backward`). `one` is a scalar 1 on the output's device. The loss
/// value itself is not needed here: the epoch's loss is computed once, from all the
/// epoch's outputs (`Accumulator`).
pub fn loss_grad(loss: Loss, output: &Tensor, target: &Tensor, one: &Tensor) -> Tensor {
    let batch = output.size()[0] as f64;
    match loss {
        Loss::Mse => output.mse_loss_backward(one, target, Reduction::Mean),
        Loss::Huber => output.huber_loss_backward(one, target, Reduction::Mean, 1.0),
        Loss::Mae => (output - target).sign() / output.numel() as f64,
        // d/dz of mean(-log softmax(z)[y]) = (softmax(z) - onehot(y)) / batch
        Loss::CrossEntropy => {
            let onehot = target.one_hot(output.size()[1]).to_kind(Kind::Float);
            (output.softmax(1, Kind::Float) - onehot) / batch
        }
        Loss::Bce => (output.sigmoid() - target.to_kind(Kind::Float).unsqueeze(1)) / batch,
    }
}

/// The gradient of `weighted_loss_value`: each sample's row of `loss_grad` times its class's
/// weight. Without weights, `loss_grad` itself, at no extra cost.
pub fn weighted_loss_grad(
    loss: Loss,
    output: &Tensor,
    target: &Tensor,
    one: &Tensor,
    class_weight: Option<&Tensor>,
) -> Tensor {
    let grad = loss_grad(loss, output, target, one);
    match class_weight {
        Some(weight) if matches!(loss, Loss::CrossEntropy | Loss::Bce) => {
            grad * weight.index_select(0, target).unsqueeze(1)
        }
        _ => grad,
    }
}

/// The gradient of the mean of an ensemble's members' losses (`weighted_loss_value` of
/// each member's output against the targets) with respect to `members`, their outputs
/// `[batch, k, outputs]`: the loss over the `[batch * k]` member outputs against each target
/// repeated k times (`y.repeat_interleave(k)`), class weights included.
pub fn members_loss_grad(
    loss: Loss,
    members: &Tensor,
    target: &Tensor,
    one: &Tensor,
    class_weight: Option<&Tensor>,
) -> Tensor {
    let size = members.size();
    let (batch, k) = (size[0], size[1]);
    let flat = members.detach().to_kind(Kind::Float).reshape([batch * k, size[2]]);
    // expand and reshape repeat each row k times in place, with no host read (CUDA graphs).
    let mut repeated = target.size();
    repeated.insert(1, k);
    let mut shape = repeated.clone();
    shape.remove(0);
    shape[0] = batch * k;
    let target = target.unsqueeze(1).expand(repeated.as_slice(), false).reshape(shape.as_slice());
    weighted_loss_grad(loss, &flat, &target, one, class_weight).reshape(size.as_slice())
}

/// Per-sample losses (the mean over targets for regression), to find where a loss turned
/// non-finite.
pub fn sample_losses(loss: Loss, output: &Tensor, target: &Tensor) -> Tensor {
    let none = Reduction::None;
    match loss {
        Loss::Mse => output.mse_loss(target, none).mean_dim(1, false, Kind::Float),
        Loss::Mae => output.l1_loss(target, none).mean_dim(1, false, Kind::Float),
        Loss::Huber => output.huber_loss(target, none, 1.0).mean_dim(1, false, Kind::Float),
        Loss::CrossEntropy => output.cross_entropy_loss::<Tensor>(target, None, none, -100, 0.0),
        Loss::Bce => output.squeeze_dim(1).binary_cross_entropy_with_logits::<Tensor>(
            &target.to_kind(Kind::Float),
            None,
            None,
            none,
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
    /// The output width: metrics average over samples and outputs.
    outputs: i64,
    samples: i64,
    loss_sum: Tensor,
    abs_sum: Tensor,
    /// Per target: squared error, sum of targets, sum of squared targets (for mse and r2).
    sq_sum: Tensor,
    y_sum: Tensor,
    y2_sum: Tensor,
    correct: Tensor,
    /// Classification: confusion counts, `true * classes + predicted` (int64: exact at any
    /// count), kept for f1 or when asked (`keep_confusion`).
    confusion: Tensor,
    counts_confusion: bool,
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
            outputs,
            samples: 0,
            loss_sum: zeros(1),
            abs_sum: zeros(1),
            sq_sum: zeros(if metrics.contains(&Metric::R2) { outputs } else { 1 }),
            y_sum: zeros(outputs),
            y2_sum: zeros(outputs),
            correct: zeros(1),
            confusion: Tensor::zeros([classes * classes], (Kind::Int64, device)),
            counts_confusion: metrics.contains(&Metric::F1),
            log_loss_sum: zeros(1),
        }
    }

    /// Also counts a classifier's confusion matrix, whatever the metrics (`confusion`).
    pub fn keep_confusion(mut self) -> Accumulator {
        self.counts_confusion = self.classes > 0;
        self
    }

    /// The confusion counts (see `keep_confusion`), when they were kept.
    pub fn confusion(&self) -> Result<Option<Vec<i64>>> {
        match self.counts_confusion {
            true => Ok(Some(Vec::<i64>::try_from(self.confusion.to_device(Device::Cpu))?)),
            false => Ok(None),
        }
    }

    /// Adds a batch: the model's outputs, the training-space targets and the batch's mean
    /// loss. Call under `no_grad` with detached tensors.
    pub fn add(&mut self, output: &Tensor, target: &Tensor, batch_loss: &Tensor) {
        let n = output.size()[0];
        self.samples += n;
        self.loss_sum += batch_loss * n as f64;
        self.add_metrics(output, target);
    }

    fn add_metrics(&mut self, output: &Tensor, target: &Tensor) {
        if self.classes > 0 {
            self.add_classes(output, target);
        } else {
            self.add_values(output, target);
        }
    }

    fn add_values(&mut self, output: &Tensor, target: &Tensor) {
        let (prediction, target) = match &self.target_scale {
            Some((std, mean)) => (output * std + mean, target * std + mean),
            None => (output.shallow_clone(), target.shallow_clone()),
        };
        if self.metrics.contains(&Metric::Mae) {
            self.abs_sum += prediction.l1_loss(&target, Reduction::Sum);
        }
        if self.metrics.contains(&Metric::R2) {
            // r2 needs the squared error per target; mse and rmse only its total.
            self.sq_sum += (&prediction - &target).square().sum_dim_intlist(0, false, Kind::Float);
        } else if self.metrics.iter().any(|m| matches!(m, Metric::Mse | Metric::Rmse)) {
            self.sq_sum += prediction.mse_loss(&target, Reduction::Sum);
        }
        if self.metrics.contains(&Metric::R2) {
            self.y_sum += target.sum_dim_intlist(0, false, Kind::Float);
            self.y2_sum += target.square().sum_dim_intlist(0, false, Kind::Float);
        }
    }

    fn add_classes(&mut self, output: &Tensor, target: &Tensor) {
        let predicted = predicted_classes(self.loss, output);
        if self.metrics.contains(&Metric::Accuracy) {
            self.correct += predicted.eq_tensor(target).sum(Kind::Float);
        }
        if self.counts_confusion {
            let cells = target * self.classes + &predicted;
            self.confusion += cells.bincount::<Tensor>(None, self.classes * self.classes);
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
    pub fn finish(&self) -> Result<(f64, Vec<f64>)> {
        let read = |t: &Tensor| -> Result<Vec<f64>> { Ok(Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?)?) };
        let first = |t: &Tensor| -> Result<f64> { Ok(read(t)?.first().copied().unwrap_or(f64::NAN)) };
        let n = self.samples.max(1) as f64;
        let outputs = self.outputs.max(1) as f64;
        let metrics = self
            .metrics
            .iter()
            .map(|metric| -> Result<f64> {
                Ok(match metric {
                    Metric::Mae => first(&self.abs_sum)? / (n * outputs),
                    Metric::Mse => read(&self.sq_sum)?.iter().sum::<f64>() / (n * outputs),
                    Metric::Rmse => (read(&self.sq_sum)?.iter().sum::<f64>() / (n * outputs)).sqrt(),
                    Metric::R2 => {
                        // Keras's R2Score: 1 - SSE/SST per target, averaged uniformly.
                        let (sse, ys, y2s) = (read(&self.sq_sum)?, read(&self.y_sum)?, read(&self.y2_sum)?);
                        let r2: Vec<f64> = sse
                            .iter()
                            .zip(&ys)
                            .zip(&y2s)
                            .map(|((sse, s), s2)| 1.0 - sse / (s2 - s * s / n).max(f64::MIN_POSITIVE))
                            .collect();
                        r2.iter().sum::<f64>() / r2.len().max(1) as f64
                    }
                    Metric::Accuracy => first(&self.correct)? / n,
                    Metric::F1 => macro_f1(&read(&self.confusion)?, self.classes as usize),
                    Metric::LogLoss => first(&self.log_loss_sum)? / n,
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        let loss = first(&self.loss_sum)? / n;
        Ok((loss, metrics))
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
        let (loss, m) = acc.finish().unwrap();
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
        let (loss, m) = acc.finish().unwrap();
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
        let (loss, m) = acc.finish().unwrap();
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
        assert!((acc.finish().unwrap().1[0] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn class_weighted_loss_and_gradient_are_keras_sum_over_batch_size() {
        let _rng = crate::testing::seed(7);
        let (float, long) = ((Kind::Float, Device::Cpu), (Kind::Int64, Device::Cpu));
        let one = Tensor::from(1.0f32);
        let cases = [
            (Loss::CrossEntropy, Tensor::randn([12, 3], float), Tensor::randint(3, [12], long), vec![0.5f32, 2.0, 4.0]),
            (Loss::Bce, Tensor::randn([12, 1], float), Tensor::randint(2, [12], long), vec![0.25f32, 3.0]),
        ];
        for (loss, output, y, weights) in cases {
            let weight = Tensor::from_slice(&weights);
            // Keras's reduction written out, differentiated by autograd: sum(w_i * l_i) / batch.
            let leaf = output.copy().set_requires_grad(true);
            let per_sample = weight.index_select(0, &y);
            let want = (sample_losses(loss, &leaf, &y) * &per_sample).sum(Kind::Float) / 12.0;
            let want_grad = Tensor::run_backward(&[&want], &[&leaf], false, false).remove(0);
            let got = weighted_loss_value(loss, &output, &y, Some(&weight));
            let got_grad = weighted_loss_grad(loss, &output, &y, &one, Some(&weight));
            let (got, want) = (got.double_value(&[]), want.double_value(&[]));
            assert!((got - want).abs() < 1e-6, "{loss:?}: loss {got} vs {want}");
            let diff = (&got_grad - &want_grad).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{loss:?}: gradient differs by {diff}");
            // Not PyTorch's weighted mean, which divides by the sum of the weights instead.
            let weighted_mean = want * 12.0 / per_sample.sum(Kind::Float).double_value(&[]);
            assert!((got - weighted_mean).abs() > 1e-3, "{loss:?}: {got} is the weighted mean");
            // Unit weights are no weighting; no weights are the unweighted path itself.
            let ones = Tensor::ones_like(&weight);
            let plain = loss_value(loss, &output, &y).double_value(&[]);
            assert!((weighted_loss_value(loss, &output, &y, Some(&ones)).double_value(&[]) - plain).abs() < 1e-6);
            assert!(weighted_loss_grad(loss, &output, &y, &one, None).equal(&loss_grad(loss, &output, &y, &one)));
        }
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
