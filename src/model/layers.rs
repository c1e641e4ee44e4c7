//! PyTorch's layers as torchfit's generated TorchScript modules hold them: their tensors,
//! named and initialised as `torch.nn` names and draws them (from the global generator the
//! caller seeds).

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::shim::ScriptModule;

/// nn.Linear(fan_in, fan_out) with its initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
/// the weight, then the bias.
pub(super) fn linear(class: &str, fan_in: i64, fan_out: i64) -> Result<ScriptModule> {
    linear_drawn(class, fan_in, fan_out, false)
}

/// `linear`, with the bias zeroed after its draw when `zero_bias` (as modules that
/// re-initialise an nn.Linear's bias leave the generator).
pub(super) fn linear_drawn(class: &str, fan_in: i64, fan_out: i64, zero_bias: bool) -> Result<ScriptModule> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let mut m = ScriptModule::new(&format!("__torch__.torchfit.{class}"))?;
    let weight = Tensor::f_empty([fan_out, fan_in], (Kind::Float, Device::Cpu))?.f_uniform_(-bound, bound)?;
    let mut bias = Tensor::f_empty([fan_out], (Kind::Float, Device::Cpu))?.f_uniform_(-bound, bound)?;
    if zero_bias {
        bias = bias.f_zero_()?;
    }
    m.register_tensor("weight", &weight, false)?;
    m.register_tensor("bias", &bias, false)?;
    Ok(m)
}

/// nn.LayerNorm(width): weight 1, bias 0.
pub(super) fn layer_norm(class: &str, width: i64) -> Result<ScriptModule> {
    let mut m = ScriptModule::new(&format!("__torch__.torchfit.{class}"))?;
    let float = (Kind::Float, Device::Cpu);
    m.register_tensor("weight", &Tensor::f_ones([width], float)?, false)?;
    m.register_tensor("bias", &Tensor::f_zeros([width], float)?, false)?;
    Ok(m)
}
