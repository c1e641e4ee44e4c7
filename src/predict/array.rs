//! What a model trained on arrays takes: model.pt's `extra/input.json`, `{"shape": [per-sample
//! dims], "dtype": "float32" | "int64"}` (`data::ArrayInput`, as preprocessing.json records
//! it), read back, and said in the words of each way in: `torchfit predict` on a .npy file,
//! `serve`'s V2 tensors, Triton's config. A table's model has no input.json: its input is the
//! features that features.json names.

use anyhow::{bail, Context, Result};

pub use crate::data::{ArrayDtype as Dtype, ArrayInput};

/// Reads input.json's bytes; `file` names the model in errors.
pub fn parse(bytes: &[u8], file: &str) -> Result<ArrayInput> {
    let input: ArrayInput = serde_json::from_slice(bytes).with_context(|| {
        format!("{file}: extra/input.json is not {{\"shape\": [sizes], \"dtype\": \"float32\" or \"int64\"}}")
    })?;
    if input.shape.is_empty() || input.shape.iter().any(|&d| d < 1) {
        bail!("{file}: extra/input.json's shape {:?} is not a list of sizes of at least 1", input.shape);
    }
    Ok(input)
}

/// What the model takes, for messages: `float32 arrays [batch, 1, 8, 8]`.
pub fn describe(input: &ArrayInput) -> String {
    format!("{} arrays {}", input.dtype.name(), input.batch_shape("batch"))
}

/// The Open Inference Protocol's name for a dtype.
pub fn v2_datatype(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::Float32 => "FP32",
        Dtype::Int64 => "INT64",
    }
}

/// The number of values in one sample.
pub fn sample_len(input: &ArrayInput) -> usize {
    input.shape.iter().product::<i64>() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_json_is_read_and_checked() {
        let image = parse(br#"{"shape": [1, 8, 8], "dtype": "float32"}"#, "m.pt").unwrap();
        assert_eq!(image, ArrayInput { shape: vec![1, 8, 8], dtype: Dtype::Float32 });
        assert_eq!(describe(&image), "float32 arrays [batch, 1, 8, 8]");
        assert_eq!(sample_len(&image), 64);
        let tokens = parse(br#"{"shape": [12], "dtype": "int64"}"#, "m.pt").unwrap();
        assert_eq!(v2_datatype(tokens.dtype), "INT64");
        for bad in [
            &br#"{"shape": [0], "dtype": "int64"}"#[..],
            br#"{"shape": [], "dtype": "int64"}"#,
            br#"{"shape": [3], "dtype": "float16"}"#,
            b"[3]",
        ] {
            let err = parse(bad, "m.pt").unwrap_err().to_string();
            assert!(err.starts_with("m.pt: extra/input.json"), "{err}");
        }
    }
}
