//! `model.init_from`: a model's starting weights taken by name from a safetensors file (a
//! state_dict, or a torchfit checkpoint, whose weights are stored under `model.`) or from a
//! TorchScript file's parameters and buffers. Strict, as `load_state_dict(strict=True)`: the
//! file holds exactly the model's names; with `model.strict: false` names may be missing or
//! extra. A name present with another shape is an error either way.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use tch::Tensor;

use crate::shim::{first_line, ScriptModule};

/// Copies the file's tensors into `targets` (state_dict names, sharing the model's tensors).
pub(super) fn apply(path: &Path, strict: bool, targets: &[(String, Tensor)]) -> Result<()> {
    if !path.is_file() {
        bail!("no such file");
    }
    let mut by_name = read(path)?;
    for (name, slot) in targets {
        let Some(t) = by_name.remove(name) else {
            if strict {
                bail!(
                    "has no tensor `{name}` (expected shape {:?}); model.strict: false keeps the model's own",
                    slot.size()
                );
            }
            continue;
        };
        if t.size() != slot.size() {
            bail!("`{name}` has shape {:?}, the model needs {:?}", t.size(), slot.size());
        }
        tch::no_grad(|| slot.shallow_clone().f_copy_(&t.f_to_kind(slot.kind())?.f_to_device(slot.device())?))?;
    }
    if let (Some(extra), true) = (by_name.keys().min(), strict) {
        bail!("has a tensor `{extra}` that this model does not have; model.strict: false ignores it");
    }
    Ok(())
}

/// The file's tensors by name: a TorchScript archive's parameters and buffers, or a
/// safetensors file's tensors (a torchfit checkpoint's model weights without `model.`).
pub(super) fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    if is_zip(path) {
        let module = ScriptModule::load(path).map_err(|e| anyhow!("cannot load it as TorchScript: {e}"))?;
        let mut tensors = module.named_tensors(false)?;
        tensors.extend(module.named_tensors(true)?);
        return Ok(tensors.into_iter().map(|(n, t)| (n, t.detach().copy())).collect());
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| anyhow!("cannot read safetensors (or TorchScript): {}", first_line(&e.to_string())))?;
    let by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    if by_name.contains_key("state.json") {
        return Ok(by_name
            .into_iter()
            .filter_map(|(n, t)| n.strip_prefix("model.").map(|n| (n.to_string(), t)))
            .collect());
    }
    Ok(by_name)
}

/// Whether the file starts like a zip archive (what `torch.jit.save` writes).
pub(super) fn is_zip(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && magic == *b"PK\x03\x04"
}
