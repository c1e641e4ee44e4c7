//! `torchfit sweep`: hyperparameter search over a base config, grid or random, with
//! optional ASHA early termination, on this machine (`--jobs N` worker processes) or as a
//! Slurm job array. Built on exact resume: a trial paused at an ASHA rung, or left by a
//! worker that died, continues bit for bit.
//!
//! ```text
//! <sweep>/sweep.yaml          the resolved sweep: base config inline, --set, parameters
//!         trials/0000/ ...    one ordinary run directory per trial (resume, export, predict)
//!         claims/             which worker trains which task (claims.rs)
//!         results.csv         one row per trial
//!         best.yaml           the best trial's resolved config
//!         sweep.png           the metric against each parameter
//!         sweep.sbatch        with --launcher slurm: the job array
//! ```
//!
//! The same command on an existing sweep directory continues it: the resolved sweep must
//! be the one it holds, finished tasks are kept, unfinished ones resume.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::atomic;
use crate::config::yaml_difference;

mod asha;
mod claims;
mod kinds;
mod local;
mod mlflow;
mod plot;
mod slurm;
mod space;
mod spec;
mod survey;
mod table;
mod worker;

pub use spec::Sweep;

pub const SWEEP_YAML: &str = "sweep.yaml";

/// Where the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    Local,
    Slurm,
}

pub struct SweepOptions {
    pub file: PathBuf,
    pub set: Vec<String>,
    /// Workers: default, as many as there are cores (locally), or trials (Slurm), and
    /// never more than there are trials.
    pub jobs: Option<usize>,
    /// The sweep directory; default `sweeps/<the sweep file's stem>`, so that the same
    /// command finds it again.
    pub out: Option<PathBuf>,
    pub launcher: Launcher,
    pub sbatch_args: Vec<String>,
    pub dry_run: bool,
    /// The command line, for the message that says how to continue.
    pub command: String,
}

/// A sweep directory's path, with its parts by name.
#[derive(Debug, Clone)]
pub struct SweepDir(PathBuf);

impl SweepDir {
    pub fn new(path: impl Into<PathBuf>) -> SweepDir {
        SweepDir(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A trial's run directory.
    pub fn trial(&self, trial: &space::Trial) -> PathBuf {
        self.0.join("trials").join(trial.name())
    }

    /// The resolved sweep the directory holds.
    pub fn sweep(&self) -> Result<Sweep> {
        let path = self.0.join(SWEEP_YAML);
        if !path.is_file() {
            bail!("{} is not a torchfit sweep directory (it has no {SWEEP_YAML})", self.0.display());
        }
        Sweep::load_resolved(&path)
    }
}

/// `torchfit sweep FILE`: checks the sweep, creates or continues its directory, and runs
/// it here or submits it to Slurm.
pub fn run(options: &SweepOptions, out: &mut dyn Write) -> Result<()> {
    if options.jobs == Some(0) {
        bail!("--jobs must be > 0, got 0");
    }
    let sweep = Sweep::load(&options.file, &options.set)?;
    let trials = sweep.trials().len();
    let stem = options.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
    let dir = SweepDir::new(options.out.clone().unwrap_or_else(|| PathBuf::from("sweeps").join(stem)));
    let continued = open(&dir, &sweep)?;
    let default_jobs = match options.launcher {
        Launcher::Local => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        Launcher::Slurm => trials,
    };
    let jobs = options.jobs.unwrap_or(default_jobs).min(trials).max(1);
    if !options.dry_run {
        mlflow::open_parent(&dir, &sweep);
    }
    match options.launcher {
        Launcher::Local => local::run(&dir, &sweep, jobs, continued, &options.command, out),
        Launcher::Slurm => slurm::submit(&dir, jobs, &options.sbatch_args, options.dry_run, out),
    }
}

/// Creates the sweep directory with its sweep.yaml, or checks that an existing one holds
/// this very sweep. Returns whether it existed. The directory appears whole: it is made
/// under a temporary name beside its place, with sweep.yaml and claims/, and renamed into
/// place (atomic, on NFS too), so that an identical command started at the same moment
/// finds either nothing (and races for the rename) or the complete sweep, and joins it.
fn open(dir: &SweepDir, sweep: &Sweep) -> Result<bool> {
    let ours = sweep.to_yaml()?;
    if let Some(existed) = join(dir, &ours)? {
        return Ok(existed);
    }
    let parent = match dir.path().parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-sweep-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    atomic::write(&tmp.path().join(SWEEP_YAML), ours.as_bytes())?;
    claims::Claims::new(tmp.path())?;
    // rename(2) replaces an empty directory, and fails on one with entries: then another
    // command was first, or the directory is not ours.
    match std::fs::rename(tmp.path(), dir.path()) {
        Ok(()) => {
            // The temporary name is gone; nothing is left to remove.
            let _ = tmp.keep();
            Ok(false)
        }
        Err(err) => match join(dir, &ours)? {
            Some(_) => Ok(true),
            None => Err(err).with_context(|| format!("cannot create {}", dir.path().display())),
        },
    }
}

/// Whether `dir` already holds a sweep: `Some(true)` when it holds this one, an error when
/// it holds another sweep or something else, `None` when it is absent or empty.
fn join(dir: &SweepDir, ours: &str) -> Result<Option<bool>> {
    let path = dir.path().join(SWEEP_YAML);
    if path.is_file() {
        let saved = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if saved != ours {
            let (key, now, before) = yaml_difference(ours, &saved);
            bail!(
                "{} holds a sweep whose {key} was {before}, and this one says {now}; \
                 a sweep continues only as it started (choose another --out for a new one)",
                dir.path().display()
            );
        }
        return Ok(Some(true));
    }
    let occupied = dir.path().read_dir().map(|mut e| e.next().is_some()).unwrap_or(false);
    if occupied || dir.path().is_file() {
        bail!("{} exists and is not a sweep directory; choose another --out", dir.path().display());
    }
    Ok(None)
}

/// `torchfit sweep status DIR`: the results table so far.
pub fn status(dir: &Path, out: &mut dyn Write) -> Result<()> {
    let dir = SweepDir::new(dir);
    let sweep = dir.sweep()?;
    let trials = sweep.trials();
    let claims = claims::Claims::new(dir.path())?;
    let survey = survey::Survey::read(&dir, &sweep, &trials, &claims)?;
    let complete = matches!(survey.next(&claims), survey::Work::Complete);
    let rows = table::rows(&dir, &sweep, &trials, &survey, &claims, complete);
    write!(out, "{}", table::text(&sweep, &rows))?;
    writeln!(out, "{}", local::summary_line(&dir, &sweep, &rows, complete))?;
    Ok(())
}

/// The hidden `torchfit sweep worker DIR`: what each local process and each Slurm array
/// task runs.
pub fn worker(dir: &Path, jobs: usize) -> Result<()> {
    worker::Worker::open(SweepDir::new(dir), jobs, true)?.run()
}
