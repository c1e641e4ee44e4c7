//! The `Trainer`: everything that changes while a run trains (model, optimizer, schedule,
//! early stopping, history, the epoch in progress), so that a checkpoint can save all of it
//! and a resumed run continues bit for bit. It has no side effects beyond its own state:
//! files, signals and reports belong to the `Run`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use super::early_stopping::EarlyStopper;
use super::graph::{self, Ran, StepGraph};
use super::signals::{Signal, Signals};
use super::step::{Batch, StepOutcome};
use crate::config::{Config, ModelKind, OnNan};
use crate::data::{Part, Prepared, Preprocessing};
use crate::dist::Group;
use crate::metrics::{self, sample_losses, weighted_loss_grad, weighted_loss_value, Accumulator};
use crate::model::{self, Model, Tape};
use crate::optim::{clip_grad_norm, LrScheduler, Optimizer};
use crate::report::{EpochRecord, History};

/// Below this many batch x parameter multiply-adds per step, one thread is fastest: the
/// Keras example (32 x 121) runs several times slower on two threads than on one, while a
/// 1024 x 1.3M step gains from every core.
const SMALL_STEP_WORK: i64 = 1 << 20;

/// How an epoch ended.
pub enum EpochEnd {
    Done,
    Interrupted(Signal),
}

/// An epoch in progress, kept across an interruption: the steps done, and the outputs they
/// made, written into one buffer of the epoch's size (the targets are the epoch's permuted
/// copy itself). The epoch's loss and metrics are computed from them at its end, in one
/// pass, as Keras's running metrics would have counted them. One buffer rather than a
/// tensor per step also keeps the allocator from fragmenting around small live tensors.
pub struct Running {
    pub(super) step: usize,
    pub(super) outputs: Tensor,
    /// Steps skipped by `on_nan: skip_batch`, left out of the loss and metrics.
    pub(super) skipped: Vec<usize>,
    pub(super) seconds: f64,
    /// Rows of `outputs` already summed across processes (each process fills only its
    /// shards' rows, the rest stay 0), so that a sum after an interruption is not repeated.
    pub(super) summed_rows: i64,
}

pub struct Trainer<'a> {
    pub(super) config: &'a Config,
    pub(super) pre: &'a Preprocessing,
    pub(super) device: Device,
    pub(super) train: Part,
    validation: Option<Part>,
    pub(super) model: Box<dyn Model>,
    pub(super) outputs: usize,
    pub(super) optimizer: Optimizer,
    pub(super) schedule: LrScheduler,
    pub(super) stopper: Option<EarlyStopper>,
    pub(super) history: History,
    /// Epochs completed.
    pub(super) epoch: usize,
    pub(super) running: Option<Running>,
    /// The training loop's time over every session of the run: the sum of metrics.csv's
    /// `seconds`, each epoch with its validation pass.
    pub(super) train_seconds: f64,
    /// The wall time of the run's earlier sessions, up to their last checkpoint.
    pub(super) earlier_seconds: f64,
    pub(super) skipped_batches: usize,
    /// The epoch that `checkpoint/last.safetensors` holds, once one is written.
    pub(super) checkpointed: Option<usize>,
    /// A scalar 1 on the device: the gradient of the loss with respect to itself.
    one: Tensor,
    /// `training.class_weight`: the weights in force, one per class in class-index order,
    /// for summary.json; and the same on the device, for the training loss. Validation and
    /// test losses stay unweighted, as Keras's.
    pub(super) class_weights: Option<Vec<f64>>,
    class_weight: Option<Tensor>,
    /// libtorch's intra-op threads (`set_threads`).
    threads: usize,
    /// With `training.cuda_graphs` in force, the captured training step (`plan_graphs`).
    graph: Option<StepGraph>,
}

impl<'a> Trainer<'a> {
    pub fn new(config: &'a Config, data: &'a Prepared, device: Device) -> Result<Trainer<'a>> {
        let pre = &data.preprocessing;
        let outputs = pre.output_width(config.loss());
        let training = &config.training;
        let probe = data.train.x.narrow(0, 0, data.train.len().min(2) as i64).to_device(device);
        let mut model =
            model::build(&config.model, pre, outputs, device, Some(&probe), &training.optimizer.param_groups)?;
        model.set_precision(training.precision)?;
        let optimizer = Optimizer::new(&training.optimizer, model.params(), model.segments());
        let class_weights = match (&training.class_weight, &pre.labels) {
            (Some(class_weight), Some(labels)) => {
                Some(class_weight.weights(labels, &class_counts(&data.train, labels.len())?)?)
            }
            _ => None,
        };
        let class_weight = class_weights.as_ref().map(|w| Tensor::from_slice(w).to_kind(Kind::Float).to_device(device));
        Ok(Trainer {
            config,
            pre,
            device,
            train: data.train.to_device(device),
            validation: data.validation.as_ref().map(|p| p.to_device(device)),
            model,
            outputs,
            optimizer,
            schedule: LrScheduler::new(&training.lr_schedule, training.optimizer.lr, training.epochs),
            stopper: training.early_stopping.clone().map(EarlyStopper::new),
            history: History::new(config.monitorable()),
            epoch: 0,
            running: None,
            train_seconds: 0.0,
            earlier_seconds: 0.0,
            skipped_batches: 0,
            checkpointed: None,
            one: Tensor::from(1.0f32).to_device(device),
            class_weights,
            class_weight,
            threads: 1,
            graph: None,
        })
    }

    /// Sets libtorch's intra-op threads to `training.threads`, or: one thread when a
    /// step's work (a process's shard of the batch x parameters) is small enough that
    /// splitting it costs more than it saves, else this process's share of the cores
    /// (`processes` train on this machine).
    pub fn set_threads(&mut self, processes: usize) {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let share = (cores / processes.max(1)).max(1);
        let work = (self.config.training.batch_size / processes.max(1)) as i64 * self.model.parameter_count();
        // Parameters measure an MLP's work per row; a convolution or a recurrence does far
        // more per parameter, so other models take the cores.
        let small = self.model.as_mlp().is_some() && work < SMALL_STEP_WORK;
        self.threads = self.config.training.threads.unwrap_or(if small { 1 } else { share });
        tch::set_num_threads(self.threads as i32);
    }

    /// The start-of-run line about the model, when it is not the plain MLP: what trains,
    /// what `model.freeze` keeps, and each parameter group's settings and size.
    pub fn model_line(&self) -> Option<String> {
        let (model, optimizer) = (&self.config.model, &self.config.training.optimizer);
        if model.kind == ModelKind::Mlp && model.freeze.is_empty() && optimizer.param_groups.is_empty() {
            return None;
        }
        let kind = crate::config::yaml_name(&model.kind);
        let name = model.path.as_ref().map_or(kind, |p| p.display().to_string());
        let mut line = format!("model: {name}, {} trainable parameters", self.model.parameter_count());
        if !model.freeze.is_empty() {
            line += &format!(", {} frozen ({})", self.model.frozen_count(), model.freeze.join(", "));
        }
        for (i, group) in optimizer.param_groups.iter().enumerate() {
            let size: i64 = self.model.segments().iter().filter(|s| s.group == Some(i)).map(|s| s.len).sum();
            let lr = group.lr.unwrap_or(optimizer.lr);
            let wd = group.weight_decay.unwrap_or(optimizer.weight_decay());
            line += &format!(
                "; group {i} ({}): lr {lr}, weight_decay {wd}, {size} parameters",
                group.params.names().join(", ")
            );
        }
        Some(line)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Decides whether training steps are replayed from a CUDA graph (`train::graph`), for
    /// a run of `world_size` processes.
    pub fn plan_graphs(&mut self, world_size: usize) -> Result<()> {
        let autograd = self.model.as_mlp().is_none_or(|m| m.uses_autograd());
        self.graph = graph::plan(self.config, self.device, world_size, self.model.parameter_count(), autograd)?;
        Ok(())
    }

    /// Whether training steps are replayed from a CUDA graph.
    pub fn cuda_graphs(&self) -> bool {
        self.graph.is_some()
    }

    pub(super) fn batch_sizes(&self) -> Vec<i64> {
        let (n, batch) = (self.train.len() as i64, self.config.training.batch_size as i64);
        (0..n).step_by(batch as usize).map(|start| batch.min(n - start)).collect()
    }

    /// (steps done, steps in all) of the epoch in progress.
    pub fn position(&self) -> (usize, usize) {
        (self.running.as_ref().map(|r| r.step).unwrap_or(0), self.batch_sizes().len())
    }

    /// One training step: forward, loss, backward, the gradients combined across the
    /// group's processes, clipping, update.
    pub fn step(&mut self, batch: &Batch, group: &Group) -> Result<StepOutcome> {
        let Some(mut graph) = self.graph.take_if(|g| g.fits(batch)) else {
            return self.eager_step(batch, group);
        };
        let ran = graph.step(batch, |batch| self.eager_step(batch, group));
        self.graph = Some(graph);
        match ran? {
            Ran::Eager(outcome) => Ok(outcome),
            Ran::Replayed => {
                self.optimizer.count_replayed_step();
                Ok(StepOutcome::Updated)
            }
        }
    }

    /// `step` as it runs without a graph, and as a graph captures it.
    fn eager_step(&mut self, batch: &Batch, group: &Group) -> Result<StepOutcome> {
        let training = &self.config.training;
        let loss = self.config.loss();
        if let Some(seed) = batch.dropout_seed {
            tch::manual_seed(seed);
        }
        // A shard is empty when a last batch has fewer rows than there are processes: this
        // process then adds nothing to the sum of gradients, but still takes part in it.
        let empty = batch.x.size()[0] == 0;
        if group.world_size > 1 {
            // As DDP: every process's buffers (BatchNorm's running statistics) are rank 0's
            // before each forward pass.
            for (_, mut buffer) in self.model.buffers()? {
                group.broadcast(&mut buffer)?;
            }
        }
        let tape = match empty {
            true => None,
            false => Some(self.model.forward_train(&batch.x, &batch.output)?),
        };
        if training.on_nan == OnNan::SkipBatch {
            // The one host read inside an epoch, and only when asked for.
            let finite = empty || self.loss_value(&batch.output, &batch.y).double_value(&[]).is_finite();
            if group.agree(!finite)? {
                return Ok(StepOutcome::Skipped);
            }
        }
        // The gradients' sum across processes starts while the backward pass goes on.
        let mut sum = group.sum_gradients(self.model.grads());
        match tape {
            Some(tape) => {
                let weight = self.class_weight.as_ref();
                let mut grad = match &tape {
                    Tape::Members(members) => metrics::members_loss_grad(loss, members, &batch.y, &self.one, weight),
                    _ => weighted_loss_grad(loss, &batch.output, &batch.y, &self.one, weight),
                };
                if batch.share != 1.0 {
                    // The mean over the shard, weighed as the shard's part of the global mean.
                    let _ = grad.g_mul_scalar_(batch.share);
                }
                self.model.backward(tape, &grad, &mut |start, len| sum.ready(start, len))?;
            }
            None => {
                // Nothing to add, in the same buckets as the others' (collectives must match).
                let _ = self.model.grads().shallow_clone().zero_();
                for (start, len) in self.model.gradient_ranges() {
                    sum.ready(start, len)?;
                }
            }
        }
        sum.finish()?;
        let (mut params, mut grads) = (self.model.params().shallow_clone(), self.model.grads().shallow_clone());
        if let Some(max_norm) = training.gradient_clip {
            clip_grad_norm(&mut grads, max_norm);
        }
        tch::no_grad(|| self.optimizer.step(&mut params, &grads))?;
        Ok(StepOutcome::Updated)
    }

    /// Trains epoch `epoch` (1-based) from where it stands, in batches of `batch_size` (the
    /// last holds the remainder), and records its metrics.csv row. Returns early, keeping
    /// the epoch's progress, when a signal arrives.
    pub fn run_epoch(&mut self, epoch: usize, signals: &Signals, group: &Group) -> Result<EpochEnd> {
        let started = Instant::now();
        let training = &self.config.training;
        let sizes = self.batch_sizes();
        let rows = self.train.len() as i64;
        let Running { step: first_step, outputs, mut skipped, seconds, summed_rows } = match self.running.take() {
            Some(running) => running,
            None => {
                // Several processes sum their outputs at the epoch's end: the rows of the
                // others' shards must be 0 here.
                let shape = [rows, self.outputs as i64];
                let outputs = match group.world_size {
                    1 => Tensor::f_empty(shape, (Kind::Float, self.device))?,
                    _ => Tensor::f_zeros(shape, (Kind::Float, self.device))?,
                };
                Running { step: 0, outputs, skipped: Vec::new(), seconds: 0.0, summed_rows: 0 }
            }
        };
        self.optimizer.set_lr(self.schedule.lr(epoch));
        let order = EpochOrder::new(&self.train, self.config.seed, epoch, training.shuffle, EpochOrder::COPY_LIMIT);
        let batch = training.batch_size as i64;
        let dropout = self.model.is_random();
        for (step, &size) in sizes.iter().enumerate().skip(first_step) {
            let (first, rows) = group.shard(size);
            let at = step as i64 * batch + first;
            let output = outputs.narrow(0, at, rows);
            let dropout_seed = dropout.then(|| step_seed(self.config.seed, epoch, step, group.rank));
            let share = rows as f64 / size as f64;
            let (x, y) = (order.x(at, rows), order.y.narrow(0, at, rows));
            if self.step(&Batch { x, y, output, share, dropout_seed }, group)? == StepOutcome::Skipped {
                self.skipped_batches += 1;
                skipped.push(step);
            }
            let signal = signals.received();
            if group.agree(signal.is_some())? {
                let done = (step as i64 + 1) * batch;
                let summed_rows = sum_rows(group, &outputs, summed_rows, done.min(rows))?;
                let seconds = seconds + started.elapsed().as_secs_f64();
                self.running = Some(Running { step: step + 1, outputs, skipped, seconds, summed_rows });
                return Ok(EpochEnd::Interrupted(signal.unwrap_or(Signal::Term)));
            }
        }
        sum_rows(group, &outputs, summed_rows, rows)?;
        let values = self.epoch_values(epoch, &outputs, &order.y, &skipped)?;
        let seconds = seconds + started.elapsed().as_secs_f64();
        self.history.epochs.push(EpochRecord { epoch, values, lr: self.optimizer.lr(), seconds });
        self.train_seconds += seconds;
        self.epoch = epoch;
        Ok(EpochEnd::Done)
    }

    /// The epoch's metrics.csv values: loss and metrics over the steps not skipped, then the
    /// validation pass.
    fn epoch_values(&self, epoch: usize, outputs: &Tensor, y: &Tensor, skipped: &[usize]) -> Result<Vec<f64>> {
        let loss = self.config.loss();
        let sizes = self.batch_sizes();
        let batch = self.config.training.batch_size as i64;
        if skipped.len() == sizes.len() {
            bail!(
                "every batch of epoch {epoch} had a non-finite loss and was skipped (training.on_nan: skip_batch); \
                 try a lower training.optimizer.lr (now {}) or training.gradient_clip",
                self.optimizer.lr()
            );
        }
        let (outputs, targets) = if skipped.is_empty() {
            (outputs.shallow_clone(), y.shallow_clone())
        } else {
            let kept: Vec<i64> = (0..sizes.len())
                .filter(|step| !skipped.contains(step))
                .flat_map(|step| (step as i64 * batch)..(step as i64 * batch + sizes[step]))
                .collect();
            let kept = Tensor::from_slice(&kept).to_device(self.device);
            (outputs.index_select(0, &kept), y.index_select(0, &kept))
        };
        let mut accumulator = self.accumulator();
        accumulator.add(&outputs, &targets, &self.loss_value(&outputs, &targets));
        let (train_loss, train_metrics) = accumulator.finish()?;
        if !train_loss.is_finite() {
            let bad = Vec::<bool>::try_from(sample_losses(loss, &outputs, &targets).isfinite().logical_not())?;
            let at = bad.iter().position(|&b| b).map(|sample| {
                let step = sample as i64 / batch;
                format!(" at step {} of {}", step + 1, sizes.len())
            });
            let kept = match self.checkpointed {
                Some(epoch) => format!("checkpoint/last.safetensors keeps epoch {epoch}"),
                None => "no checkpoint was written yet".to_string(),
            };
            bail!(
                "the loss became {train_loss} in epoch {epoch}{}; {kept}. \
                 Try a lower training.optimizer.lr (now {}), training.gradient_clip, or training.on_nan: skip_batch",
                at.unwrap_or_default(),
                self.optimizer.lr()
            );
        }
        let mut values = vec![train_loss];
        values.extend(train_metrics);
        if let Some(part) = &self.validation {
            let (val_loss, val_metrics) = metrics::evaluate(&*self.model, part, self.config, self.pre)?;
            values.push(val_loss);
            values.extend(val_metrics);
        }
        Ok(values)
    }

    /// Feeds the epoch's monitors. Returns (whether early stopping's monitor improved,
    /// whether early stopping ends training), the same on every process.
    pub fn end_of_epoch(&mut self, group: &Group) -> Result<(bool, bool)> {
        if let Some(monitor) = self.schedule.monitor().map(str::to_string) {
            self.schedule.observe(self.history.value(&monitor));
        }
        let Some(stopper) = &mut self.stopper else { return Ok((false, false)) };
        let value = self.history.value(&stopper.cfg.monitor);
        let (improved, stop) = stopper.observe(self.epoch, value, &*self.model)?;
        Ok((improved, group.agree(stop)?))
    }

    pub fn restore_best(&self) -> Result<()> {
        match &self.stopper {
            Some(stopper) => stopper.restore(&*self.model),
            None => Ok(()),
        }
    }

    /// With early stopping, the best epoch so far.
    pub fn best_epoch(&self) -> Option<usize> {
        self.stopper.as_ref().map(|s| s.best_epoch).filter(|&e| e > 0)
    }

    /// The training loss of some outputs: class-weighted with `training.class_weight`.
    fn loss_value(&self, output: &Tensor, target: &Tensor) -> Tensor {
        weighted_loss_value(self.config.loss(), output, target, self.class_weight.as_ref())
    }

    fn accumulator(&self) -> Accumulator {
        metrics::accumulator(self.config, self.pre, self.outputs, self.device)
    }

    /// The loss and metrics of the model on `part`, by name.
    pub fn metrics_on(&self, part: &Part) -> Result<serde_json::Map<String, serde_json::Value>> {
        let (loss, values) = metrics::evaluate(&*self.model, part, self.config, self.pre)?;
        let mut metrics = serde_json::Map::new();
        metrics.insert("loss".into(), loss.into());
        for (metric, value) in self.config.metrics().iter().zip(values) {
            metrics.insert(metric.name().into(), value.into());
        }
        Ok(metrics)
    }
}

/// How many rows of each class `part` holds (its targets are class indices).
fn class_counts(part: &Part, classes: usize) -> Result<Vec<usize>> {
    let counts = part.y.f_bincount::<Tensor>(None, classes as i64)?;
    Ok(Vec::<i64>::try_from(&counts)?.into_iter().map(|c| c as usize).collect())
}

/// The training part's rows in the order an epoch's batches take them. Shuffling uses a
/// ChaCha stream per (seed, epoch), so any epoch's order can be recomputed on its own.
pub(super) struct EpochOrder {
    /// The rows in epoch order (a copy), or the part itself when `index` says the order.
    rows: Tensor,
    index: Option<Tensor>,
    /// The targets in epoch order.
    pub y: Tensor,
}

impl EpochOrder {
    /// A part of up to this many bytes of features is copied in epoch order once an epoch
    /// and its batches are views of the copy: a gather per step would cost a tiny model
    /// more than its step. A larger part is gathered batch by batch, so that no epoch holds
    /// a second copy of it (2,000,000 rows of 20 features are 160 MiB).
    pub const COPY_LIMIT: i64 = 64 << 20;

    pub fn new(part: &Part, seed: u64, epoch: usize, shuffle: bool, copy_limit: i64) -> EpochOrder {
        if !shuffle {
            return EpochOrder { rows: part.x.shallow_clone(), index: None, y: part.y.shallow_clone() };
        }
        let mut order: Vec<i64> = (0..part.len() as i64).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch as u64);
        order.shuffle(&mut rng);
        let index = Tensor::from_slice(&order).to_device(part.x.device());
        let y = part.y.index_select(0, &index);
        let bytes = part.x.numel() as i64 * part.x.kind().elt_size_in_bytes() as i64;
        match bytes <= copy_limit {
            true => EpochOrder { rows: part.x.index_select(0, &index), index: None, y },
            false => EpochOrder { rows: part.x.shallow_clone(), index: Some(index), y },
        }
    }

    /// Rows `start..start + len` of the epoch's features.
    pub fn x(&self, start: i64, len: i64) -> Tensor {
        match &self.index {
            Some(index) => self.rows.index_select(0, &index.narrow(0, start, len)),
            None => self.rows.narrow(0, start, len),
        }
    }
}

/// A seed for one training step, mixing the run's seed, the epoch and the step.
fn step_seed(seed: u64, epoch: usize, step: usize, rank: usize) -> i64 {
    // Each process draws the masks of its own shard's rows: with dropout, a run depends on
    // its number of processes (docs/distributed.md).
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((epoch as u64) << 32) ^ step as u64 ^ ((rank as u64) << 48));
    (rand::RngCore::next_u64(&mut rng) >> 1) as i64
}

/// Sums rows `from..to` of an epoch's outputs across processes (each holds only its own
/// shards' rows), so that every process has them all; returns the rows now summed.
fn sum_rows(group: &Group, outputs: &Tensor, from: i64, to: i64) -> Result<i64> {
    if group.world_size > 1 && to > from {
        group
            .sum(&mut outputs.narrow(0, from, to - from))
            .context("summing the epoch's outputs across processes failed")?;
    }
    Ok(to.max(from))
}
