//! What a model trained on arrays takes: model.pt's `extra/input.json`, `{"shape": [per-sample
//! dims], "dtype": "float32" | "int64"}`, and the checks every way in (`torchfit predict` on a
//! .npy file, `serve`'s tensors, Triton's config) holds an input to. A table's model has no
//! input.json: its input is the features that features.json names.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tch::{Kind, Tensor};

/// The element type of an array model's input: float32 for float files, int64 for integer
/// ones (token ids), as training fed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Float32,
    Int64,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Float32 => "float32",
            Dtype::Int64 => "int64",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Dtype::Float32 => Kind::Float,
            Dtype::Int64 => Kind::Int64,
        }
    }

    /// The Open Inference Protocol's name for it.
    pub fn v2(self) -> &'static str {
        match self {
            Dtype::Float32 => "FP32",
            Dtype::Int64 => "INT64",
        }
    }

    /// Whether an array of `kind` may be given for this dtype: any float type for float32
    /// (converted, as training converted the file), any integer type for int64.
    fn accepts(self, kind: Kind) -> bool {
        let float = matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double);
        let integer = matches!(kind, Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64);
        match self {
            Dtype::Float32 => float,
            Dtype::Int64 => integer,
        }
    }
}

/// numpy's name for an element type, as messages say it.
fn kind_name(kind: Kind) -> String {
    match kind {
        Kind::Half => "float16".into(),
        Kind::Float => "float32".into(),
        Kind::Double => "float64".into(),
        Kind::Uint8 => "uint8".into(),
        Kind::Int8 => "int8".into(),
        Kind::Int16 => "int16".into(),
        Kind::Int => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Bool => "bool".into(),
        other => format!("{other:?}"),
    }
}

/// One sample's shape and element type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrayInput {
    pub shape: Vec<i64>,
    pub dtype: Dtype,
}

impl ArrayInput {
    /// Reads input.json's bytes; `file` names the model in errors.
    pub fn parse(bytes: &[u8], file: &str) -> Result<ArrayInput> {
        let input: ArrayInput = serde_json::from_slice(bytes).with_context(|| {
            format!("{file}: extra/input.json is not {{\"shape\": [sizes], \"dtype\": \"float32\" or \"int64\"}}")
        })?;
        if input.shape.iter().any(|&d| d < 1) {
            bail!("{file}: extra/input.json's shape {:?} has a size below 1", input.shape);
        }
        Ok(input)
    }

    /// The batch's shape as messages write it: `[batch, 1, 8, 8]`.
    pub fn batch_shape(&self) -> String {
        let dims: Vec<String> =
            std::iter::once("batch".to_string()).chain(self.shape.iter().map(i64::to_string)).collect();
        format!("[{}]", dims.join(", "))
    }

    /// What the model takes, for messages: `float32 arrays [batch, 1, 8, 8]`.
    pub fn describe(&self) -> String {
        format!("{} arrays {}", self.dtype.name(), self.batch_shape())
    }

    /// The number of values in one sample.
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product::<i64>() as usize
    }

    /// `x` checked against the model's input (its rank, per-sample dims and element type,
    /// and finite values for floats) and converted to the dtype; the error says what the
    /// model takes, and the caller adds what `x` is (a file, a request's input).
    pub fn check(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        if size.len() != self.shape.len() + 1 || size[1..] != self.shape[..] {
            bail!("has shape {size:?}, but the model takes {}", self.describe());
        }
        if size[0] == 0 {
            bail!("has no samples (shape {size:?})");
        }
        let kind = x.kind();
        if !self.dtype.accepts(kind) {
            bail!("holds {} values, but the model takes {}", kind_name(kind), self.describe());
        }
        let x = x.f_to_kind(self.dtype.kind())?;
        if self.dtype == Dtype::Float32 {
            let bad = x.isfinite().logical_not().flatten(0, -1).nonzero();
            if bad.size()[0] > 0 {
                let at = bad.int64_value(&[0, 0]) as usize / self.sample_len().max(1);
                bail!("sample {} has a value that is NaN or infinite; the model takes finite values only", at + 1);
            }
        }
        Ok(x)
    }
}

/// A .npy file of any rank and numeric type, as `torchfit predict` takes an array model's
/// input; one line naming the file when it is not one.
pub fn read_npy(path: &std::path::Path) -> Result<Tensor> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    Tensor::read_npy(path).map_err(|e| {
        let reason = crate::shim::first_line(&e.to_string()).to_string();
        anyhow::anyhow!("{}: cannot read as .npy: {reason}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn image() -> ArrayInput {
        ArrayInput::parse(br#"{"shape": [1, 8, 8], "dtype": "float32"}"#, "m.pt").unwrap()
    }

    #[test]
    fn input_json_is_read_and_checked() {
        assert_eq!(image(), ArrayInput { shape: vec![1, 8, 8], dtype: Dtype::Float32 });
        assert_eq!(image().describe(), "float32 arrays [batch, 1, 8, 8]");
        let tokens = ArrayInput::parse(br#"{"shape": [12], "dtype": "int64"}"#, "m.pt").unwrap();
        assert_eq!(tokens.dtype.v2(), "INT64");
        for bad in [&br#"{"shape": [0], "dtype": "int64"}"#[..], br#"{"shape": [3], "dtype": "float16"}"#, b"[3]"] {
            let err = ArrayInput::parse(bad, "m.pt").unwrap_err().to_string();
            assert!(err.starts_with("m.pt: extra/input.json"), "{err}");
        }
    }

    #[test]
    fn arrays_of_another_shape_or_type_are_refused() {
        let x = Tensor::zeros([2, 1, 8, 8], (Kind::Double, Device::Cpu));
        assert_eq!(image().check(&x).unwrap().kind(), Kind::Float);
        let wrong = image().check(&Tensor::zeros([2, 8, 8], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
        assert_eq!(wrong, "has shape [2, 8, 8], but the model takes float32 arrays [batch, 1, 8, 8]");
        let ints = image().check(&Tensor::zeros([2, 1, 8, 8], (Kind::Int64, Device::Cpu))).unwrap_err();
        assert_eq!(ints.to_string(), "holds int64 values, but the model takes float32 arrays [batch, 1, 8, 8]");
        let nan = Tensor::zeros([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        let _ = nan.get(2).get(0).get(3).get(4).fill_(f64::NAN);
        let err = image().check(&nan).unwrap_err().to_string();
        assert!(err.starts_with("sample 3 has a value that is NaN"), "{err}");
        let tokens = ArrayInput { shape: vec![4], dtype: Dtype::Int64 };
        assert_eq!(tokens.check(&Tensor::zeros([2, 4], (Kind::Int, Device::Cpu))).unwrap().kind(), Kind::Int64);
        assert!(tokens.check(&Tensor::zeros([2, 4], (Kind::Float, Device::Cpu))).is_err());
    }
}
