//! The activations, each in one place: its forward kernel, its backward kernel (the one
//! autograd itself would call) and its TorchScript spelling for `model.pt`. The three must
//! agree; `tests::manual_gradients_match_autograd` and the export tests hold them to it for
//! every activation.

use tch::Tensor;

use crate::config::Activation;

/// An activation's three faces.
pub struct Op {
    pub forward: fn(&Tensor) -> Tensor,
    /// The gradient through the activation from the gradient `da` of its output, its input
    /// `z` and its output `a`.
    pub backward: fn(da: &Tensor, z: &Tensor, a: &Tensor) -> Tensor,
    /// The TorchScript expression applying it to the variable `x`; `None` for the identity.
    pub script: Option<&'static str>,
}

pub fn op(activation: Activation) -> Op {
    match activation {
        Activation::Relu => Op {
            forward: |x| x.relu(),
            backward: |da, _, a| a.threshold_backward(da, 0.0),
            script: Some("torch.relu(x)"),
        },
        Activation::Tanh => Op {
            forward: |x| x.tanh(),
            backward: |da, _, a| Tensor::tanh_backward(da, a),
            script: Some("torch.tanh(x)"),
        },
        Activation::Sigmoid => Op {
            forward: |x| x.sigmoid(),
            backward: |da, _, a| Tensor::sigmoid_backward(da, a),
            script: Some("torch.sigmoid(x)"),
        },
        Activation::Gelu => Op {
            forward: |x| x.gelu("none"),
            backward: |da, z, _| z.gelu_backward(da, "none"),
            script: Some("torch.gelu(x)"),
        },
        Activation::LeakyRelu => Op {
            forward: |x| x.leaky_relu(),
            backward: |da, z, _| z.leaky_relu_backward(da, 0.01, false),
            script: Some("torch.leaky_relu(x, 0.01)"),
        },
        Activation::Elu => Op {
            forward: |x| x.elu(),
            backward: |da, z, _| Tensor::elu_backward(da, 1.0, 1.0, 1.0, false, z),
            script: Some("torch.elu(x)"),
        },
        Activation::Silu => {
            Op { forward: |x| x.silu(), backward: |da, z, _| z.silu_backward(da), script: Some("torch.silu(x)") }
        }
        Activation::Linear => {
            Op { forward: |x| x.shallow_clone(), backward: |da, _, _| da.shallow_clone(), script: None }
        }
    }
}
