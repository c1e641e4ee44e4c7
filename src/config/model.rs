//! The `model:` section's schema: every key, what it means and its plain default (each
//! kind's own defaults are filled by `resolve`; which kinds read which keys, `models`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Columns, NumericEmbedding};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Widths of the hidden layers; the output width follows from the task and data.
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub init: Init,
    /// Dropout probability after each hidden activation (training only): mlp (unset: 0) and
    /// tabm (unset: 0.1, `model::tabm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Initial weights matched by name: a safetensors file (a state_dict, or a torchfit
    /// checkpoint) or a TorchScript file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// `mlp` (the layers above) or `torchscript` (a module of `path`).
    #[serde(skip_serializing_if = "ModelKind::is_mlp")]
    pub kind: ModelKind,
    /// torchscript: the module, saved by `torch.jit.script(module).save(path)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// With `init_from`: false lets the file lack some of the model's tensors (a new head)
    /// or hold others (an old head); each name that is present must have the right shape.
    #[serde(skip_serializing_if = "is_true")]
    pub strict: bool,
    /// Glob patterns over parameter names (`encoder.*`): those parameters get no gradient
    /// and no optimizer state.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// mlp: `manual` (the hand-written backward pass, fast) or `autograd` (libtorch's, the
    /// engine every other model uses; for checking the manual one). A TorchScript module
    /// always trains through autograd.
    #[serde(skip_serializing_if = "Backward::is_manual")]
    pub backward: Backward,
    /// resnet, tabm and ft_transformer: the blocks, as `rtdl_revisiting_models` and
    /// `tabm.TabM` name their arguments (each kind's defaults in `config::models`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_blocks: Option<usize>,
    /// resnet, tabm and ft_transformer: the blocks' width (ft_transformer: the token width).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_block: Option<usize>,
    /// resnet: a block's hidden width over `d_block`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d_hidden_multiplier: Option<f64>,
    /// resnet: the hidden dropout rate inside a block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout1: Option<f64>,
    /// resnet: the dropout rate of a block's output, before the residual sum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout2: Option<f64>,
    /// ft_transformer: `FTTransformerBackbone`'s arguments of these names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_n_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_dropout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ffn_d_hidden_multiplier: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ffn_dropout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub residual_dropout: Option<f64>,
    /// tabm: the ensemble size (the number of implicit members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// tabm: `tabm` (BatchEnsemble layers) or `tabm-mini` (one per-member scaling at the
    /// input, shared layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch_type: Option<TabmArch>,
    /// mlp, tabm: embeddings of the numeric features (`numeric`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric_embedding: Option<NumericEmbedding>,
    /// With `data.text`: how each text column's token ids become a vector (`config::text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<super::TextEncoder>,
}

/// `model.arch_type`, as `tabm.make_tabm_backbone` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TabmArch {
    #[serde(rename = "tabm")]
    Tabm,
    #[serde(rename = "tabm-mini")]
    TabmMini,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backward {
    #[default]
    Manual,
    Autograd,
}

impl Backward {
    fn is_manual(&self) -> bool {
        *self == Backward::Manual
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Mlp,
    Torchscript,
    /// The residual MLP of "Revisiting Deep Learning Models for Tabular Data" (2021).
    Resnet,
    /// TabM, "Advancing Tabular Deep Learning with Parameter-Efficient Ensembling" (2025).
    Tabm,
    /// The feature-tokenizer Transformer of the ResNet's paper (2021).
    FtTransformer,
}

impl ModelKind {
    fn is_mlp(&self) -> bool {
        *self == ModelKind::Mlp
    }
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One of `training.optimizer.param_groups`, as a `torch.optim` param group: the parameters
/// its patterns match train with its learning rate and weight decay (the optimizer's own
/// where unset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroup {
    /// A glob pattern over parameter names, or a list of them.
    pub params: Columns,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Gelu,
    LeakyRelu,
    Elu,
    Silu,
    Linear,
}

impl Activation {
    /// For the tests that cover every activation.
    #[cfg(test)]
    pub(crate) const ALL: [Activation; 8] = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Gelu,
        Activation::LeakyRelu,
        Activation::Elu,
        Activation::Silu,
        Activation::Linear,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Keras Dense: glorot_uniform kernels, zero biases.
    Keras,
    /// PyTorch nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    Torch,
    /// He uniform: U(-sqrt(6/fan_in), sqrt(6/fan_in)), zero biases.
    KaimingUniform,
    /// He normal: N(0, 2/fan_in), zero biases.
    KaimingNormal,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            hidden: vec![10],
            activation: Activation::Relu,
            init: Init::Keras,
            dropout: None,
            init_from: None,
            kind: ModelKind::Mlp,
            path: None,
            strict: true,
            freeze: Vec::new(),
            backward: Backward::Manual,
            n_blocks: None,
            d_block: None,
            d_hidden_multiplier: None,
            dropout1: None,
            dropout2: None,
            numeric_embedding: None,
            k: None,
            arch_type: None,
            attention_n_heads: None,
            attention_dropout: None,
            ffn_d_hidden_multiplier: None,
            ffn_dropout: None,
            residual_dropout: None,
            text: None,
        }
    }
}
