//! NumPy files: `x` and `y` `.npy` arrays, or one `.npz` holding both.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

use super::csv::classes_from_labels;
use super::{Table, Target};
use crate::config::{DataConfig, Missing, Task};

pub(super) fn read_npy_table(d: &DataConfig, task: Task) -> Result<Table> {
    let (x, y, x_source, source) = match (&d.path, &d.x, &d.y) {
        (Some(npz), _, _) => {
            let arrays =
                Tensor::read_npz(npz).map_err(|e| anyhow!("data.path: {}: cannot read as .npz: {e}", npz.display()))?;
            let get = |name: &str| {
                let at = arrays.iter().position(|(n, _)| n == name || n == &format!("{name}.npy"));
                at.map(|i| arrays[i].1.shallow_clone()).ok_or_else(|| {
                    anyhow!(
                        "data.path: {} has no array `{name}` (it has: {})",
                        npz.display(),
                        arrays.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })
            };
            (get("x")?, get("y")?, format!("{}: x", npz.display()), format!("{}: y", npz.display()))
        }
        (None, Some(xp), Some(yp)) => (
            read_npy("data.x", xp)?,
            read_npy("data.y", yp)?,
            format!("data.x: {}", xp.display()),
            format!("data.y: {}", yp.display()),
        ),
        _ => bail!("data: kind npy takes either x and y (.npy files) or path (one .npz with arrays x and y)"),
    };
    if x.dim() != 2 {
        bail!("{x_source}: must be 2-D [samples, features], got shape {:?}", x.size());
    }
    let rows = x.size()[0];
    let y = if y.dim() == 1 { y.unsqueeze(1) } else { y };
    if y.dim() != 2 || y.size()[0] != rows {
        bail!("{source}: must have shape [{rows}] or [{rows}, targets] to match x, got {:?}", y.size());
    }
    let mut x = x.f_to_kind(Kind::Float)?;
    let mut y_values = y.f_to_kind(Kind::Double)?;
    // NaN in x follows data.missing like an empty CSV cell.
    let x_missing = x.isnan().any_dim(1, false);
    let y_missing = y_values.isnan().any_dim(1, false);
    if x_missing.any().int64_value(&[]) != 0 || y_missing.any().int64_value(&[]) != 0 {
        match d.missing {
            Missing::Error => {
                let row =
                    Vec::<bool>::try_from(&x_missing.logical_or(&y_missing))?.iter().position(|&m| m).unwrap_or(0);
                bail!("{source}: row {} has a missing (NaN) value; set data.missing to drop_row or mean", row + 1)
            }
            Missing::Mean if y_missing.any().int64_value(&[]) != 0 => {
                bail!("{source}: y has missing (NaN) values; data.missing: mean fills features only, use drop_row")
            }
            Missing::Mean => {}
            Missing::DropRow => {
                let keep = x_missing.logical_or(&y_missing).logical_not().nonzero().squeeze_dim(1);
                x = x.index_select(0, &keep);
                y_values = y_values.index_select(0, &keep);
            }
        }
    }
    let targets = y_values.size()[1];
    let y = match task {
        Task::Regression => Target::Values(y_values.to_kind(Kind::Float)),
        Task::Classification => {
            if targets != 1 {
                bail!("{source}: classification takes one label per row, y has {targets} columns");
            }
            let values = Vec::<f64>::try_from(y_values.flatten(0, 1))?;
            if let Some(v) = values.iter().find(|v| v.fract() != 0.0) {
                bail!("{source}: class labels must be integers, found {v}");
            }
            classes_from_labels(&values.iter().map(|v| (*v as i64).to_string()).collect::<Vec<_>>())
        }
    };
    let f = x.size()[1];
    Ok(Table {
        categorical: Vec::new(),
        x,
        y,
        feature_names: (0..f).map(|i| format!("x{i}")).collect(),
        target_names: (0..targets).map(|i| if targets == 1 { "y".to_string() } else { format!("y{i}") }).collect(),
    })
}

pub(super) fn read_npy(key: &str, path: &Path) -> Result<Tensor> {
    let t = Tensor::read_npy(path).map_err(|e| {
        anyhow!("{key}: {}: cannot read as .npy: {}", path.display(), crate::shim::first_line(&e.to_string()))
    })?;
    if !(t.is_floating_point()
        || matches!(t.kind(), Kind::Int | Kind::Int64 | Kind::Int16 | Kind::Int8 | Kind::Uint8 | Kind::Bool))
    {
        bail!("{key}: {}: expected a numeric array, got dtype {:?}", path.display(), t.kind());
    }
    Ok(t)
}
