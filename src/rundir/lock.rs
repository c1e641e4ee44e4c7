//! `train.lock`: which process trains a run. A trainer holds an exclusive `flock(2)` on it
//! for as long as it trains, and writes its pid and host into it. The kernel releases the
//! lock when the process ends, however it ends (kill -9 included), so a lock left by a dead
//! trainer is simply taken over by the next; a live one makes `train --resume` refuse,
//! naming its holder. A new run directory is claimed by creating the lock file with
//! `O_EXCL`: of two `train --out DIR` started together, one creates it and the other fails.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const LOCK: &str = "train.lock";

/// The lock on a run, held until this is dropped (the file closes and the kernel releases
/// it). Opened close-on-exec, as Rust opens every file: a program this process starts does
/// not inherit it.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Claims `dir`, an existing directory, for a new run: it must hold nothing, and no
    /// other process may claim it at the same time.
    pub fn claim_new(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK);
        let occupied =
            || anyhow::anyhow!("run directory {} already exists and is not empty; choose another --out", dir.display());
        let file = match OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(occupied()),
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        };
        let lock = RunLock::lock(file, dir, &path)?;
        let entries = dir.read_dir().with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.filter_map(|e| e.ok()).any(|e| e.file_name() != LOCK) {
            drop(lock);
            let _ = std::fs::remove_file(&path);
            return Err(occupied());
        }
        Ok(lock)
    }

    /// Locks the existing run `dir` to train it (resume), or says which live process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK);
        // A run from before lock files gets one; a read-only run directory (which will fail
        // on its first write, with a clearer message) is locked without saying by whom.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .or_else(|_| File::open(&path))
            .with_context(|| format!("cannot open {}", path.display()))?;
        RunLock::lock(file, dir, &path)
    }

    fn lock(mut file: File, dir: &Path, path: &Path) -> Result<RunLock> {
        // SAFETY: flock(2) on a descriptor this File owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "{} is being trained by {} (it holds {}); wait for it to end, or stop it first",
                    dir.display(),
                    holder(path),
                    path.display()
                );
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        // Who holds it, for the message above; best effort (the lock itself is the flock).
        let _ = file.set_len(0).and_then(|()| writeln!(file, "{} {}", std::process::id(), hostname()));
        Ok(RunLock { _file: file })
    }
}

/// "process PID on HOST", as the lock file records its holder.
fn holder(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut words = text.split_whitespace();
    match (words.next().and_then(|p| p.parse::<u32>().ok()), words.next()) {
        (Some(pid), Some(host)) => format!("process {pid} on {host}"),
        (Some(pid), None) => format!("process {pid}"),
        _ => "another process".to_string(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder_and_a_released_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::claim_new(dir.path()).unwrap();
        // flock conflicts between two opens even within one process.
        let err = RunLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains(&format!("is being trained by process {}", std::process::id())), "{err}");
        let err = RunLock::claim_new(dir.path()).err().unwrap().to_string();
        assert!(err.contains("already exists and is not empty"), "{err}");
        drop(first);
        drop(RunLock::acquire(dir.path()).unwrap());
    }

    #[test]
    fn a_directory_with_files_is_not_claimed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let err = RunLock::claim_new(dir.path()).err().unwrap().to_string();
        assert!(err.contains("already exists and is not empty"), "{err}");
        assert!(!dir.path().join(LOCK).exists());
    }
}
