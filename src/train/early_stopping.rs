//! Keras's EarlyStopping: stop after `patience` epochs without improvement of the monitor,
//! optionally keeping a copy of the best epoch's weights to restore.

use tch::Tensor;

use crate::config::EarlyStopping;
use crate::metrics::Plateau;
use crate::model::Mlp;

pub struct EarlyStopper {
    pub(super) cfg: EarlyStopping,
    pub(super) plateau: Plateau,
    pub(super) best_epoch: usize,
    /// A copy of `Mlp::params` at the best epoch, with `restore_best`.
    pub(super) best_params: Option<Tensor>,
}

impl EarlyStopper {
    pub fn new(cfg: EarlyStopping) -> EarlyStopper {
        let plateau = Plateau::new(&cfg.monitor, cfg.mode, cfg.min_delta);
        EarlyStopper { cfg, plateau, best_epoch: 0, best_params: None }
    }

    /// Records the epoch's value: (whether it improved, whether to stop). Keras counts
    /// epochs without improvement and stops once the count reaches `patience` (so patience 0
    /// stops at the first epoch that does not improve).
    pub fn observe(&mut self, epoch: usize, value: f64, model: &Mlp) -> (bool, bool) {
        if self.plateau.observe(value) {
            self.best_epoch = epoch;
            if self.cfg.restore_best {
                self.best_params = Some(model.params.copy());
            }
            return (true, false);
        }
        (false, self.plateau.wait >= self.cfg.patience.max(1))
    }

    pub fn restore(&self, model: &Mlp) {
        if let Some(best) = &self.best_params {
            model.params.shallow_clone().copy_(best);
        }
    }
}
