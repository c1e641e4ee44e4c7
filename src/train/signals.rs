//! SIGINT and SIGTERM while training: the first sets a flag that the loop checks after every
//! step (it then checkpoints and exits); a second stops the process at once, from a watcher
//! thread, after marking summary.json `interrupted` (the last checkpoint stays valid, as
//! every write is atomic), so that the run never says `running` once nothing runs it.
//!
//! Ctrl-C on a terminal reaches the whole process group, and a launcher in it (a sweep,
//! torchrun, srun) then passes the stop on to its workers as SIGTERM: that is still the first
//! request, not a second one. So another signal than the first, sent by the parent process,
//! does not count as the second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::exfiltrator::WithOrigin;
use signal_hook::iterator::{Handle, SignalsInfo};
use signal_hook::SigId;

use crate::rundir::{self, RunDir};

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
    /// Held while summary.json is written: a second signal's exit waits for that write.
    pub(super) writing: Arc<Mutex<()>>,
    /// The handlers installed for this run, removed when it ends (a sweep worker trains
    /// many runs in one process; each would otherwise leave its handlers behind).
    installed: Vec<SigId>,
    /// The thread that counts signals, and what stops it.
    watcher: Option<(Handle, JoinHandle<()>)>,
}

impl Signals {
    /// Installs the handlers for a run; `run` is the run directory whose summary.json a
    /// second signal marks `interrupted` (rank 0's; `None` on the other processes).
    pub fn install(run: Option<RunDir>) -> Result<Signals> {
        use signal_hook::flag;
        let mut signals = Signals::none();
        signals.installed =
            vec![flag::register(SIGINT, signals.int.clone())?, flag::register(SIGTERM, signals.term.clone())?];
        let mut iterator = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM])?;
        let handle = iterator.handle();
        let writing = signals.writing.clone();
        // SAFETY: getppid(2) cannot fail.
        let parent = unsafe { libc::getppid() };
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut first = None;
                for origin in iterator.forever() {
                    let passed_on = origin.process.is_some_and(|p| p.pid == parent);
                    match first {
                        None => first = Some(origin.signal),
                        Some(number) if passed_on && number != origin.signal => {}
                        Some(_) => {
                            let signal = if origin.signal == SIGTERM { Signal::Term } else { Signal::Int };
                            stop_now(signal, run.as_ref(), &writing);
                        }
                    }
                }
            })
            .context("cannot start the signal watcher thread")?;
        signals.watcher = Some((handle, thread));
        Ok(signals)
    }

    /// Flags that no signal sets (for tests).
    pub fn none() -> Signals {
        Signals {
            int: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicBool::new(false)),
            writing: Arc::new(Mutex::new(())),
            installed: Vec::new(),
            watcher: None,
        }
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
        if let Some((handle, thread)) = self.watcher.take() {
            handle.close();
            let _ = thread.join();
        }
    }
}

/// A second signal: marks the run `interrupted` (when it still says `running`), says where
/// its last checkpoint is, and ends the process with the signal's status. Neither standard
/// stream's lock is taken (`main` holds standard output's for the whole command): the line
/// goes straight to file descriptor 2.
fn stop_now(signal: Signal, run: Option<&RunDir>, writing: &Mutex<()>) -> ! {
    let _held = writing.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(run) = run {
        let marked = mark_interrupted(run);
        let last = run.file(rundir::LAST_CHECKPOINT);
        let kept = match last.is_file() {
            true => format!("{} holds its last checkpoint", last.display()),
            false => "it has no checkpoint yet".into(),
        };
        let note = match marked {
            Ok(()) => String::new(),
            Err(err) => format!(" ({})", crate::exit::one_line(&err)),
        };
        let line = format!(
            "torchfit: stopped at once by a second {}; {kept}; resume with: torchfit train --resume {}{note}\n",
            signal.name(),
            run.path().display()
        );
        // SAFETY: write(2) of a live buffer to standard error.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    }
    // SAFETY: _exit(2) ends the process; no Rust code runs after it.
    unsafe { libc::_exit(i32::from(signal.exit_code())) }
}

/// Sets summary.json's status to `interrupted` if it says `running`.
fn mark_interrupted(run: &RunDir) -> Result<()> {
    let path = run.file(rundir::SUMMARY);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut summary: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?;
    if summary.get("status").and_then(|s| s.as_str()) == Some("running") {
        summary["status"] = "interrupted".into();
        crate::report::write_json(&path, &summary)?;
    }
    Ok(())
}
