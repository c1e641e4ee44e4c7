//! Which worker trains which task, agreed through files alone, so that workers on several
//! nodes sharing the sweep directory over NFS never train the same task twice and never
//! lose one. No `flock` (unreliable over NFS): a claim is created with `link(2)`, which
//! fails when the name exists, atomically even on NFS (the classic lock-file recipe).
//!
//! A task's claims are numbered generations, `claims/<trial>-r<rung>.<gen>`; the highest
//! is current. It holds its owner (`host pid start-time`) or `released`; its mtime is the
//! owner's heartbeat. A task is free when it has no claim, when the current one was
//! released (a worker stopped by a signal), or when its owner is gone: a process of this
//! host that no longer exists, or a heartbeat older than the stale limit (another node's
//! worker killed, preempted, or cut off). Taking a task creates generation + 1, so of
//! workers racing for it exactly one wins. `<trial>-r<rung>.done` marks it done.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::atomic;

/// How often a worker touches its claim.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A claim untouched this long belongs to a worker that is gone (twelve missed beats:
/// a loaded NFS server or a stalled node must not make two workers train one trial).
pub const STALE: Duration = Duration::from_secs(60);
const RELEASED: &str = "released";

/// A unit of work: a trial trained to the end, or with ASHA, to its rung `rung`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Task {
    pub trial: usize,
    pub rung: usize,
}

impl Task {
    fn stem(self) -> String {
        format!("{:04}-r{}", self.trial, self.rung)
    }
}

/// What the claims directory says of one task.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// The current generation (0: never claimed).
    pub generation: u64,
    pub done: bool,
}

/// Whether a claimed, unfinished task is being worked on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Alive,
    /// Released, or its owner is gone: free to take.
    Gone,
}

pub struct Claims {
    dir: PathBuf,
    me: String,
    host: String,
    stale: Duration,
}

impl Claims {
    pub fn new(sweep_dir: &Path) -> Result<Claims> {
        let dir = sweep_dir.join("claims");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let host = host();
        let me = format!("{host} {} {}", std::process::id(), start_time(std::process::id()).unwrap_or_default());
        Ok(Claims { dir, me, host, stale: STALE })
    }

    /// This worker, for a log: its pid and host.
    pub fn owner(&self) -> String {
        format!("pid {} on {}", std::process::id(), self.host)
    }

    /// Every task that was ever claimed or done, read in one pass over the directory.
    pub fn snapshot(&self) -> Result<BTreeMap<Task, Entry>> {
        let mut tasks: BTreeMap<Task, Entry> = BTreeMap::new();
        let entries = std::fs::read_dir(&self.dir).with_context(|| format!("cannot read {}", self.dir.display()))?;
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some((task, suffix)) = parse(&name) else { continue };
            let slot = tasks.entry(task).or_default();
            match suffix {
                Suffix::Done => slot.done = true,
                Suffix::Generation(g) => slot.generation = slot.generation.max(g),
            }
        }
        Ok(tasks)
    }

    /// Whether the current claim of `task` (generation `generation` > 0) is held by a
    /// worker that is still there.
    pub fn holder(&self, task: Task, generation: u64) -> Holder {
        let path = self.path(task, generation);
        let (Ok(text), Ok(meta)) = (std::fs::read_to_string(&path), std::fs::metadata(&path)) else {
            // Vanished or unreadable this instant: look again at the next poll.
            return Holder::Alive;
        };
        let text = text.trim();
        if text == RELEASED {
            return Holder::Gone;
        }
        let beat = meta.modified().ok().and_then(|m| SystemTime::now().duration_since(m).ok()).unwrap_or_default();
        if beat > self.stale {
            return Holder::Gone;
        }
        // An owner on this host is checked at once: a process that is gone (or whose pid now
        // names another process) will not beat again.
        let mut words = text.split(' ');
        if let (Some(host), Some(pid), Some(start)) = (words.next(), words.next(), words.next()) {
            if host == self.host {
                let alive = pid.parse().ok().and_then(start_time).is_some_and(|s| s.to_string() == start);
                if !alive {
                    return Holder::Gone;
                }
            }
        }
        Holder::Alive
    }

    /// Takes `task` as generation `generation`; `None` when another worker got there first.
    pub fn take(&self, task: Task, generation: u64) -> Result<Option<Claim>> {
        let path = self.path(task, generation);
        if !self.create(&path, &self.me)? {
            return Ok(None);
        }
        Ok(Some(Claim { task, generation, path: path.clone(), heartbeat: Heartbeat::start(path) }))
    }

    /// Gives `claim` back unfinished (a signal stopped its worker): the next worker takes it
    /// without waiting for the heartbeat to go stale.
    pub fn release(&self, claim: Claim) -> Result<()> {
        drop(claim.heartbeat);
        self.create(&self.path(claim.task, claim.generation + 1), RELEASED).map(|_| ())
    }

    /// Marks `claim`'s task done, with a line for the record (how it ended).
    pub fn finish(&self, claim: Claim, record: &str) -> Result<()> {
        drop(claim.heartbeat);
        atomic::write(&self.dir.join(format!("{}.done", claim.task.stem())), record.as_bytes())
    }

    /// The record a done task was finished with.
    pub fn record(&self, task: Task) -> Option<String> {
        std::fs::read_to_string(self.dir.join(format!("{}.done", task.stem()))).ok()
    }

    fn path(&self, task: Task, generation: u64) -> PathBuf {
        self.dir.join(format!("{}.{generation}", task.stem()))
    }

    /// Creates `path` holding `text`, atomically and only if it does not exist: the text
    /// goes to a temporary file first, then is hard-linked to `path`.
    fn create(&self, path: &Path, text: &str) -> Result<bool> {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&self.dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        match std::fs::hard_link(tmp.path(), path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }

    #[cfg(test)]
    fn with_stale(mut self, stale: Duration) -> Claims {
        self.stale = stale;
        self
    }
}

/// A task this worker holds; a thread touches its file until it is finished or released.
pub struct Claim {
    pub task: Task,
    pub generation: u64,
    path: PathBuf,
    heartbeat: Heartbeat,
}

impl Claim {
    /// Whether another worker has taken the task over (it found this one's heartbeat
    /// stale): this worker must then leave it.
    pub fn lost(&self) -> bool {
        let next = self.path.with_extension((self.generation + 1).to_string());
        next.exists()
    }
}

struct Heartbeat {
    /// Dropping it wakes the thread at once (a sleep would hold up the end of every task).
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(path: PathBuf) -> Heartbeat {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                // A failed touch is retried at the next beat; many missed beats make the
                // claim stale, which is then the truth.
                if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
            }
        });
        Heartbeat { stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

enum Suffix {
    Generation(u64),
    Done,
}

/// `0003-r1.2` or `0003-r1.done`.
fn parse(name: &str) -> Option<(Task, Suffix)> {
    let (stem, suffix) = name.rsplit_once('.')?;
    let (trial, rung) = stem.split_once("-r")?;
    let task = Task { trial: trial.parse().ok()?, rung: rung.parse().ok()? };
    let suffix = match suffix {
        "done" => Suffix::Done,
        g => Suffix::Generation(g.parse().ok()?),
    };
    Some((task, suffix))
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A process's start time (clock ticks after boot, /proc/PID/stat field 22): with the pid,
/// it names one process even after the pid is reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are counted from its ')'.
    stat.rsplit_once(") ")?.1.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Task = Task { trial: 3, rung: 1 };

    #[test]
    fn one_of_two_racing_workers_wins_a_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Claims::new(dir.path()).unwrap(), Claims::new(dir.path()).unwrap());
        let won = a.take(T, 1).unwrap().unwrap();
        assert!(b.take(T, 1).unwrap().is_none());
        assert_eq!(a.snapshot().unwrap()[&T].generation, 1);
        assert_eq!(b.holder(T, 1), Holder::Alive);
        a.release(won).unwrap();
        assert_eq!(b.holder(T, 2), Holder::Gone);
        let again = b.take(T, 3).unwrap().unwrap();
        b.finish(again, "finished").unwrap();
        let snap = a.snapshot().unwrap();
        assert!(snap[&T].done && snap[&T].generation == 3);
        assert_eq!(a.record(T).as_deref(), Some("finished"));
    }

    #[test]
    fn a_claim_of_a_dead_process_or_without_heartbeat_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::new(dir.path()).unwrap();
        // A process of this host that no longer exists (pid 2^22 + 1 is above pid_max's cap).
        claims.create(&claims.path(T, 1), &format!("{} 4194305 1", host())).unwrap();
        assert_eq!(claims.holder(T, 1), Holder::Gone);
        // Another host's worker: only its heartbeat tells.
        claims.create(&claims.path(T, 2), "elsewhere 1 1").unwrap();
        assert_eq!(claims.holder(T, 2), Holder::Alive);
        let old = SystemTime::now() - Duration::from_secs(120);
        std::fs::File::options().append(true).open(claims.path(T, 2)).unwrap().set_modified(old).unwrap();
        assert_eq!(claims.holder(T, 2), Holder::Gone);
        let claims = claims.with_stale(Duration::from_secs(600));
        assert_eq!(claims.holder(T, 2), Holder::Alive);
    }

    #[test]
    fn a_taken_over_claim_knows_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let claims = Claims::new(dir.path()).unwrap();
        let held = claims.take(T, 1).unwrap().unwrap();
        assert!(!held.lost());
        let _other = claims.take(T, 2).unwrap().unwrap();
        assert!(held.lost());
    }
}
