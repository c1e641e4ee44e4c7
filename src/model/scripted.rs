//! A user's TorchScript module (`model: {kind: torchscript, path: net.pt}`), trained through
//! libtorch autograd. Its trainable parameters are made views into one flat buffer and their
//! `.grad`s views into another (`Model`), in the order of their optimizer parameter groups,
//! so the optimizer, clipping and the data-parallel gradient sum work on it as on the MLP.
//! Frozen parameters (`model.freeze`) keep their own storage and `requires_grad = False`.
//!
//! The input contract: for a table, `forward(x)` gets the preprocessed float features
//! `[batch, numeric]` and, when the table has categorical features, their int64 level codes
//! `[batch, categorical]` as a second argument; for arrays, the tensor as stored.

use std::cell::Cell;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::input::Input;
use super::ready::GradHooks;
use super::Segment;
use super::{init, trainable, Model, Tape};
use crate::config::{Loss, ModelConfig, ParamGroup, Precision};
use crate::data::Preprocessing;
use crate::shim::{first_line, ScriptModule};

pub struct Scripted {
    /// Where the module came from, for errors (`model.path: net.pt`, `model.kind: resnet`).
    label: String,
    module: ScriptModule,
    params: Tensor,
    grads: Tensor,
    segments: Vec<Segment>,
    outputs: i64,
    /// Tables with categorical or text features: the numeric columns of `x`, then the
    /// categorical codes' (forward's second argument), and whether token ids follow them
    /// (its third); `None` passes `x` alone.
    layout: Option<(i64, i64, bool)>,
    /// forward's arguments, for errors.
    arguments: &'static str,
    /// bf16 autocast around training forward passes.
    low: bool,
    /// The module's training flag as last set, so that a pass switches it only when needed.
    training: Cell<bool>,
    /// Tells the gradient sum which ranges of `grads` are final during a backward pass.
    hooks: GradHooks,
    /// An ensemble (`model.kind: tabm`): its training forward returns the members' outputs
    /// `[batch, k, outputs]`, its method `combine` makes them the prediction.
    members: bool,
}

impl Scripted {
    /// Loads `path`, applies `model.init_from`, `model.freeze` and the parameter groups,
    /// moves it to `device`, and checks its forward on `probe` (a few training rows), when
    /// given, in evaluation mode: every error is a one-line message before the first epoch.
    pub fn new(
        path: &Path,
        cfg: &ModelConfig,
        pre: &Preprocessing,
        outputs: usize,
        device: Device,
        probe: Option<&Tensor>,
        groups: &[ParamGroup],
    ) -> Result<Scripted> {
        let module = load(path)?;
        let label = format!("model.path: {}", path.display());
        Scripted::from_module(module, label, cfg, pre, outputs, device, probe, groups)
    }

    /// `new` for a module already loaded or built; `label` says where it came from in
    /// errors.
    #[allow(clippy::too_many_arguments)]
    pub fn from_module(
        module: ScriptModule,
        label: String,
        cfg: &ModelConfig,
        pre: &Preprocessing,
        outputs: usize,
        device: Device,
        probe: Option<&Tensor>,
        groups: &[ParamGroup],
    ) -> Result<Scripted> {
        module.set_training(false)?;
        let params = module.named_tensors(false)?;
        tch::no_grad(|| -> Result<()> {
            for (_, t) in params.iter().chain(&module.named_tensors(true)?) {
                t.shallow_clone().f_set_data(&t.f_to_device(device)?)?;
            }
            Ok(())
        })?;
        let mut state: Vec<(String, Tensor)> = params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        state.extend(module.named_tensors(true)?);
        if let Some(from) = &cfg.init_from {
            init::apply(from, cfg.strict, &state).with_context(|| format!("model.init_from: {}", from.display()))?;
        }
        let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
        let assignment = trainable::assign(&names, &cfg.freeze, groups)?;
        let (flat, grads, segments, leaves) = flatten(&params, &assignment, device)?;
        let input = Input::of(pre);
        let model = Scripted {
            label,
            module,
            params: flat,
            grads,
            segments,
            outputs: outputs as i64,
            layout: (!input.is_numeric_only()).then_some((
                input.numeric as i64,
                input.categorical.len() as i64,
                input.text.is_some(),
            )),
            arguments: input.arguments(),
            low: false,
            training: Cell::new(false),
            hooks: GradHooks::new(leaves)?,
            members: false,
        };
        if let Some(probe) = probe {
            model.check_forward(probe, pre)?;
        }
        Ok(model)
    }

    /// The module as an ensemble: see `members`.
    pub fn with_members(self) -> Scripted {
        Scripted { members: true, ..self }
    }

    /// Runs forward on `probe` in evaluation mode and checks the output's shape.
    fn check_forward(&self, probe: &Tensor, pre: &Preprocessing) -> Result<()> {
        let file = &self.label;
        let rows = probe.size()[0];
        let out = self.run(probe, false).map_err(|e| {
            let args = self.arguments;
            anyhow!(
                "{file}: forward({args}) failed on a batch of shape {:?} ({:?}): {e}",
                self.inputs(probe)[0].size(),
                probe.kind()
            )
        })?;
        let want = [rows, self.outputs];
        if out.size() != want {
            let what = match (pre.classes(), self.outputs) {
                (Some(classes), 1) => format!("1 logit for {classes} classes with loss bce"),
                (Some(classes), _) => format!("{classes} classes"),
                (None, n) => format!("{n} target(s)"),
            };
            bail!(
                "{file}: forward returns shape {:?} for a batch of {rows}, but the task needs {want:?} ({what})",
                out.size()
            );
        }
        Ok(())
    }

    /// The forward arguments for a batch of torchfit's input: `x`, or for a table with
    /// categorical or text features, the numeric columns, the int64 codes and, with text,
    /// the int64 token ids.
    fn inputs(&self, x: &Tensor) -> Vec<Tensor> {
        match self.layout {
            Some((n, c, text)) => {
                let rest = if text { c } else { x.size()[1] - n };
                let mut inputs = vec![x.narrow(1, 0, n), x.narrow(1, n, rest).to_kind(Kind::Int64)];
                if text {
                    inputs.push(x.narrow(1, n + c, x.size()[1] - n - c).to_kind(Kind::Int64));
                }
                inputs
            }
            None => vec![x.shallow_clone()],
        }
    }

    /// Switches the module's training flag when it is not `training` already.
    fn set_mode(&self, training: bool) -> Result<()> {
        if self.training.get() != training {
            self.module.set_training(training)?;
            self.training.set(training);
        }
        Ok(())
    }

    /// forward, in training or evaluation mode; evaluation builds no graph.
    fn run(&self, x: &Tensor, training: bool) -> Result<Tensor> {
        self.set_mode(training)?;
        let inputs = self.inputs(x);
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let out = match training {
            true => self.module.run("forward", &refs),
            false => tch::no_grad(|| self.module.run("forward", &refs)),
        };
        out.map_err(|e| anyhow!("{}", first_line(&e.to_string())))
    }
}

/// Loads `path` in evaluation mode with its parameters, which must all be trainable float32
/// tensors (freezing is `model.freeze`'s job).
fn load(path: &Path) -> Result<ScriptModule> {
    let file = format!("model.path: {}", path.display());
    if !path.is_file() {
        bail!("{file}: no such file");
    }
    if !init::is_zip(path) {
        bail!("{file} is not a TorchScript file (save one with torch.jit.script(module).save(path))");
    }
    let module = ScriptModule::load(path).map_err(|e| {
        // libtorch's reason runs on (about zip internals); its start says enough.
        let reason: String = e.to_string().chars().take(120).collect();
        anyhow!("{file} cannot be loaded as TorchScript (save it with torch.jit.script(module).save(path)): {reason}")
    })?;
    module.set_training(false)?;
    let params = module.named_tensors(false)?;
    if params.is_empty() {
        bail!("{file} has no parameters to train");
    }
    for (name, t) in &params {
        if !t.requires_grad() {
            bail!(
                    "{file}: parameter `{name}` has requires_grad=False; save it trainable and freeze it with model.freeze: [\"{name}\"]"
                );
        }
        if t.kind() != Kind::Float {
            bail!(
                "{file}: parameter `{name}` is {:?}; torchfit trains float32 modules (call .float() before saving)",
                t.kind()
            );
        }
    }
    Ok(module)
}

/// The flat parameters, their gradients, the optimizer's segments, and each trainable
/// parameter (a leaf) with its range.
type Flat = (Tensor, Tensor, Vec<Segment>, Vec<(Tensor, (i64, i64))>);

/// Makes the trainable parameters views into one flat buffer, ordered by parameter group
/// (parameters in no group first), and their `.grad`s views into a second; freezes the rest.
fn flatten(params: &[(String, Tensor)], assignment: &trainable::Assignment, device: Device) -> Result<Flat> {
    let mut order: Vec<usize> = (0..params.len()).filter(|&i| !assignment.frozen[i]).collect();
    order.sort_by_key(|&i| assignment.group[i].map_or(0, |g| g + 1));
    let total: i64 = order.iter().map(|&i| params[i].1.numel() as i64).sum();
    let flat = Tensor::f_zeros([total], (Kind::Float, device))?;
    let grads = Tensor::f_zeros([total], (Kind::Float, device))?;
    let mut ranges = vec![(0, 0); params.len()];
    let mut leaves = Vec::with_capacity(order.len());
    let mut offset = 0;
    for &i in &order {
        let (_, p) = &params[i];
        let n = p.numel() as i64;
        let shape = p.size();
        let view = flat.narrow(0, offset, n).view(shape.as_slice());
        tch::no_grad(|| view.shallow_clone().f_copy_(p))?;
        let mut leaf = p.shallow_clone();
        leaf.f_set_data(&view)?;
        crate::shim::set_grad(&mut leaf, &grads.narrow(0, offset, n).view(shape.as_slice()))?;
        leaves.push((leaf, (offset, n)));
        ranges[i] = (offset, n);
        offset += n;
    }
    for (i, (_, p)) in params.iter().enumerate() {
        if assignment.frozen[i] {
            let _ = p.set_requires_grad(false);
        }
    }
    // Segments follow the buffer's order, which `ranges` gives by parameter.
    let mut by_offset: Vec<usize> = order.clone();
    by_offset.sort_by_key(|&i| ranges[i].0);
    let sorted_ranges: Vec<(i64, i64)> = by_offset.iter().map(|&i| ranges[i]).collect();
    let sorted = trainable::Assignment {
        frozen: vec![false; by_offset.len()],
        group: by_offset.iter().map(|&i| assignment.group[i]).collect(),
    };
    Ok((flat, grads, trainable::segments(&sorted_ranges, &sorted), leaves))
}

impl Model for Scripted {
    fn params(&self) -> &Tensor {
        &self.params
    }

    fn grads(&self) -> &Tensor {
        &self.grads
    }

    fn segments(&self) -> &[Segment] {
        &self.segments
    }

    fn outputs(&self) -> i64 {
        self.outputs
    }

    fn layers(&self, probe: &Tensor) -> Result<Vec<super::Layer>> {
        self.set_mode(false)?;
        let rows = probe.size().first().copied().unwrap_or(0);
        let (inputs, fewer) = (self.inputs(probe), self.inputs(&probe.narrow(0, 0, (rows - 1).max(0))));
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let fewer: Vec<&Tensor> = fewer.iter().collect();
        super::summary::script_layers(&self.module, &refs, &fewer)
    }

    fn frozen_count(&self) -> i64 {
        let all: i64 = self.module.named_tensors(false).unwrap_or_default().iter().map(|(_, t)| t.numel() as i64).sum();
        all - self.params.numel() as i64
    }

    /// A module may hold dropout layers, which torchfit cannot see: every step is seeded.
    fn is_random(&self) -> bool {
        true
    }

    fn set_precision(&mut self, precision: Precision) -> Result<()> {
        self.low = precision == Precision::Bf16;
        Ok(())
    }

    fn forward_train(&mut self, x: &Tensor, output: &Tensor) -> Result<Tape> {
        let cuda = self.params.device().is_cuda();
        if self.low {
            crate::shim::autocast_bf16(cuda, true)?;
        }
        let out = self.run(x, true);
        if self.low {
            crate::shim::autocast_bf16(cuda, false)?;
        }
        let out = out.with_context(|| format!("{}: forward failed in training", self.label))?;
        if self.members {
            let combined = tch::no_grad(|| self.module.run("combine", &[&out.detach().to_kind(Kind::Float)]))?;
            output.shallow_clone().f_copy_(&combined)?;
            return Ok(Tape::Members(out));
        }
        if out.size() != output.size() {
            bail!(
                "{}: forward returned shape {:?} for a batch of shape {:?}; expected {:?}",
                self.label,
                out.size(),
                x.size(),
                output.size()
            );
        }
        output.shallow_clone().f_copy_(&out.detach())?;
        Ok(Tape::Graph(out))
    }

    fn backward(
        &mut self,
        tape: Tape,
        grad_output: &Tensor,
        ready: &mut dyn FnMut(i64, i64) -> Result<()>,
    ) -> Result<()> {
        let (Tape::Graph(out) | Tape::Members(out)) = tape else {
            bail!("a TorchScript module is trained through autograd")
        };
        let _ = self.grads.zero_();
        self.hooks.around(ready, || crate::shim::backward(&out, grad_output))
    }

    fn gradient_ranges(&self) -> Vec<(i64, i64)> {
        self.hooks.ranges()
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.run(x, false)?.to_kind(Kind::Float))
    }

    fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut state = self.module.named_tensors(false)?;
        state.extend(self.buffers()?);
        Ok(state)
    }

    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        self.module.named_tensors(true)
    }

    fn export(&self, pre: &Preprocessing, loss: Loss) -> Result<ScriptModule> {
        super::script::user_module(&self.module, pre, loss)
    }
}
