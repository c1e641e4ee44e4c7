//! Datasets: features `x` `[samples, features]` and targets `y` `[samples, targets]`, both
//! float32. Generated data is drawn on the CPU from libtorch's seeded generator, so a seed
//! gives the same numbers whatever device the run uses.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::config::{DataConfig, DataKind};

pub struct Dataset {
    pub x: Tensor,
    pub y: Tensor,
}

impl Dataset {
    /// Builds the dataset a config describes. Draws from libtorch's global generator, which
    /// the caller seeds.
    pub fn from_config(cfg: &DataConfig) -> Result<Dataset> {
        let (n, f, t) = (cfg.samples as i64, cfg.features as i64, cfg.targets as i64);
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::f_randn([n, f], opts)?;
        let y = match cfg.kind {
            DataKind::RandomNormal => Tensor::f_randn([n, t], opts)?,
            DataKind::Linear => {
                // Scaled so that each target has unit variance before the noise.
                let w = Tensor::f_randn([f, t], opts)? / (f as f64).sqrt();
                x.f_matmul(&w)? + Tensor::f_randn([n, t], opts)? * cfg.noise
            }
        };
        Ok(Dataset { x, y })
    }

    pub fn len(&self) -> usize {
        self.x.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn features(&self) -> usize {
        self.x.size()[1] as usize
    }

    pub fn targets(&self) -> usize {
        self.y.size()[1] as usize
    }

    pub fn to_device(self, device: Device) -> Dataset {
        Dataset {
            x: self.x.to_device(device),
            y: self.y.to_device(device),
        }
    }
}

/// Reads a feature matrix for prediction: a `.npy` file holding a 2-D numeric array, or a CSV
/// file with a header row and one numeric column per feature. Errors name the file, and for
/// CSV the row and column.
pub fn read_matrix(path: &Path) -> Result<Tensor> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        let t = Tensor::read_npy(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read as .npy: {e}", path.display()))?;
        if t.dim() != 2 {
            bail!(
                "{}: expected a 2-D array [samples, features], got shape {:?}",
                path.display(),
                t.size()
            );
        }
        if !t.is_floating_point()
            && !matches!(
                t.kind(),
                Kind::Int | Kind::Int64 | Kind::Int16 | Kind::Int8 | Kind::Uint8
            )
        {
            bail!(
                "{}: expected a numeric array, got dtype {:?}",
                path.display(),
                t.kind()
            );
        }
        return Ok(t.f_to_kind(Kind::Float)?);
    }
    let (header, values) = read_csv(path)?;
    let (rows, cols) = (values.len() / header.len().max(1), header.len());
    Ok(Tensor::f_from_slice(&values)?.f_reshape([rows as i64, cols as i64])?)
}

/// A CSV file with a header row, every cell a number: the header and the values row by row.
pub fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<f32>)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header: Vec<String> = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header row", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        bail!(
            "{}: the file is empty; expected a header row, then one row per sample",
            path.display()
        );
    }
    let mut values = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Row numbers count data rows from 1; line numbers count the header too.
        let row = i + 1;
        let record = record.map_err(|e| anyhow::anyhow!("{}: row {row}: {e}", path.display()))?;
        for (cell, column) in record.iter().zip(&header) {
            let value: f32 = cell.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: row {row} (line {}), column `{column}`: {cell:?} is not a number",
                    path.display(),
                    row + 1
                )
            })?;
            values.push(value);
        }
    }
    if values.is_empty() {
        bail!("{}: no data rows after the header", path.display());
    }
    Ok((header, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_the_config_and_the_seed_fixes_the_values() {
        let cfg = DataConfig {
            kind: DataKind::Linear,
            samples: 50,
            features: 4,
            targets: 2,
            noise: 0.0,
        };
        tch::manual_seed(3);
        let a = Dataset::from_config(&cfg).unwrap();
        tch::manual_seed(3);
        let b = Dataset::from_config(&cfg).unwrap();
        assert_eq!(a.x.size(), vec![50, 4]);
        assert_eq!(a.y.size(), vec![50, 2]);
        assert!(a.x.equal(&b.x) && a.y.equal(&b.y));
        // Without noise a linear target is exactly x W: least squares recovers it.
        let w = a.x.linalg_lstsq(&a.y, None::<f64>, "gelsd").0;
        let residual = (a.x.matmul(&w) - &a.y).abs().max().double_value(&[]);
        assert!(residual < 1e-4, "residual {residual}");
    }

    #[test]
    fn csv_reads_numbers_and_names_bad_cells() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("x.csv");
        std::fs::write(&good, "a,b\n1,2\n3.5,-4\n").unwrap();
        let t = read_matrix(&good).unwrap();
        assert_eq!(t.size(), vec![2, 2]);
        assert_eq!(
            Vec::<f32>::try_from(t.flatten(0, 1)).unwrap(),
            vec![1.0, 2.0, 3.5, -4.0]
        );
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "a,b\n1,2\n3,x\n").unwrap();
        let err = read_matrix(&bad).unwrap_err().to_string();
        assert!(
            err.contains("row 2 (line 3), column `b`: \"x\" is not a number"),
            "{err}"
        );
        let ragged = dir.path().join("ragged.csv");
        std::fs::write(&ragged, "a,b\n1,2\n3\n").unwrap();
        assert!(read_matrix(&ragged)
            .unwrap_err()
            .to_string()
            .contains("row 2"));
    }

    #[test]
    fn npy_must_be_two_dimensional() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        Tensor::from_slice(&[1.0f32, 2.0, 3.0])
            .write_npy(&path)
            .unwrap();
        assert!(read_matrix(&path)
            .unwrap_err()
            .to_string()
            .contains("expected a 2-D array"));
        Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0])
            .reshape([2, 2])
            .write_npy(&path)
            .unwrap();
        assert_eq!(read_matrix(&path).unwrap().kind(), Kind::Float);
    }
}
