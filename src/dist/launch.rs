//! How this process was started: alone, by `torchrun`, or as one of Slurm's `srun` tasks.
//! Read once from the environment the launcher sets; nothing here talks to other processes.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tch::Device;

use crate::config::DeviceChoice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    None,
    Torchrun,
    Slurm,
}

#[derive(Debug, Clone)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// This process's index among those on its machine, and how many there are: the GPU it
    /// takes and its share of the cores.
    pub local_rank: usize,
    pub local_world_size: usize,
    /// Where the group's `TCPStore` listens (`MASTER_ADDR`, `MASTER_PORT`).
    pub master: Option<(String, u16)>,
    /// torchrun's agent already serves the store: every worker connects as a client, under
    /// the prefix of this restart attempt.
    pub agent_store: bool,
    /// How many times the launcher has started this command before (torchrun's
    /// `--max-restarts`, a Slurm requeue): more than 0 means a run to continue.
    pub restart: usize,
    /// An id that stays the same across restarts (torchrun's run id, Slurm's job id), for a
    /// run directory the restarted command finds again.
    pub run_id: Option<String>,
    /// torchrun's `TORCHELASTIC_ERROR_FILE`: where a failing worker writes its error.
    pub error_file: Option<PathBuf>,
}

impl Launch {
    /// One process on its own.
    pub fn single() -> Launch {
        Launch {
            launcher: Launcher::None,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master: None,
            agent_store: false,
            restart: 0,
            run_id: None,
            error_file: None,
        }
    }

    /// The launch this process's environment describes.
    pub fn detect() -> Result<Launch> {
        Launch::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// torchrun's variables (`RANK`, `WORLD_SIZE`, ...) win over Slurm's, since torchrun
    /// inside a Slurm allocation sees both and is the one that started this process.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Launch> {
        let number = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| v.trim().parse::<usize>().with_context(|| format!("{name}={v:?} is not a whole number >= 0")))
                .transpose()
        };
        let error_file = var("TORCHELASTIC_ERROR_FILE").map(PathBuf::from);
        let mut launch = if let (Some(rank), Some(world_size)) = (number("RANK")?, number("WORLD_SIZE")?) {
            Launch {
                launcher: Launcher::Torchrun,
                rank,
                world_size,
                local_rank: number("LOCAL_RANK")?.unwrap_or(rank),
                local_world_size: number("LOCAL_WORLD_SIZE")?.unwrap_or(world_size),
                master: None,
                agent_store: var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true")),
                restart: number("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0),
                run_id: var("TORCHELASTIC_RUN_ID"),
                error_file,
            }
        } else if let (Some(rank), Some(world_size)) = (number("SLURM_PROCID")?, number("SLURM_NTASKS")?) {
            // SLURM_NTASKS_PER_NODE reads like "2" or "2(x3)"; the first count is this
            // node's on the usual homogeneous allocation.
            let per_node = var("SLURM_NTASKS_PER_NODE")
                .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()));
            Launch {
                launcher: Launcher::Slurm,
                rank,
                world_size,
                local_rank: number("SLURM_LOCALID")?.unwrap_or(0),
                local_world_size: per_node.unwrap_or(world_size),
                master: None,
                agent_store: false,
                restart: number("SLURM_RESTART_COUNT")?.unwrap_or(0),
                run_id: var("SLURM_JOB_ID").map(|job| match var("SLURM_ARRAY_TASK_ID") {
                    Some(task) => format!("{job}_{task}"),
                    None => job,
                }),
                error_file,
            }
        } else {
            return Ok(Launch { error_file, ..Launch::single() });
        };
        if launch.world_size == 0 || launch.rank >= launch.world_size {
            bail!("rank {} is not below the world size {}", launch.rank, launch.world_size);
        }
        launch.local_world_size = launch.local_world_size.max(1);
        if launch.world_size > 1 {
            let started_by = match launch.launcher {
                Launcher::Slurm => "Slurm started several tasks (SLURM_NTASKS > 1)",
                _ => "torchrun started several processes (WORLD_SIZE > 1)",
            };
            let (Some(addr), Some(port)) = (var("MASTER_ADDR"), var("MASTER_PORT")) else {
                bail!(
                    "{started_by} but MASTER_ADDR and MASTER_PORT are not both set; \
                     set them before srun (see docs/distributed.md)"
                );
            };
            let port =
                port.trim().parse::<u16>().with_context(|| format!("MASTER_PORT={port:?} is not a port number"))?;
            launch.master = Some((addr, port));
        }
        Ok(launch)
    }

    /// Whether several processes train together.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// The device this process trains on: with several processes on a machine and the
    /// config's `auto` or `cuda` (that is, GPU 0), GPU `LOCAL_RANK` (modulo the GPUs there
    /// are, so that processes share GPUs when there are fewer); `cuda:N` with N > 0 pins
    /// every process to GPU N.
    pub fn device(&self, choice: DeviceChoice, resolved: Device) -> Device {
        match (choice, resolved) {
            (DeviceChoice::Auto | DeviceChoice::Cuda(0), Device::Cuda(_)) if self.local_world_size > 1 => {
                let gpus = tch::Cuda::device_count().max(1) as usize;
                Device::Cuda(self.local_rank % gpus)
            }
            _ => resolved,
        }
    }

    /// Whether the launcher ran this command before (an elastic restart or a requeue), so
    /// that an existing run directory is one to continue.
    pub fn is_restart(&self) -> bool {
        self.restart > 0
    }

    /// Writes `message` where torchrun looks for a failed worker's error, in the JSON
    /// shape PyTorch's `@record` writes, so that torchrun's failure report shows it.
    /// Best effort: the error itself is also printed.
    pub fn write_error_file(&self, message: &str) {
        let Some(path) = &self.error_file else { return };
        let timestamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let body = serde_json::json!({
            "message": {
                "message": message,
                "extraInfo": { "py_callstack": message, "timestamp": timestamp.to_string() },
            }
        });
        let _ = crate::atomic::write(path, body.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch> {
        Launch::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn torchrun_variables() {
        let l = launch(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "1"),
            ("TORCHELASTIC_RUN_ID", "abc"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap();
        assert_eq!(l.launcher, Launcher::Torchrun);
        assert_eq!((l.rank, l.world_size, l.local_rank, l.local_world_size), (1, 2, 1, 2));
        assert_eq!(l.master, Some(("127.0.0.1".to_string(), 29500)));
        assert!(l.agent_store && l.is_restart() && l.is_distributed());
        assert_eq!(l.run_id.as_deref(), Some("abc"));
    }

    #[test]
    fn slurm_variables() {
        let l = launch(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS_PER_NODE", "2(x2)"),
            ("SLURM_JOB_ID", "77"),
            ("MASTER_ADDR", "node1"),
            ("MASTER_PORT", "29400"),
        ])
        .unwrap();
        assert_eq!(l.launcher, Launcher::Slurm);
        assert_eq!((l.rank, l.world_size, l.local_rank, l.local_world_size), (1, 4, 1, 2));
        assert!(!l.agent_store && !l.is_restart());
        assert_eq!(l.run_id.as_deref(), Some("77"));
    }

    #[test]
    fn one_slurm_task_is_a_single_process() {
        let l = launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap();
        assert!(!l.is_distributed() && l.master.is_none());
        assert!(launch(&[]).unwrap().launcher == Launcher::None);
    }

    #[test]
    fn bad_variables_are_named() {
        let err = launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]).unwrap_err().to_string();
        assert!(err.contains("MASTER_ADDR") && err.contains("SLURM_NTASKS"), "{err}");
        let err = launch(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(err.contains("RANK=\"x\""), "{err}");
        let err = launch(&[("RANK", "2"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(err.contains("rank 2"), "{err}");
        let vars = [("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")];
        assert!(launch(&vars).unwrap_err().to_string().contains("MASTER_PORT"));
    }
}
