//! torchfit: train multi-layer perceptrons on libtorch from YAML configs, with Keras's
//! semantics where it matters, and leave artifacts that PyTorch loads as they are.
//!
//! One module per concept; `train::train` is the loop that ties them together. The public
//! modules are what `main.rs` and the end-to-end tests use; the rest are internals.

mod atomic;
mod c10d;
mod cell;
mod checkpoint;
pub mod config;
pub mod cuda;
pub mod data;
pub mod device;
pub mod dist;
pub mod exit;
pub mod export;
mod metrics;
pub mod model;
mod onnx;
mod optim;
pub mod predict;
mod report;
pub mod rundir;
pub mod runs;
pub mod serve;
mod shim;
pub mod shortcut;
pub mod sweep;
mod track;
pub mod train;
pub mod triton;

#[cfg(test)]
mod testing {
    use std::sync::{Mutex, MutexGuard};

    /// Seeds libtorch's global generator and holds it until the guard drops. Unit tests run
    /// in parallel threads of one process, so any test that draws random numbers takes this
    /// first; otherwise another test's draws would land between a seed and its use.
    pub fn seed(seed: i64) -> MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(seed);
        guard
    }

    /// Writes `columns` as a Parquet file with the arrow writer torchfit reads with, in row
    /// groups of `group_rows` rows (so that a test can span several).
    pub fn write_parquet(path: &std::path::Path, columns: Vec<(&str, arrow_array::ArrayRef)>, group_rows: usize) {
        let batch = arrow_array::RecordBatch::try_from_iter(columns).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(group_rows))
            .build();
        let file = std::fs::File::create(path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
}
