//! SIGINT and SIGTERM while training: the first sets a flag that the loop checks after every
//! step (it then checkpoints and exits); a second exits at once (the last checkpoint stays
//! valid, as every write is atomic).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use signal_hook::SigId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// 128 + the signal number, as shells report a process killed by it.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Int => 130,
            Signal::Term => 143,
        }
    }
}

pub struct Signals {
    pub(super) int: Arc<AtomicBool>,
    pub(super) term: Arc<AtomicBool>,
    /// The handlers installed for this run, removed when it ends (a sweep worker trains
    /// many runs in one process; each would otherwise leave its handlers behind).
    installed: Vec<SigId>,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let mut signals = Signals::none();
        // Registered first, the conditional shutdown sees the flag as it was before this
        // signal: unset the first time, set the second.
        signals.installed = vec![
            flag::register_conditional_shutdown(SIGINT, 130, signals.int.clone())?,
            flag::register(SIGINT, signals.int.clone())?,
            flag::register_conditional_shutdown(SIGTERM, 143, signals.term.clone())?,
            flag::register(SIGTERM, signals.term.clone())?,
        ];
        Ok(signals)
    }

    /// Flags that no signal sets (for tests).
    pub fn none() -> Signals {
        Signals { int: Arc::new(AtomicBool::new(false)), term: Arc::new(AtomicBool::new(false)), installed: Vec::new() }
    }

    pub fn received(&self) -> Option<Signal> {
        if self.int.load(Ordering::Relaxed) {
            Some(Signal::Int)
        } else if self.term.load(Ordering::Relaxed) {
            Some(Signal::Term)
        } else {
            None
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.installed.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
