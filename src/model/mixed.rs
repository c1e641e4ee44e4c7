//! Mixed precision (`training.precision: bf16`), as `torch.autocast(dtype=torch.bfloat16)`
//! does it for an MLP: the training step's matmuls and activations run in bfloat16 on a
//! bf16 copy of the Dense weights, made from the float32 master weights (`Mlp::params`) at
//! every step; their gradients come out in bf16 and are widened into the float32 gradient
//! buffer (`Mlp::grads`) that gradient reduction, clipping and the optimizer read. The
//! input stage (one-hot columns, embedding tables) stays float32, as autocast leaves
//! embedding lookups alone, and so do the loss, the metrics and evaluation.
//!
//! The copies are flat, like `params`: one cast per step in each direction, whatever the
//! depth.

use tch::{Kind, Tensor};

use super::dense::{views, Dense};

pub(super) struct LowPrecision {
    /// bf16 copy of the Dense part of `params` (the leading `len` elements).
    params: Tensor,
    pub(super) layers: Vec<Dense>,
    /// bf16 gradients of the Dense part, laid out as `params`.
    grads: Tensor,
    pub(super) grad_layers: Vec<Dense>,
    len: i64,
}

impl LowPrecision {
    /// Buffers for Dense layers of `shapes` (`[weight, bias]` pairs), on `params`' device.
    pub(super) fn new(params: &Tensor, shapes: &[Vec<i64>]) -> LowPrecision {
        let len = shapes.iter().map(|s| s.iter().product::<i64>()).sum();
        let options = (Kind::BFloat16, params.device());
        let (low_params, low_grads) = (Tensor::zeros([len], options), Tensor::zeros([len], options));
        LowPrecision {
            layers: views(&low_params, shapes),
            grad_layers: views(&low_grads, shapes),
            params: low_params,
            grads: low_grads,
            len,
        }
    }

    /// Rounds the current float32 weights into the bf16 copy.
    pub(super) fn refresh(&self, params: &Tensor) {
        self.params.shallow_clone().copy_(&params.narrow(0, 0, self.len));
    }

    /// Widens the bf16 Dense gradients into the float32 gradient buffer.
    pub(super) fn widen(&self, grads: &Tensor) {
        grads.narrow(0, 0, self.len).copy_(&self.grads);
    }
}
