//! The processes that train one run together: data-parallel training on PyTorch's own c10d
//! (a `TCPStore` to meet, `ProcessGroupGloo` on CPU, `ProcessGroupNCCL` on CUDA), started
//! by torchrun or Slurm (`launch`). A single process is a group of one, where every call
//! here costs nothing, so the training loop is the same loop either way:
//! - each process takes its shard of every global batch ([`Group::shard`]), and the
//!   gradients are summed across processes as the backward pass finishes them
//!   ([`Group::sum_gradients`]);
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

use crate::c10d::{Backend, Pending, ProcessGroup, Store};
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
    /// shard's share of the global batch) the gradient of the whole step's mean loss, range
    /// by range as the backward pass finishes them (see [`GradientSum`]).
    pub fn sum_gradients(&self, grads: &Tensor) -> GradientSum<'_> {
        GradientSum { group: self, grads: grads.shallow_clone(), ready: None, pending: Vec::new() }
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

/// Gradients are summed in buckets of at least this many elements (1 MiB of floats, DDP's
/// first bucket): few enough collectives for a small model (one per step for the Keras
/// example), and for a large one, its last layers' sum runs while the backward pass
/// computes the first layers' gradients.
const BUCKET: i64 = 1 << 18;

/// The sum across processes of a gradient buffer that the backward pass is still writing:
/// ranges reported [`ready`](GradientSum::ready) (from the end of the buffer towards its
/// start) are gathered into buckets, and each full bucket's sum starts at once, in the
/// background; [`finish`](GradientSum::finish) sums the rest and waits for all of them.
pub struct GradientSum<'g> {
    group: &'g Group,
    grads: Tensor,
    /// The range ready and not yet started: `start..end`.
    ready: Option<(i64, i64)>,
    /// The buckets in flight, each holding its view of `grads` until waited for.
    pending: Vec<Pending<'static>>,
}

impl GradientSum<'_> {
    /// `grads[start..start + len]` is final on this process.
    pub fn ready(&mut self, start: i64, len: i64) -> Result<()> {
        if self.group.comm.is_none() {
            return Ok(());
        }
        self.ready = match self.ready {
            Some((first, end)) if start + len == first => Some((start, end)),
            Some(_) => {
                self.start()?;
                Some((start, start + len))
            }
            None => Some((start, start + len)),
        };
        match self.ready {
            Some((first, end)) if end - first >= BUCKET => self.start(),
            _ => Ok(()),
        }
    }

    /// Sums what is left and waits for every bucket.
    pub fn finish(mut self) -> Result<()> {
        self.start()?;
        for pending in self.pending.drain(..) {
            pending.wait().context("summing the gradients across processes failed")?;
        }
        Ok(())
    }

    fn start(&mut self) -> Result<()> {
        let (Some(comm), Some((first, end))) = (&self.group.comm, self.ready.take()) else { return Ok(()) };
        let bucket = self.grads.narrow(0, first, end - first);
        let pending =
            comm.pg.start_allreduce_sum_part(bucket).context("summing the gradients across processes failed")?;
        self.pending.push(pending);
        Ok(())
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
