//! A sweep on Slurm: `sweep.sbatch`, a job array of `jobs` tasks that each run a sweep
//! worker on the shared sweep directory, submitted with `sbatch`. Slurm schedules,
//! requeues and cancels; the workers agree among themselves through the directory.

use std::io::Write;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::SweepDir;
use crate::atomic;

pub const SBATCH: &str = "sweep.sbatch";

pub fn submit(dir: &SweepDir, jobs: usize, extra: &[String], dry_run: bool, out: &mut dyn Write) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the torchfit binary for the workers")?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // Absolute paths: the array tasks may start elsewhere; relative data paths in the
    // config keep meaning what they mean here, from --chdir.
    let sweep_dir = if dir.path().is_absolute() { dir.path().to_path_buf() } else { cwd.join(dir.path()) };
    let logs = sweep_dir.join("slurm");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let name = sweep_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "sweep".into());
    let mut script = String::from("#!/bin/bash\n");
    script += "# Written by torchfit sweep --launcher slurm: each array task is one sweep worker.\n";
    script += &format!("#SBATCH --job-name=torchfit-{}\n", name.replace(char::is_whitespace, "_"));
    script += &format!("#SBATCH --array=0-{}\n", jobs - 1);
    script += "#SBATCH --ntasks=1\n";
    script += &format!("#SBATCH --output={}/%A_%a.out\n", quote(&logs.display().to_string()));
    script += &format!("#SBATCH --chdir={}\n", quote(&cwd.display().to_string()));
    for arg in extra {
        if arg.contains('\n') {
            bail!("--sbatch-arg {arg:?}: one line only");
        }
        script += &format!("#SBATCH {arg}\n");
    }
    // exec: Slurm's signals (scancel, preemption, time limit) reach the worker itself.
    script += &format!(
        "exec {} sweep worker {}\n",
        quote(&exe.display().to_string()),
        quote(&sweep_dir.display().to_string())
    );
    let path = dir.path().join(SBATCH);
    atomic::write(&path, script.as_bytes())?;
    if dry_run {
        writeln!(
            out,
            "wrote {} (not submitted: --dry-run); submit it with: sbatch {}",
            path.display(),
            path.display()
        )?;
        return Ok(());
    }
    let output = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .context("cannot run sbatch (is Slurm installed and on PATH?)")?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr).trim().replace('\n', " ");
        bail!("sbatch {} failed: {err}", path.display());
    }
    let job = String::from_utf8_lossy(&output.stdout).trim().split(';').next().unwrap_or_default().to_string();
    writeln!(
        out,
        "submitted Slurm job {job}: {jobs} workers on {}; follow it with: torchfit sweep status {}",
        dir.path().display(),
        dir.path().display()
    )?;
    Ok(())
}

/// A word for bash and for #SBATCH lines: single-quoted when it holds anything special.
fn quote(word: &str) -> String {
    if word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:@%".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
