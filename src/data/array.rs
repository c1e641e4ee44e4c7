//! Array inputs: a `.npy` x of any rank (`[N, C, H, W]` images, `[N, T, F]` sequences) or of
//! integers (token ids `[N, T]`), which a user module takes as stored: no standardisation,
//! no filling. A 2-D float x is a table instead (named, standardised features), as it
//! always was.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The most axes an array may have, samples included: deeper arrays are not inputs anyone
/// trains on, and a bound keeps a header's shape from asking for absurd work.
pub const MAX_RANK: usize = 8;

/// What the model's input holds for array data: each sample's shape (without the sample
/// axis) and its element type. `preprocessing.json` records it, and a run's `input.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayInput {
    pub shape: Vec<i64>,
    pub dtype: ArrayDtype,
}

/// The element type of an array input: float files (float16/32/64, bool) load as float32,
/// integer ones (int8..int64, uint8) as int64, as `torch.from_numpy(a).float()` / `.long()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArrayDtype {
    Float32,
    Int64,
}

impl ArrayDtype {
    /// The dtype a file's element kind loads as.
    pub fn of(kind: Kind) -> ArrayDtype {
        match is_integer(kind) {
            true => ArrayDtype::Int64,
            false => ArrayDtype::Float32,
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            ArrayDtype::Float32 => Kind::Float,
            ArrayDtype::Int64 => Kind::Int64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ArrayDtype::Float32 => "float32",
            ArrayDtype::Int64 => "int64",
        }
    }
}

impl ArrayInput {
    /// The shape of a batch of `batch` samples, for messages: `[batch, 1, 8, 8]`.
    pub fn batch_shape(&self, batch: &str) -> String {
        let dims: Vec<String> = self.shape.iter().map(i64::to_string).collect();
        format!("[{batch}, {}]", dims.join(", "))
    }

    /// `[N, 1, 8, 8] (float32)` for messages, `N` the sample count.
    pub fn describe(&self, samples: i64) -> String {
        format!("{} ({})", self.batch_shape(&samples.to_string()), self.dtype.name())
    }

    /// Converts an array as read (`[samples, ...]`, any numeric kind) to this input's dtype,
    /// checking that each sample has this shape and, for floats, that every value is finite.
    /// `source` names the array in errors.
    pub fn convert(&self, source: &str, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        let dtype = ArrayDtype::of(x.kind());
        if size.len() != self.shape.len() + 1 || size[1..] != self.shape[..] || dtype != self.dtype {
            let found = ArrayInput { shape: size.get(1..).unwrap_or_default().to_vec(), dtype };
            let samples = size.first().copied().unwrap_or(0);
            bail!(
                "{source}: the model takes arrays {} ({}), this one is {}",
                self.batch_shape("N"),
                self.dtype.name(),
                if size.is_empty() { format!("a scalar ({})", dtype.name()) } else { found.describe(samples) }
            );
        }
        let x = x.f_to_kind(self.dtype.kind())?;
        check_finite(source, &x)?;
        Ok(x)
    }
}

/// Whether an x read from a file is an array input rather than a table: any rank but 2, or
/// integers (token ids, which standardising would make meaningless).
pub fn is_array(x: &Tensor) -> bool {
    x.dim() != 2 || is_integer(x.kind())
}

/// The array input an x read from a file holds (`[samples, ...]`): at least two axes, and no
/// empty per-sample axis.
pub(super) fn input_of(source: &str, x: &Tensor) -> Result<ArrayInput> {
    let size = x.size();
    if size.len() < 2 {
        bail!(
            "{source}: must be [samples, features] or an array [samples, ...] of at least 2 axes, got shape {size:?}"
        );
    }
    if size.len() > MAX_RANK {
        bail!("{source}: has {} axes (shape {size:?}); torchfit takes at most {MAX_RANK}", size.len());
    }
    if let Some(axis) = size.iter().skip(1).position(|&d| d == 0) {
        bail!("{source}: shape {size:?} has an empty axis {}: each sample would hold no values", axis + 1);
    }
    Ok(ArrayInput { shape: size[1..].to_vec(), dtype: ArrayDtype::of(x.kind()) })
}

fn is_integer(kind: Kind) -> bool {
    matches!(kind, Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64 | Kind::Uint8)
}

/// Fails at the first value of a float array that is NaN or infinite, naming its sample and
/// its index in the array: arrays go to the model as stored, so nothing fills a NaN.
pub(super) fn check_finite(source: &str, x: &Tensor) -> Result<()> {
    if x.kind() != Kind::Float || x.numel() == 0 {
        return Ok(());
    }
    // A finite sum settles that every value is finite, without a mask the size of x; an
    // infinite one may be an overflow, which the mask settles.
    if x.f_sum(Kind::Float)?.double_value(&[]).is_finite() {
        return Ok(());
    }
    let bad = x.f_isfinite()?.f_logical_not()?.f_flatten(0, -1)?;
    if bad.f_any()?.int64_value(&[]) == 0 {
        return Ok(());
    }
    // argmax gives the first of equal maxima: the first bad value.
    let flat = bad.f_to_kind(Kind::Uint8)?.f_argmax(None, false)?.int64_value(&[]);
    let mut index = vec![0i64; x.dim()];
    let mut rest = flat;
    for (i, &d) in x.size().iter().enumerate().rev() {
        (index[i], rest) = (rest % d, rest / d);
    }
    let value = x.f_double_value(&index)?;
    bail!(
        "{source}: sample {}, index {index:?} (flat index {flat}): {value} is not a finite number \
         (NaN, infinite, or beyond float32's ±3.4e38); arrays go to the model as stored, \
         data.missing does not fill them: fix or remove the sample",
        index[0] + 1
    )
}
