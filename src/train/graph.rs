//! CUDA graphs for the training step (`training.cuda_graphs`). A small MLP on a GPU spends
//! its step launching kernels (the Keras example's step is a few dozen kernels of a few
//! microseconds each); a CUDA graph records the step's kernels once and replays them with
//! one launch. What is captured is the whole step (forward, loss, backward, clipping and the
//! optimizer, whose changing values live on the device: `Optimizer::capturable`) for the
//! full batch shape, reading its batch from static input tensors and writing its output to a
//! static one; each step copies its batch in and the output out. The last, smaller batch of
//! an epoch runs eagerly, as does the run's first full step, which warms up what a capture
//! must not do for the first time (cuBLAS handles and workspaces, the allocator).
//!
//! A step can be captured when nothing in it reads the host or talks to other processes:
//! not with `on_nan: skip_batch` (reads the loss every step), dropout (its masks are seeded
//! from the host per step), or several processes (collectives). `auto` captures when the
//! step is also small: batch x parameters up to `AUTO_MAX_WORK` multiply-adds per layer
//! pass, where launches, not arithmetic, bound a step on a current GPU.

use anyhow::{bail, Result};
use tch::{Device, Tensor};

use super::step::{Batch, StepOutcome};
use crate::config::{Config, CudaGraphs, OnNan};
use crate::cuda::CudaGraph;

/// `auto`'s limit: 2^26 batch x parameter multiply-adds (a 1024-row batch through 65k
/// parameters, the Keras example's 32 x 121 many times over). Above it a step's matmuls run
/// for tens of microseconds, and one launch saved per kernel matters little.
pub const AUTO_MAX_WORK: i64 = 1 << 26;

/// Why a run's step cannot be captured, if it cannot.
fn obstacle(config: &Config, device: Device, world_size: usize, autograd: bool) -> Option<String> {
    let training = &config.training;
    if !device.is_cuda() {
        return Some("CUDA graphs need a CUDA device (this run is on the CPU)".into());
    }
    if !CudaGraph::compiled() {
        return Some("this torchfit was built without CUDA graphs (see docs/cuda.md, Building)".into());
    }
    if autograd {
        return Some(
            "not with a model trained through autograd (model.kind: torchscript, model.backward: autograd)".into(),
        );
    }
    if world_size > 1 {
        return Some("not with several processes (their gradients are summed by collectives)".into());
    }
    if config.model.dropout.unwrap_or(0.0) > 0.0 {
        return Some("not with model.dropout (each step's masks are seeded from the host)".into());
    }
    if training.on_nan == OnNan::SkipBatch {
        return Some("not with training.on_nan: skip_batch (it reads the loss every step)".into());
    }
    None
}

/// The graph of a run's training step, once `plan` decides to use one.
pub struct StepGraph {
    device: usize,
    rows: i64,
    state: State,
}

enum State {
    /// The next full step runs eagerly, to warm up.
    Warmup,
    /// The next full step is captured.
    Ready,
    Captured {
        graph: CudaGraph,
        x: Tensor,
        y: Tensor,
        output: Tensor,
    },
}

/// What a step through the graph did.
pub enum Ran {
    /// Ran (or was captured and then replayed) through the eager code, which counted it.
    Eager(StepOutcome),
    /// Replayed: the optimizer's host count has yet to count it.
    Replayed,
}

/// Whether this run replays its step from a graph: `on` where it cannot is an error naming
/// the key; `auto` where it cannot, or on a step too large to gain, is no graph.
pub fn plan(
    config: &Config,
    device: Device,
    world_size: usize,
    parameters: i64,
    autograd: bool,
) -> Result<Option<StepGraph>> {
    let mode = config.training.cuda_graphs;
    if mode == CudaGraphs::Off {
        return Ok(None);
    }
    if let Some(reason) = obstacle(config, device, world_size, autograd) {
        if mode == CudaGraphs::On {
            bail!("training.cuda_graphs: on, but {reason}; use auto or off");
        }
        return Ok(None);
    }
    let rows = config.training.batch_size as i64;
    if mode == CudaGraphs::Auto && rows.saturating_mul(parameters) > AUTO_MAX_WORK {
        return Ok(None);
    }
    let Device::Cuda(index) = device else { return Ok(None) };
    Ok(Some(StepGraph { device: index, rows, state: State::Warmup }))
}

impl StepGraph {
    /// Whether `batch` has the captured shape (a full batch).
    pub fn fits(&self, batch: &Batch) -> bool {
        batch.x.size()[0] == self.rows
    }

    /// One full step: eagerly (warm-up), captured and replayed, or replayed. `eager` is the
    /// step's eager code.
    pub fn step(&mut self, batch: &Batch, eager: impl FnOnce(&Batch) -> Result<StepOutcome>) -> Result<Ran> {
        match &mut self.state {
            State::Warmup => {
                self.state = State::Ready;
                eager(batch).map(Ran::Eager)
            }
            State::Ready => {
                let (x, y, output) = (batch.x.copy(), batch.y.copy(), batch.output.empty_like());
                let mut graph = CudaGraph::new()?;
                graph.capture_begin(self.device)?;
                let captured = Batch {
                    x: x.shallow_clone(),
                    y: y.shallow_clone(),
                    output: output.shallow_clone(),
                    share: batch.share,
                    dropout_seed: None,
                };
                // Capturing records the step without running it; the replay runs it.
                let outcome = eager(&captured);
                let ended = graph.capture_end();
                let outcome = outcome?;
                ended?;
                graph.replay()?;
                batch.output.shallow_clone().copy_(&output);
                self.state = State::Captured { graph, x, y, output };
                Ok(Ran::Eager(outcome))
            }
            State::Captured { graph, x, y, output } => {
                x.copy_(&batch.x);
                y.copy_(&batch.y);
                graph.replay()?;
                batch.output.shallow_clone().copy_(output);
                Ok(Ran::Replayed)
            }
        }
    }
}
