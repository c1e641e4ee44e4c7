//! The input stage: what turns the encoded input `x` into the first Dense layer's input `h0`.
//! `x` holds the numeric features first, then one column per categorical feature with that
//! row's level index (as a float). Each categorical feature enters `h0` as a one-hot vector
//! or as a row of a learned embedding table; its forward, backward, TorchScript and
//! parameter names are here. A numeric-only input is `x` itself, with no op at all: the
//! input stage must cost nothing for the models that do not need it.
//!
//! Embedding tables are parameters like any other: views into the model's flat buffer
//! (after the Dense layers), named `embeddings.<j>.weight` with `j` the categorical
//! feature's index, as an `nn.ModuleList` named `embeddings` would name them with a
//! parameterless module in the place of each one-hot feature.
//!
//! With free-text columns, `x` ends with their token ids (`max_length` per column) and each
//! column enters `h0` as its text encoder's vector (`text`); only the generated TorchScript
//! models take text (the hand-written MLP's forward and backward here do not).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::text::TextInput;

/// What the model's input is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The numeric features: `x`'s first columns, standardised.
    pub numeric: usize,
    /// The categorical features, in the order of their level-index columns after the
    /// numeric ones.
    pub categorical: Vec<Categorical>,
    /// The free-text columns' token ids, after the categorical codes (`text`).
    pub text: Option<TextInput>,
}

/// How one categorical feature enters the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Categorical {
    /// The number of levels; the feature's column holds `0..levels`.
    pub levels: usize,
    /// `None`: one-hot (`levels` columns of `h0`); `Some(width)`: a learned embedding
    /// (`width` columns).
    pub embedding: Option<usize>,
}

/// The child module holding the embedding tables, in `model.pt` and in parameter names.
pub const EMBEDDINGS: &str = "embeddings";

/// The parameter name of categorical feature `j`'s embedding table.
pub fn embedding_name(j: usize) -> String {
    format!("{EMBEDDINGS}.{j}.weight")
}

impl Categorical {
    /// The columns the feature takes in `h0`.
    pub fn width(&self) -> usize {
        self.embedding.unwrap_or(self.levels)
    }
}

impl Input {
    /// The input a run's preprocessing produces.
    pub fn of(pre: &crate::data::Preprocessing) -> Input {
        let categorical =
            pre.categorical.iter().map(|f| Categorical { levels: f.levels.len(), embedding: f.embedding }).collect();
        let text = pre.text.as_ref().map(TextInput::of);
        Input { numeric: pre.feature_names.len(), categorical, text }
    }

    /// The input of a built-in model of `cfg`: its text encoded by `model.text`.
    pub fn for_model(pre: &crate::data::Preprocessing, cfg: &crate::config::ModelConfig) -> Input {
        let mut input = Input::of(pre);
        if let Some(text) = &mut input.text {
            text.encoder = cfg.text.clone();
        }
        input
    }

    pub fn numeric_only(numeric: usize) -> Input {
        Input { numeric, categorical: Vec::new(), text: None }
    }

    /// The width of `h0`: the first Dense layer's fan-in.
    pub fn width(&self) -> usize {
        let text = self.text.as_ref().map_or(0, TextInput::width);
        self.numeric + self.categorical.iter().map(Categorical::width).sum::<usize>() + text
    }

    /// The width of the encoded input `x`: one column per numeric or categorical feature,
    /// and `max_length` per text column.
    pub fn columns(&self) -> usize {
        self.numeric + self.categorical.len() + self.text.as_ref().map_or(0, TextInput::ids)
    }

    pub fn is_numeric_only(&self) -> bool {
        self.categorical.is_empty() && self.text.is_none()
    }

    /// forward's arguments (`Scripted`'s input contract): `x`, with categorical features
    /// `x, codes`, with text `x, codes, ids` (codes `[batch, 0]` when there are none).
    pub fn signature(&self) -> &'static str {
        match (self.text.is_some(), self.categorical.is_empty()) {
            (true, _) => "x: Tensor, codes: Tensor, ids: Tensor",
            (false, true) => "x: Tensor",
            (false, false) => "x: Tensor, codes: Tensor",
        }
    }

    /// The names of forward's arguments, as [`Input::signature`] has them.
    pub fn arguments(&self) -> &'static str {
        match (self.text.is_some(), self.categorical.is_empty()) {
            (true, _) => "x, codes, ids",
            (false, true) => "x",
            (false, false) => "x, codes",
        }
    }

    /// Refuses what no data can fill: a feature without levels, an embedding without
    /// columns.
    pub(super) fn check(&self) -> Result<()> {
        for (j, c) in self.categorical.iter().enumerate() {
            if c.levels == 0 {
                bail!("categorical feature {j} has no levels");
            }
            if c.embedding == Some(0) {
                bail!("categorical feature {j} has an embedding of width 0");
            }
        }
        Ok(())
    }

    /// Each categorical feature's embedding table shape, `None` for one-hot ones.
    pub(super) fn table_shapes(&self) -> Vec<Option<[i64; 2]>> {
        self.categorical.iter().map(|c| c.embedding.map(|w| [c.levels as i64, w as i64])).collect()
    }

    /// Initial embedding tables on the CPU: N(0, 1), as `nn.Embedding` draws them, so a
    /// PyTorch user's model and torchfit's start from the same distribution. (An
    /// embedding row plays the part of a one-hot column's weights, which the Dense
    /// initialisers scale down by fan-in; N(0, 1) is larger, and is what PyTorch users
    /// expect.) Draws come from the global generator, after the Dense layers' draws.
    pub(super) fn init(&self) -> Result<Vec<Option<Tensor>>> {
        self.table_shapes()
            .into_iter()
            .map(|shape| shape.map(|s| Tensor::f_randn(s, (Kind::Float, Device::Cpu))).transpose().map_err(Into::into))
            .collect()
    }

    /// `h0` and the level indices (`[rows, categorical]`, int64) for the backward pass, from
    /// a not numeric-only input. `tables` holds each feature's table, `None` for one-hot.
    pub(super) fn forward(&self, x: &Tensor, tables: &[Option<Tensor>]) -> (Tensor, Tensor) {
        let numeric = self.numeric as i64;
        let codes = x.narrow(1, numeric, self.categorical.len() as i64).to_kind(Kind::Int64);
        let mut parts = Vec::with_capacity(self.categorical.len() + 1);
        parts.push(x.narrow(1, 0, numeric));
        for (j, (c, table)) in self.categorical.iter().zip(tables).enumerate() {
            let code = codes.select(1, j as i64);
            parts.push(match table {
                Some(table) => table.index_select(0, &code),
                None => code.one_hot(c.levels as i64).to_kind(Kind::Float),
            });
        }
        (Tensor::cat(&parts, 1), codes)
    }

    /// Writes each embedding table's gradient into `grad_tables` (views into the flat
    /// gradient buffer) from `dh0`, the gradient of the loss with respect to `h0`: a row
    /// gets the sum of the `dh0` slices of the rows that looked it up. libtorch's own
    /// embedding backward kernel does the scatter-add (deterministically, on CUDA too).
    pub(super) fn backward(&self, dh0: &Tensor, codes: &Tensor, grad_tables: &[Option<Tensor>]) {
        let mut offset = self.numeric as i64;
        for (j, (c, grad)) in self.categorical.iter().zip(grad_tables).enumerate() {
            let width = c.width() as i64;
            if let Some(grad) = grad {
                let slice = dh0.narrow(1, offset, width);
                let _ = Tensor::embedding_dense_backward_out(
                    grad,
                    &slice,
                    &codes.select(1, j as i64),
                    c.levels as i64,
                    -1,
                    false,
                );
            }
            offset += width;
        }
    }

    /// TorchScript run on the raw input `x` (as float) before the preprocessing: it moves the
    /// level indices to `codes` (and the token ids to `ids`) and leaves the numeric features
    /// in `x`. Nothing for a numeric-only input.
    pub fn script_codes(&self) -> String {
        if self.is_numeric_only() {
            return String::new();
        }
        let n = self.numeric;
        match &self.text {
            None => format!("    codes = x[:, {n}:].long()\n    x = x[:, :{n}]\n"),
            Some(_) => {
                let c = n + self.categorical.len();
                format!("    codes = x[:, {n}:{c}].long()\n    ids = x[:, {c}:].long()\n    x = x[:, :{n}]\n")
            }
        }
    }

    /// TorchScript building `h0` in `x` from the preprocessed numeric features `x`, `codes`
    /// (exactly as `forward` does) and the text encoders' vectors of `ids`. Nothing for a
    /// numeric-only input.
    pub fn script(&self) -> String {
        if self.is_numeric_only() {
            return String::new();
        }
        let mut parts: Vec<String> = self
            .categorical
            .iter()
            .enumerate()
            .map(|(j, c)| match c.embedding {
                Some(_) => format!("torch.embedding(getattr(self.{EMBEDDINGS}, \"{j}\").weight, codes[:, {j}])"),
                // The aten op of `torch.nn.functional.one_hot`: the C++ script compiler
                // resolves `torch.<op>` but cannot see Python's `torch.nn.functional`.
                None => format!("torch.one_hot(codes[:, {j}], {}).float()", c.levels),
            })
            .collect();
        let mut src = String::new();
        if let Some(text) = &self.text {
            src += &text.script();
            parts.extend(text.vectors());
        }
        src + &format!("    x = torch.cat([x, {}], 1)\n", parts.join(", "))
    }
}

/// Views of each categorical feature's table (`None` for one-hot) in consecutive stretches
/// of `flat`, which holds exactly the tables.
pub(super) fn views(flat: &Tensor, shapes: &[Option<[i64; 2]>]) -> Vec<Option<Tensor>> {
    let mut offset = 0;
    shapes
        .iter()
        .map(|shape| {
            shape.map(|[levels, width]| {
                let view = flat.narrow(0, offset, levels * width).view([levels, width]);
                offset += levels * width;
                view
            })
        })
        .collect()
}
