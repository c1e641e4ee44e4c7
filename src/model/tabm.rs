//! `model.kind: tabm`: TabM ("TabM: Advancing Tabular Deep Learning with Parameter-Efficient
//! Ensembling", Gorishniy, Kotelnikov, Babenko, ICLR 2025), exactly as the `tabm` package
//! (0.0.3) computes `TabM.make(...)` with its parameter names:
//!
//! ```text
//! x = ensemble_view(x)                             # [batch, k, d_in]: each member, the same row
//! for block in backbone.blocks:                    # n_blocks times
//!     l = block[0]                                 # LinearBatchEnsemble (arch_type tabm)
//!     x = dropout(relu(((x * l.r) @ l.weight.T) * l.s + l.bias))
//! x = output(x)                                    # LinearEnsemble: member i's own d_block x outputs
//! ```
//!
//! (`tabm-mini`: one `backbone.affine.weight` scaling `[k, d_in]` first, then shared
//! nn.Linear blocks.) torchfit's input stage comes first: categorical features one-hot, as
//! tabm's `_OneHotEncoding`, or embedded (high-cardinality ones, as for the MLP).
//!
//! In training mode forward returns the members' outputs `[batch, k, outputs]` (the trainer
//! takes the mean of their losses, `Tape::Members`); in evaluation mode their combined
//! prediction `[batch, outputs]` (`combine`): the mean for regression, for classifiers the
//! logits of the mean probability. So model.pt, predict and serve need nothing of their own.
//! Built as a TorchScript module initialised as TabM.make initialises it (draws from the
//! global generator the caller seeds), trained through autograd by `Scripted`.

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::input::Input;
use super::numeric::Stage;
use crate::config::{ModelConfig, TabmArch, TABM_DEFAULTS};
use crate::shim::ScriptModule;

/// How the members' outputs make the model's prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Regression: their mean.
    Mean,
    /// cross_entropy: the mean of their softmax probabilities, as logits.
    Softmax,
    /// bce: the mean of their sigmoid probabilities, as a logit.
    Sigmoid,
}

impl Combine {
    /// How a run with `pre`'s task and `outputs` outputs combines its members.
    pub fn of(pre: &crate::data::Preprocessing, outputs: usize) -> Combine {
        match (pre.classes(), outputs) {
            (None, _) => Combine::Mean,
            (Some(_), 1) => Combine::Sigmoid,
            (Some(_), _) => Combine::Softmax,
        }
    }
}

/// The first scaling's initialisation, TabM.make's `start_scaling_init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScalingInit {
    /// ±1 with probability 1/2 (without numeric embeddings).
    RandomSigns,
    /// N(0, 1) (TabM.make's default with numeric embeddings).
    Normal,
}

/// What comes before the ensemble view: TorchScript lines turning forward's arguments into
/// `x` (`[batch, d_in]`), and the width of each feature in `x`, in order (TabM's
/// `d_features`: the first scaling is drawn once per feature and member).
///
/// The hook for numeric embeddings (`model.numeric_embedding`): its stage registers its
/// parameters on the root before `module_with` draws the backbone's (TabM draws a
/// num_embeddings module built before it first), puts its lines before the input stage's
/// (the numeric features become `[batch, numeric * d_embedding]`, then the categorical ones
/// are concatenated as now), and gives `d_embedding` as each numeric feature's width; TabM.make's
/// defaults then change to n_blocks 2 and start_scaling_init normal (`Defaults`).
pub(super) struct Front {
    pub script: String,
    pub d_features: Vec<usize>,
}

impl Front {
    /// torchfit's input stage alone: each numeric feature 1 wide, each categorical feature
    /// its one-hot or embedding width.
    pub fn plain(input: &Input) -> Front {
        let mut d_features = vec![1; input.numeric];
        d_features.extend(input.categorical.iter().map(|c| c.width()));
        d_features.extend(text_widths(input));
        Front { script: input.script(), d_features }
    }

    /// The numeric embedding stage, then torchfit's input stage: each numeric feature
    /// `d_embedding` wide, each categorical feature its one-hot or embedding width.
    pub fn embedded(input: &Input, stage: &Stage) -> Front {
        let mut d_features = stage.widths();
        d_features.extend(input.categorical.iter().map(|c| c.width()));
        d_features.extend(text_widths(input));
        Front { script: stage.script() + &input.script(), d_features }
    }
}

/// Each text column's width in `x`: one feature each (`model.text`'s vector).
fn text_widths(input: &Input) -> Vec<usize> {
    input.text.as_ref().map_or(Vec::new(), |t| vec![t.d_embedding(); t.columns])
}

/// TabM.make's defaults that depend on whether numeric embeddings are used.
#[derive(Debug, Clone, Copy)]
struct Defaults {
    n_blocks: usize,
    start_scaling_init: ScalingInit,
}

impl Defaults {
    fn new(numeric_embeddings: bool) -> Defaults {
        match numeric_embeddings {
            false => Defaults { n_blocks: TABM_DEFAULTS.1, start_scaling_init: ScalingInit::RandomSigns },
            true => Defaults { n_blocks: 2, start_scaling_init: ScalingInit::Normal },
        }
    }
}

/// The TorchScript module of a TabM for `input` with `outputs` outputs, behind the numeric
/// embedding `stage` when there is one (`model.numeric_embedding`: TabM.make's
/// `num_embeddings`, whose parameters are drawn first, as a module built before TabM is).
pub(super) fn module(
    cfg: &ModelConfig,
    input: &Input,
    stage: Option<&Stage>,
    outputs: usize,
    combine: Combine,
) -> Result<ScriptModule> {
    let mut root = ScriptModule::new("__torch__.torchfit.TabM")?;
    let front = match stage {
        None => Front::plain(input),
        Some(stage) => {
            stage.register(&mut root)?;
            Front::embedded(input, stage)
        }
    };
    let defaults = Defaults::new(stage.is_some());
    module_with(&mut root, cfg, &front, defaults, outputs)?;
    super::resnet::register_embeddings(&mut root, input)?;
    let source = source(cfg, &front, defaults, combine, input.signature());
    root.define(&source).context("compiling TabM's forward")?;
    root.set_training(false)?;
    Ok(root)
}

/// The knobs as they apply: k, n_blocks, d_block, dropout, arch_type.
fn knobs(cfg: &ModelConfig, defaults: Defaults) -> (i64, usize, i64, f64, TabmArch) {
    let (k, _, d_block, dropout) = TABM_DEFAULTS;
    (
        cfg.k.unwrap_or(k) as i64,
        cfg.n_blocks.unwrap_or(defaults.n_blocks),
        cfg.d_block.unwrap_or(d_block) as i64,
        cfg.dropout.unwrap_or(dropout),
        cfg.arch_type.unwrap_or(TabmArch::Tabm),
    )
}

/// Registers `backbone` and `output` on `root`, drawing their parameters in the order
/// TabM.make's constructors draw them.
fn module_with(
    root: &mut ScriptModule,
    cfg: &ModelConfig,
    front: &Front,
    defaults: Defaults,
    outputs: usize,
) -> Result<()> {
    let (k, n_blocks, d_block, _, arch) = knobs(cfg, defaults);
    let d_in: i64 = front.d_features.iter().map(|&w| w as i64).sum();
    let mut backbone = ScriptModule::new("__torch__.torchfit.Backbone")?;
    let mut blocks = ScriptModule::new("__torch__.torchfit.Blocks")?;
    for i in 0..n_blocks {
        let fan_in = if i == 0 { d_in } else { d_block };
        let linear = match arch {
            TabmArch::Tabm => {
                let chunks = (i == 0).then_some((front.d_features.as_slice(), defaults.start_scaling_init));
                batch_ensemble(&format!("Block{i}Linear"), fan_in, d_block, k, chunks)?
            }
            TabmArch::TabmMini => linear(&format!("Block{i}Linear"), fan_in, d_block)?,
        };
        let mut block = ScriptModule::new(&format!("__torch__.torchfit.Block{i}"))?;
        block.register_module("0", &linear)?;
        blocks.register_module(&i.to_string(), &block)?;
    }
    backbone.register_module("blocks", &blocks)?;
    if arch == TabmArch::TabmMini {
        // MLPBackboneMiniEnsemble draws its affine scaling after its blocks.
        let mut affine = ScriptModule::new("__torch__.torchfit.Affine")?;
        let weight = scaling([k, d_in], &front.d_features, defaults.start_scaling_init)?;
        affine.register_tensor("weight", &weight, false)?;
        backbone.register_module("affine", &affine)?;
    }
    root.register_module("backbone", &backbone)?;
    root.register_module("output", &linear_ensemble(d_block, outputs as i64, k)?)?;
    Ok(())
}

/// `forward` (the front, the ensemble view, the backbone, the output layer, and in
/// evaluation mode `combine`) and `combine`.
fn source(cfg: &ModelConfig, front: &Front, defaults: Defaults, combine: Combine, signature: &str) -> String {
    let (k, n_blocks, _, dropout, arch) = knobs(cfg, defaults);
    let args = signature;
    let mut src = format!("def forward(self, {args}) -> Tensor:\n");
    src += &front.script;
    // The ensemble view: [batch, 1, d_in] broadcasts against each member's [k, d_in]
    // scaling as EnsembleView's expand to [batch, k, d_in] does, without the copy.
    src += "    x = x.unsqueeze(1)\n";
    if arch == TabmArch::TabmMini {
        src += "    x = x * self.backbone.affine.weight\n";
    }
    for i in 0..n_blocks {
        src += &format!("    l = getattr(getattr(self.backbone.blocks, \"{i}\"), \"0\")\n");
        src += match arch {
            TabmArch::Tabm => "    x = torch.addcmul(l.bias, torch.matmul(x * l.r, l.weight.t()), l.s)\n",
            TabmArch::TabmMini => "    x = torch.linear(x, l.weight, l.bias)\n",
        };
        src += &format!("    x = torch.dropout(torch.relu(x), {dropout:?}, self.training)\n");
    }
    // LinearEnsemble: member i's [batch, d_block] times its own [d_block, outputs], plus its bias.
    src +=
        "    x = torch.baddbmm(self.output.bias.unsqueeze(1), x.transpose(0, 1), self.output.weight).transpose(0, 1)\n";
    src += "    if self.training:\n        return x\n    return self.combine(x)\n\n";
    src += &combine_source(combine, k);
    src
}

/// `combine(x)`: `[batch, k, outputs]` to `[batch, outputs]`.
fn combine_source(combine: Combine, k: i64) -> String {
    let log_k = (k as f64).ln();
    let body = match combine {
        Combine::Mean => "    return x.mean(1)\n".to_string(),
        // log(mean_i softmax(x_i)) = logsumexp_i(log_softmax(x_i)) - log k: logits whose
        // softmax is the members' mean probability.
        Combine::Softmax => format!("    return torch.logsumexp(torch.log_softmax(x, 2), 1) - {log_k:?}\n"),
        // logit(mean_i sigmoid(x_i)) = log mean_i sigmoid(x_i) - log mean_i sigmoid(-x_i),
        // each mean a logsumexp of log-sigmoids (the log k's cancel); stable for any x.
        Combine::Sigmoid => {
            "    return torch.logsumexp(torch.log_sigmoid(x), 1) - torch.logsumexp(torch.log_sigmoid(-x), 1)\n"
                .to_string()
        }
    };
    format!("def combine(self, x: Tensor) -> Tensor:\n{body}")
}

fn uniform(shape: &[i64], fan_in: i64) -> Result<Tensor> {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Ok(Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?.f_uniform_(-bound, bound)?)
}

/// A scaling `[k, width]` drawn as `init_scaling_` draws it with `chunks`: one value per
/// member and chunk (one `[k, 1]` draw per chunk, in order), repeated across the chunk.
fn scaling(shape: [i64; 2], chunks: &[usize], init: ScalingInit) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(chunks.len());
    for &width in chunks {
        let mut draw = Tensor::f_empty([shape[0], 1], (Kind::Float, Device::Cpu))?;
        let value = match init {
            ScalingInit::RandomSigns => draw.f_bernoulli_float_(0.5)?.f_mul_scalar(2.0)?.f_add_scalar(-1.0)?,
            ScalingInit::Normal => draw.f_normal_(0.0, 1.0)?,
        };
        parts.push(value.f_expand([shape[0], width as i64], false)?);
    }
    Ok(Tensor::f_cat(&parts, 1)?.f_contiguous()?)
}

/// LinearBatchEnsemble(fan_in, fan_out, k) as TabM makes it: `weight` `[fan_out, fan_in]`
/// U(±1/sqrt(fan_in)); `r` `[k, fan_in]` the first block's scaling (`first`: its chunks and
/// distribution), ones elsewhere; `s` ones; `bias` `[k, fan_out]` one U(±1/sqrt(fan_in))
/// draw of `[fan_out]` for every member.
fn batch_ensemble(
    class: &str,
    fan_in: i64,
    fan_out: i64,
    k: i64,
    first: Option<(&[usize], ScalingInit)>,
) -> Result<ScriptModule> {
    let float = (Kind::Float, Device::Cpu);
    let mut m = ScriptModule::new(&format!("__torch__.torchfit.{class}"))?;
    let weight = uniform(&[fan_out, fan_in], fan_in)?;
    let r = match first {
        Some((chunks, init)) => scaling([k, fan_in], chunks, init)?,
        None => Tensor::f_ones([k, fan_in], float)?,
    };
    let s = Tensor::f_ones([k, fan_out], float)?;
    let bias = uniform(&[fan_out], fan_in)?.f_expand([k, fan_out], false)?.f_contiguous()?;
    for (name, t) in [("weight", &weight), ("r", &r), ("s", &s), ("bias", &bias)] {
        m.register_tensor(name, t, false)?;
    }
    Ok(m)
}

/// nn.Linear(fan_in, fan_out) (tabm-mini's shared layers).
fn linear(class: &str, fan_in: i64, fan_out: i64) -> Result<ScriptModule> {
    let mut m = ScriptModule::new(&format!("__torch__.torchfit.{class}"))?;
    m.register_tensor("weight", &uniform(&[fan_out, fan_in], fan_in)?, false)?;
    m.register_tensor("bias", &uniform(&[fan_out], fan_in)?, false)?;
    Ok(m)
}

/// LinearEnsemble(d_block, outputs, k): `weight` `[k, d_block, outputs]` and `bias`
/// `[k, outputs]`, both U(±1/sqrt(d_block)).
fn linear_ensemble(d_block: i64, outputs: i64, k: i64) -> Result<ScriptModule> {
    let mut m = ScriptModule::new("__torch__.torchfit.OutputEnsemble")?;
    m.register_tensor("weight", &uniform(&[k, d_block, outputs], d_block)?, false)?;
    m.register_tensor("bias", &uniform(&[k, outputs], d_block)?, false)?;
    Ok(m)
}
