//! Keras's EarlyStopping: stop after `patience` epochs without improvement of the monitor,
//! optionally keeping a copy of the best epoch's weights to restore.

use anyhow::Result;
use tch::Tensor;

use crate::config::EarlyStopping;
use crate::metrics::Plateau;
use crate::model::Model;

pub struct EarlyStopper {
    pub(super) cfg: EarlyStopping,
    pub(super) plateau: Plateau,
    pub(super) best_epoch: usize,
    /// A copy of the model's parameters (`Model::params`) at the best epoch, with
    /// `restore_best`.
    pub(super) best_params: Option<Tensor>,
    /// And of its buffers (BatchNorm's running statistics), by name.
    pub(super) best_buffers: Vec<(String, Tensor)>,
}

impl EarlyStopper {
    pub fn new(cfg: EarlyStopping) -> EarlyStopper {
        let plateau = Plateau::new(&cfg.monitor, cfg.mode, cfg.min_delta);
        EarlyStopper { cfg, plateau, best_epoch: 0, best_params: None, best_buffers: Vec::new() }
    }

    /// Records the epoch's value: (whether it improved, whether to stop). Keras counts
    /// epochs without improvement and stops once the count reaches `patience` (so patience 0
    /// stops at the first epoch that does not improve).
    pub fn observe(&mut self, epoch: usize, value: f64, model: &dyn Model) -> Result<(bool, bool)> {
        if self.plateau.observe(value) {
            self.best_epoch = epoch;
            if self.cfg.restore_best {
                self.best_params = Some(model.params().copy());
                self.best_buffers = model.buffers()?.into_iter().map(|(n, t)| (n, t.copy())).collect();
            }
            return Ok((true, false));
        }
        Ok((false, self.plateau.wait >= self.cfg.patience.max(1)))
    }

    pub fn restore(&self, model: &dyn Model) -> Result<()> {
        let Some(best) = &self.best_params else { return Ok(()) };
        tch::no_grad(|| -> Result<()> {
            model.params().shallow_clone().f_copy_(best)?;
            for ((_, buffer), (_, saved)) in model.buffers()?.into_iter().zip(&self.best_buffers) {
                buffer.shallow_clone().f_copy_(saved)?;
            }
            Ok(())
        })
    }
}
