//! Whether a run can fit in memory, decided from the config before anything is allocated:
//! a model or a generated table larger than the machine's memory would otherwise fail deep
//! inside libtorch with a C++ backtrace (or be killed by the kernel), after minutes.

use anyhow::{bail, Result};

use super::{Config, DataKind, OptimizerKind};

/// Bytes of a float32.
const FLOAT: f64 = 4.0;

impl Config {
    /// Refuses a config whose model (weights, gradients and optimizer state) plus generated
    /// table need more than `available` bytes, naming the keys and the size. For file data
    /// the table's size is known only once read, and the model's input width only from the
    /// data, so the model is counted from its hidden layers alone there: a lower bound.
    pub(super) fn check_fits(&self, available: f64) -> Result<()> {
        let model = self.model_bytes();
        let table = self.generated_table_bytes();
        if model > available {
            bail!(
                "model.hidden {:?}: the model needs about {} for its weights, gradients and optimizer \
                 state, more than the {} of memory available",
                self.model.hidden,
                human(model),
                human(available)
            );
        }
        if table + model > available {
            let d = &self.data;
            bail!(
                "data.samples x data.features: a generated table of {} rows x {} columns is about {}, \
                 more than the {} of memory available",
                d.samples(),
                d.feature_count() + d.targets(),
                human(table),
                human(available - model)
            );
        }
        Ok(())
    }

    /// Float32 values held per parameter while training, times the parameters.
    fn model_bytes(&self) -> f64 {
        let d = &self.data;
        let (inputs, outputs) = match d.kind {
            DataKind::Moons => (2.0, 2.0),
            kind if kind.is_generated() => (d.feature_count() as f64, d.targets() as f64),
            _ => (0.0, 0.0),
        };
        let mut widths = vec![inputs];
        widths.extend(self.model.hidden.iter().map(|&w| w as f64));
        widths.push(outputs);
        let parameters: f64 = widths.windows(2).map(|pair| (pair[0] + 1.0) * pair[1]).sum();
        let o = &self.training.optimizer;
        let moments = match o.kind {
            OptimizerKind::Adam | OptimizerKind::Adamw => 2.0,
            OptimizerKind::Sgd if o.momentum > 0.0 => 1.0,
            OptimizerKind::Sgd => 0.0,
        };
        parameters * FLOAT * (2.0 + moments)
    }

    fn generated_table_bytes(&self) -> f64 {
        let d = &self.data;
        if !d.kind.is_generated() {
            return 0.0;
        }
        d.samples() as f64 * (d.feature_count() as f64 + d.targets() as f64) * FLOAT
    }
}

/// The memory the kernel says it can give without swapping (`MemAvailable` in
/// /proc/meminfo), in bytes; `None` where there is no such file.
pub(super) fn available_memory() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Bytes in the largest unit that keeps a number >= 1: `160.0 GB`.
fn human(bytes: f64) -> String {
    let units = ["bytes", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", units[unit])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_larger_than_memory_is_refused_with_its_size() {
        let mut config = Config::default();
        config.model.hidden = vec![100_000, 100_000];
        let err = config.check_fits(8e9).unwrap_err().to_string();
        assert!(err.contains("model.hidden [100000, 100000]") && err.contains("160.0 GB"), "{err}");
        assert!(err.contains("8.0 GB of memory available"), "{err}");
        config.model.hidden = vec![10];
        assert!(config.check_fits(8e9).is_ok());
        config.data.samples = Some(1_000_000_000);
        let err = config.check_fits(8e9).unwrap_err().to_string();
        assert!(err.contains("1000000000 rows x 11 columns is about 44.0 GB"), "{err}");
    }
}
