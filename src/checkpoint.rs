//! Checkpoints: one safetensors file holding every tensor of a run's state (weights,
//! optimizer moments, running sums, the best weights so far) plus a `state.json` entry, a
//! byte tensor with everything else (epoch, step, history, schedule and early-stopping
//! counters). One file, written atomically, so a checkpoint is always whole or absent.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::atomic;
use crate::shim::first_line;

/// The tensor that carries the JSON part.
const STATE: &str = "state.json";

/// Writes `state` and `tensors` to `path` atomically.
pub fn save(path: &Path, state: &impl Serialize, tensors: &[(String, Tensor)]) -> Result<()> {
    let json = serde_json::to_vec(state)?;
    let mut named: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu))).collect();
    named.push((STATE.to_string(), Tensor::from_slice(&json)));
    atomic::write_with(path, |tmp| {
        Tensor::write_safetensors(&named, tmp)?;
        fault::abort_if_due();
        Ok(())
    })
}

/// Fault injection for the resume tests: `TORCHFIT_FAULT=abort-during-checkpoint:N` makes
/// the process abort (as a kill -9 would end it) in the middle of its N-th checkpoint
/// write, after the new file is written and before it replaces the old one.
mod fault {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static WRITES: AtomicUsize = AtomicUsize::new(0);

    pub fn abort_if_due() {
        let write = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
        let due = std::env::var("TORCHFIT_FAULT")
            .ok()
            .and_then(|v| v.strip_prefix("abort-during-checkpoint:").and_then(|n| n.parse::<usize>().ok()));
        if due == Some(write) {
            std::process::abort();
        }
    }
}

/// Reads a checkpoint: its JSON state and its tensors by name. A truncated or foreign file
/// is an error naming it.
pub fn load<S: DeserializeOwned>(path: &Path) -> Result<(S, HashMap<String, Tensor>)> {
    let damaged = |why: String| anyhow!("{} is not a readable torchfit checkpoint ({why})", path.display());
    if !path.is_file() {
        bail!("{}: no such checkpoint", path.display());
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| damaged(first_line(&e.to_string()).to_string()))?;
    let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
    let json = by_name.remove(STATE).ok_or_else(|| damaged(format!("no {STATE}")))?;
    if json.kind() != Kind::Uint8 {
        return Err(damaged(format!("{STATE} is not bytes")));
    }
    let bytes = Vec::<u8>::try_from(&json).map_err(|e| damaged(e.to_string()))?;
    let state = serde_json::from_slice(&bytes).map_err(|e| damaged(format!("{STATE}: {e}")))?;
    Ok((state, by_name))
}

/// Takes the tensor `name` out of a loaded checkpoint, checking its shape.
pub fn take(tensors: &mut HashMap<String, Tensor>, name: &str, shape: &[i64]) -> Result<Tensor> {
    let t = tensors.remove(name).with_context(|| format!("the checkpoint has no tensor `{name}`"))?;
    if t.size() != shape {
        bail!("the checkpoint's `{name}` has shape {:?}, the run needs {shape:?}", t.size());
    }
    Ok(t)
}

/// A checkpoint (or any write) to run on the writer thread; it owns copies of what it saves.
pub type Job = Box<dyn FnOnce() -> Result<()> + Send>;

/// Runs writes on a background thread, so that training goes on while a checkpoint is
/// flushed to disk. Each file is written at most once per `MIN_INTERVAL`; a write that waits
/// (for that, or for the write in progress) is replaced when a newer one for the same file
/// arrives. So when epochs are shorter than a write, the file on disk trails the newest state
/// by a fraction of a second, and training never waits for the disk. `finish` writes what is
/// still waiting at once. The first failure stops the thread and is returned by the next
/// `submit` or by `finish`.
pub struct Writer {
    shared: std::sync::Arc<Queue>,
    worker: Option<std::thread::JoinHandle<Result<()>>>,
}

/// The least time between two writes of one file.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Default)]
struct Queue {
    state: std::sync::Mutex<Pending>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct Pending {
    jobs: std::collections::VecDeque<(std::path::PathBuf, Job)>,
    /// When each file was last written.
    written: std::collections::HashMap<std::path::PathBuf, std::time::Instant>,
    closed: bool,
    failed: bool,
}

impl Writer {
    pub fn new() -> Writer {
        let shared = std::sync::Arc::new(Queue::default());
        let queue = shared.clone();
        let worker = std::thread::spawn(move || loop {
            let job = {
                let poisoned = || anyhow!("checkpoint queue poisoned");
                let mut pending = queue.state.lock().map_err(|_| poisoned())?;
                loop {
                    // The first queued write whose file may be written now (all of them
                    // once closing); else sleep until the earliest becomes due.
                    let now = std::time::Instant::now();
                    let dues: Vec<Option<std::time::Instant>> =
                        pending.jobs.iter().map(|(p, _)| pending.written.get(p).map(|t| *t + MIN_INTERVAL)).collect();
                    let ready = dues.iter().position(|due| pending.closed || due.is_none_or(|d| d <= now));
                    if let Some((path, job)) = ready.and_then(|i| pending.jobs.remove(i)) {
                        pending.written.insert(path, now);
                        break job;
                    }
                    if pending.closed {
                        return Ok(());
                    }
                    let wake = dues.into_iter().flatten().min();
                    pending = match wake {
                        Some(at) => {
                            queue
                                .ready
                                .wait_timeout(pending, at.saturating_duration_since(now))
                                .map_err(|_| poisoned())?
                                .0
                        }
                        None => queue.ready.wait(pending).map_err(|_| poisoned())?,
                    };
                }
            };
            if let Err(err) = job() {
                if let Ok(mut pending) = queue.state.lock() {
                    pending.failed = true;
                }
                return Err(err);
            }
        });
        Writer { shared, worker: Some(worker) }
    }

    /// Queues `job`, which writes `path`, replacing a queued write of the same file.
    pub fn submit(&mut self, path: &Path, job: Job) -> Result<()> {
        let failed = {
            let mut pending = self.shared.state.lock().map_err(|_| anyhow!("checkpoint queue poisoned"))?;
            match pending.jobs.iter_mut().find(|(p, _)| p == path) {
                Some(queued) => queued.1 = job,
                None => pending.jobs.push_back((path.to_path_buf(), job)),
            }
            pending.failed
        };
        self.shared.ready.notify_one();
        if failed {
            // The worker stopped: its error says why.
            self.finish()?;
            bail!("the checkpoint writer stopped");
        }
        Ok(())
    }

    /// Waits for every queued write; returns the first failure.
    pub fn finish(&mut self) -> Result<()> {
        if let Ok(mut pending) = self.shared.state.lock() {
            pending.closed = true;
        }
        self.shared.ready.notify_one();
        match self.worker.take() {
            Some(worker) => worker.join().map_err(|_| anyhow!("the checkpoint writer panicked"))?,
            None => Ok(()),
        }
    }
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct State {
        epoch: usize,
        note: String,
    }

    #[test]
    fn round_trips_state_and_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).reshape([3, 1]);
        save(&path, &State { epoch: 4, note: "ünïcode".into() }, &[("model.0.weight".into(), w.shallow_clone())])
            .unwrap();
        let (state, mut tensors): (State, _) = load(&path).unwrap();
        assert_eq!(state, State { epoch: 4, note: "ünïcode".into() });
        assert!(take(&mut tensors, "model.0.weight", &[3, 1]).unwrap().equal(&w));
        assert!(take(&mut tensors, "model.0.weight", &[3, 1]).is_err(), "taken once");
    }

    #[test]
    fn truncated_or_foreign_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");
        save(
            &path,
            &State { epoch: 1, note: String::new() },
            &[("a".into(), Tensor::zeros([100], (Kind::Float, Device::Cpu)))],
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load::<State>(&path).unwrap_err().to_string();
        assert!(err.contains("is not a readable torchfit checkpoint"), "{err}");
        Tensor::write_safetensors(&[("a", &Tensor::zeros([1], (Kind::Float, Device::Cpu)))], &path).unwrap();
        assert!(load::<State>(&path).unwrap_err().to_string().contains("no state.json"));
        let shape =
            take(&mut HashMap::from([("a".to_string(), Tensor::zeros([2], (Kind::Float, Device::Cpu)))]), "a", &[3]);
        assert!(shape.unwrap_err().to_string().contains("has shape [2], the run needs [3]"));
    }

    #[test]
    fn the_writer_spaces_writes_of_a_file_and_flushes_on_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last");
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut writer = Writer::new();
        let start = std::time::Instant::now();
        for i in 0..30 {
            let (target, count) = (path.clone(), count.clone());
            let job: Job = Box::new(move || {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                atomic::write(&target, i.to_string().as_bytes())
            });
            writer.submit(&path, job).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        writer.finish().unwrap();
        let writes = count.load(std::sync::atomic::Ordering::SeqCst);
        let allowed = (start.elapsed().as_millis() / MIN_INTERVAL.as_millis()) as usize + 2;
        assert!(writes >= 2 && writes <= allowed, "{writes} writes in {:?}", start.elapsed());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "29", "the newest state is written at the end");
    }

    #[test]
    fn the_writer_keeps_the_newest_write_of_each_file_and_reports_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (last, best) = (dir.path().join("last"), dir.path().join("best"));
        let mut writer = Writer::new();
        for i in 0..50 {
            for path in [&last, &best] {
                let target = path.clone();
                writer.submit(path, Box::new(move || atomic::write(&target, i.to_string().as_bytes()))).unwrap();
            }
        }
        writer.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&last).unwrap(), "49", "the newest write wins");
        assert_eq!(std::fs::read_to_string(&best).unwrap(), "49");
        let mut failing = Writer::new();
        failing.submit(&last, Box::new(|| bail!("disk full"))).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let err = failing.submit(&best, Box::new(|| Ok(()))).and(failing.finish()).unwrap_err().to_string();
        assert!(err.contains("disk full"), "{err}");
    }
}
