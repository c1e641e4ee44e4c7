//! The linear layer: its parameters (views into the model's flat buffer), their names, and
//! its TorchScript. Names follow `torch.nn.Sequential(Linear, act, Linear, act, ..., Linear)`:
//! layer `i` is child `2 i`, its activation child `2 i + 1` (which has no parameters), so a
//! PyTorch user's `nn.Sequential` takes torchfit's state_dict as it is.

use tch::Tensor;

/// One layer's parameters: views into `Mlp::params` (or, for gradients, `Mlp::grads`),
/// laid out as PyTorch does (`weight` is `[out, in]`).
pub struct Dense {
    pub weight: Tensor,
    pub bias: Tensor,
    /// `weight` transposed, a view made once rather than at every step.
    pub(super) weight_t: Tensor,
}

/// The `nn.Sequential` child name of linear layer `layer` (0-based among the linear layers).
pub fn child_name(layer: usize) -> String {
    (2 * layer).to_string()
}

impl Dense {
    /// The layer's parameters under their state_dict names.
    pub fn named_parameters(&self, layer: usize) -> [(String, &Tensor); 2] {
        let child = child_name(layer);
        [(format!("{child}.weight"), &self.weight), (format!("{child}.bias"), &self.bias)]
    }

    /// TorchScript applying layer `layer` to `x` inside the root module's method; it must
    /// compute what `Mlp::forward` does with this layer.
    pub fn script(layer: usize) -> String {
        format!(
            "    layer = getattr(self, \"{}\")\n    x = torch.linear(x, layer.weight, layer.bias)\n",
            child_name(layer)
        )
    }
}

/// `[weight, bias]` views, one pair per layer, into consecutive stretches of `flat`.
pub(super) fn views(flat: &Tensor, shapes: &[Vec<i64>]) -> Vec<Dense> {
    let mut offset = 0;
    let mut tensors = shapes.iter().map(|shape| {
        let n: i64 = shape.iter().product();
        let view = flat.narrow(0, offset, n).view(shape.as_slice());
        offset += n;
        view
    });
    let mut layers = Vec::new();
    while let (Some(weight), Some(bias)) = (tensors.next(), tensors.next()) {
        layers.push(Dense { weight_t: weight.tr(), weight, bias });
    }
    layers
}
