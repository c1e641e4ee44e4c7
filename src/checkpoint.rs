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
    let tensors = Tensor::read_safetensors(path).map_err(|e| damaged(first_line(&e.to_string())))?;
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

/// Runs writes on a background thread, one at a time, so that training goes on while a
/// checkpoint is flushed to disk. At most one write waits behind the one in progress; the
/// first failure stops the thread and is returned by the next `submit` or by `finish`.
pub struct Writer {
    sender: Option<std::sync::mpsc::SyncSender<Job>>,
    worker: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Writer {
    pub fn new() -> Writer {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Job>(1);
        let worker = std::thread::spawn(move || receiver.into_iter().try_for_each(|job| job()));
        Writer { sender: Some(sender), worker: Some(worker) }
    }

    pub fn submit(&mut self, job: Job) -> Result<()> {
        let sent = self.sender.as_ref().map(|s| s.send(job).is_ok()).unwrap_or(false);
        if sent {
            return Ok(());
        }
        // The worker stopped: it failed, and its error says why.
        self.finish()?;
        bail!("the checkpoint writer stopped")
    }

    /// Waits for every submitted write; returns the first failure.
    pub fn finish(&mut self) -> Result<()> {
        self.sender = None;
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

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
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
    fn the_writer_runs_jobs_in_order_and_reports_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut writer = Writer::new();
        for i in 0..5 {
            let path = path.clone();
            writer.submit(Box::new(move || Ok(atomic::write(&path, i.to_string().as_bytes())?))).unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4");
        let mut failing = Writer::new();
        failing.submit(Box::new(|| bail!("disk full"))).unwrap();
        let mut outcome = Ok(());
        for _ in 0..3 {
            outcome = outcome.and(failing.submit(Box::new(|| Ok(()))));
        }
        let err = outcome.and(failing.finish()).unwrap_err().to_string();
        assert!(err.contains("disk full"), "{err}");
    }
}
