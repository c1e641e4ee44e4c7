//! The processes that train one run together: data-parallel training on PyTorch's own c10d
//! (a `TCPStore` to meet, `ProcessGroupGloo` on CPU, `ProcessGroupNCCL` on CUDA), started
//! by torchrun or Slurm (`launch`). A single process is a group of one, where every call
//! here costs nothing, so the training loop is the same loop either way:
//! - each process takes its shard of every global batch ([`Group::shard`]), and the
//!   gradients are summed across processes in [`Group::reduce_gradients`];
//! - every decision that must come out the same everywhere (skip a batch whose loss is not
//!   finite, stop on a signal, stop early) goes through [`Group::agree`], so that no process
//!   goes on alone or waits for one that has left;
//! - rank 0 (the leader) alone writes the run directory and hands what the others need
//!   through the store ([`Group::share`]).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

use crate::config::{yaml_difference, BackendChoice, Config};

mod launch;

use crate::c10d::{Backend, ProcessGroup, Store};
pub use launch::{Launch, Launcher};

pub struct Group {
    pub rank: usize,
    pub world_size: usize,
    comm: Option<Comm>,
}

struct Comm {
    store: Store,
    pg: ProcessGroup,
    backend: Backend,
    device: Device,
}

impl Group {
    /// A run of one process.
    pub fn single() -> Group {
        Group { rank: 0, world_size: 1, comm: None }
    }

    /// Joins the processes `launch` started, training `config` on `device`: meets them at
    /// the store, checks that every one has the same config, and connects the process group.
    /// A process started alone is a group of one.
    pub fn join(launch: &Launch, config: &Config, device: Device) -> Result<Group> {
        let (Some((addr, port)), true) = (&launch.master, launch.is_distributed()) else {
            return Ok(Group::single());
        };
        let backend = backend(config.distributed.backend, device)?;
        let seconds = config.distributed.timeout;
        let timeout = Duration::from_secs_f64(seconds);
        let (rank, world_size) = (launch.rank, launch.world_size);
        // Under torchrun the agent serves the store and every worker is a client; PyTorch
        // prefixes the workers' keys per restart so that a new attempt never reads keys a
        // dead one left. Otherwise (Slurm) rank 0 serves it.
        let server = rank == 0 && !launch.agent_store;
        let store = Store::tcp(addr, *port, world_size, server, timeout).with_context(|| {
            format!("the group did not meet at {addr}:{port} (MASTER_ADDR, MASTER_PORT) within {seconds} s (distributed.timeout)")
        })?;
        let store = match launch.agent_store {
            true => store.prefixed(&format!("/worker/attempt_{}/", launch.restart))?,
            false => store,
        };
        let store = store.prefixed("torchfit/")?;
        check_configs(&store, rank, world_size, &config.to_yaml()?, seconds)?;
        let pg = ProcessGroup::new(&store.prefixed("pg/")?, rank, world_size, backend, timeout)
            .with_context(|| format!("cannot connect the {} process group", backend_name(backend)))?;
        Ok(Group { rank, world_size, comm: Some(Comm { store, pg, backend, device }) })
    }

    /// Rank 0, which writes the run directory, checkpoints and exports.
    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    /// `gloo` or `nccl`; `None` for a single process.
    pub fn backend(&self) -> Option<&'static str> {
        self.comm.as_ref().map(|c| backend_name(c.backend))
    }

    /// This process's rows of a global batch of `rows`: (first, count). The batch is cut
    /// into `world_size` contiguous parts differing by at most one row, the larger first;
    /// a part may be empty when the batch has fewer rows than there are processes.
    pub fn shard(&self, rows: i64) -> (i64, i64) {
        let (world, rank) = (self.world_size as i64, self.rank as i64);
        let (base, extra) = (rows / world, rows % world);
        (rank * base + rank.min(extra), base + i64::from(rank < extra))
    }

    /// Makes `grads` (this process's gradient of its shard's loss, already weighted by the
    /// shard's share of the global batch) the gradient of the whole step's mean loss.
    pub fn reduce_gradients(&self, grads: &mut Tensor) -> Result<()> {
        self.sum(grads).context("summing the gradients across processes failed")
    }

    /// Sums `tensor` over the processes, in place.
    pub fn sum(&self, tensor: &mut Tensor) -> Result<()> {
        match &self.comm {
            Some(comm) => comm.pg.allreduce_sum(tensor),
            None => Ok(()),
        }
    }

    /// Gives every process rank 0's `tensor`.
    pub fn broadcast(&self, tensor: &mut Tensor) -> Result<()> {
        match &self.comm {
            Some(comm) => comm.pg.broadcast(tensor, 0).context("broadcasting from rank 0 failed"),
            None => Ok(()),
        }
    }

    /// Whether any process answers yes: the same answer everywhere.
    pub fn agree(&self, yes: bool) -> Result<bool> {
        let Some(comm) = &self.comm else { return Ok(yes) };
        let mut votes = Tensor::from(f32::from(u8::from(yes))).to_device(comm.device);
        comm.pg.allreduce_sum(&mut votes).context("agreeing with the other processes failed")?;
        Ok(votes.double_value(&[]) > 0.0)
    }

    /// Rank 0's `value` under `key`, on every process: rank 0 passes it, the others wait
    /// for it (up to `distributed.timeout`).
    pub fn share(&self, key: &str, value: Option<Vec<u8>>) -> Result<Vec<u8>> {
        let Some(comm) = &self.comm else { return value.context("a single process shares nothing it lacks") };
        let key = format!("share/{key}");
        match value {
            Some(value) if self.is_leader() => {
                comm.store.set(&key, &value)?;
                Ok(value)
            }
            _ => comm.store.get(&key).with_context(|| format!("waiting for rank 0 to share {key}")),
        }
    }
}

fn backend(choice: BackendChoice, device: Device) -> Result<Backend> {
    Ok(match (choice, device.is_cuda()) {
        (BackendChoice::Auto, true) | (BackendChoice::Nccl, true) => Backend::Nccl,
        (BackendChoice::Auto, false) | (BackendChoice::Gloo, _) => Backend::Gloo,
        (BackendChoice::Nccl, false) => {
            bail!("distributed.backend: nccl runs on CUDA devices only, and this run's device is the CPU; use gloo")
        }
    })
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Gloo => "gloo",
        Backend::Nccl => "nccl",
    }
}

/// Every process publishes its resolved config and reads everyone's, so that every process
/// fails alike, naming the first rank and key that differ from rank 0's. Also where a rank
/// that never arrives is noticed and named.
fn check_configs(store: &Store, rank: usize, world_size: usize, yaml: &str, seconds: f64) -> Result<()> {
    store.set(&format!("config/{rank}"), yaml.as_bytes())?;
    let configs = (0..world_size)
        .map(|r| {
            let text = store.get(&format!("config/{r}")).with_context(|| {
                format!("rank {r} did not join within {seconds} s (distributed.timeout); is it running?")
            })?;
            String::from_utf8(text).with_context(|| format!("rank {r}'s config is not text"))
        })
        .collect::<Result<Vec<_>>>()?;
    match (1..world_size).find(|&r| configs[r] != configs[0]) {
        None => Ok(()),
        Some(r) => {
            let (key, ours, theirs) = yaml_difference(&configs[0], &configs[r]);
            bail!("the processes have different configs: {key} is {ours} on rank 0 but {theirs} on rank {r}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        for world_size in 1..5 {
            for rows in 0..11 {
                let mut next = 0;
                for rank in 0..world_size {
                    let (first, count) = Group { rank, world_size, comm: None }.shard(rows);
                    assert_eq!(first, next);
                    next += count;
                }
                assert_eq!(next, rows);
            }
        }
    }
}
