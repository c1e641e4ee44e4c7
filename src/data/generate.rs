//! The generated datasets: the Keras example's random normal data, a linear target,
//! Friedman #1 and scikit-learn's two moons.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::{Table, Target};
use crate::config::{DataConfig, DataKind};

/// Builds a generated dataset. Draws from libtorch's global generator, which the caller
/// seeds.
pub fn generate(cfg: &DataConfig) -> Result<Table> {
    let (n, f, t) = (cfg.samples() as i64, cfg.feature_count() as i64, cfg.targets() as i64);
    let opts = (Kind::Float, Device::Cpu);
    let noise = |shape: &[i64]| -> Result<Tensor> { Ok(Tensor::f_randn(shape, opts)? * cfg.noise()) };
    let (x, y) = match cfg.kind {
        DataKind::Linear => {
            let x = Tensor::f_randn([n, f], opts)?;
            // Scaled so that each target has unit variance before the noise.
            let w = Tensor::f_randn([f, t], opts)? / (f as f64).sqrt();
            let y = x.f_matmul(&w)? + noise(&[n, t])?;
            (x, Target::Values(y))
        }
        DataKind::Friedman1 => {
            let x = Tensor::f_rand([n, f], opts)?;
            let c = |i: i64| x.select(1, i);
            let y = (c(0) * c(1) * std::f64::consts::PI).sin() * 10.0
                + (c(2) - 0.5).square() * 20.0
                + c(3) * 10.0
                + c(4) * 5.0
                + noise(&[n])?;
            (x, Target::Values(y.unsqueeze(1)))
        }
        DataKind::Moons => {
            // scikit-learn's make_moons: the outer moon gets n/2 points, the inner the rest.
            let (n_out, n_in) = (n / 2, n - n / 2);
            let pi = std::f64::consts::PI;
            let t_out = Tensor::f_linspace(0.0, pi, n_out, opts)?;
            let t_in = Tensor::f_linspace(0.0, pi, n_in, opts)?;
            let outer = Tensor::stack(&[t_out.cos(), t_out.sin()], 1);
            let inner = Tensor::stack(&[-t_in.cos() + 1.0, -t_in.sin() + 0.5], 1);
            let x = Tensor::cat(&[outer, inner], 0) + noise(&[n, 2])?;
            let index = Tensor::cat(
                &[Tensor::zeros([n_out], (Kind::Int64, Device::Cpu)), Tensor::ones([n_in], (Kind::Int64, Device::Cpu))],
                0,
            );
            (x, Target::Classes { index, labels: vec!["0".into(), "1".into()] })
        }
        DataKind::RandomNormal | DataKind::Csv | DataKind::Parquet | DataKind::Npy => {
            (Tensor::f_randn([n, f], opts)?, Target::Values(Tensor::f_randn([n, t], opts)?))
        }
    };
    let targets = match &y {
        Target::Values(v) => v.size()[1],
        Target::Classes { .. } => 1,
    };
    Ok(Table {
        categorical: Vec::new(),
        text: Vec::new(),
        x,
        y,
        feature_names: (0..f).map(|i| format!("x{i}")).collect(),
        target_names: (0..targets).map(|i| if targets == 1 { "y".to_string() } else { format!("y{i}") }).collect(),
        input: None,
    })
}
