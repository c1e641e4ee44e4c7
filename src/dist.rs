//! The processes that train one run together. Today a run is one process, and this is the
//! seam where data-parallel training plugs in: gradients are combined across processes in
//! [`Group::reduce_gradients`], and every decision that must come out the same on every
//! process (skip a batch whose loss is not finite, stop on a signal, stop early) goes through
//! [`Group::agree`], so that no process goes on alone or waits for one that has left.

use anyhow::Result;
use tch::Tensor;

pub struct Group;

impl Group {
    /// A run of one process.
    pub fn single() -> Group {
        Group
    }

    /// Makes `grads` (this process's gradient of its batch's mean loss) the gradient of the
    /// whole step's mean loss. With one process it already is.
    pub fn reduce_gradients(&self, _grads: &mut Tensor) -> Result<()> {
        Ok(())
    }

    /// Whether any process answers yes: the same answer everywhere.
    pub fn agree(&self, yes: bool) -> Result<bool> {
        Ok(yes)
    }
}
