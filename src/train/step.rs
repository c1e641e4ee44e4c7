//! One training step's input and outcome, shared by the `Trainer` and the CUDA graph that
//! replays its step (`graph`), which both depend on this file and not on each other's.

use tch::Tensor;

/// One training step's data: this process's shard of a global batch (all of it for a
/// single process), and where the model's outputs for it go (a slice of the epoch's output
/// buffer, from which the epoch's loss and metrics are computed).
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
    pub output: Tensor,
    /// The shard's rows over the global batch's: what its mean loss's gradient weighs in
    /// the step's (1 for a single process).
    pub share: f64,
    /// With dropout: the seed of this step's masks, a function of (seed, epoch, step) alone,
    /// so a run resumed mid-epoch draws what an uninterrupted one would.
    pub dropout_seed: Option<i64>,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Updated,
    /// The loss was not finite and `on_nan: skip_batch` left the weights alone.
    Skipped,
}
