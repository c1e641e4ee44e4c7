//! PyTorch's distributed layer, c10d, as libtorch ships it (tch does not expose it): the
//! TCPStore that the processes of a run meet through, and Gloo or NCCL process groups with
//! the collectives data-parallel training needs. The C++ is `csrc/c10d.cpp` and
//! `csrc/c10d_nccl.cpp`; this wraps it safely.
//!
//! Nothing here can hang for good: connecting to the store, waiting for a key, meeting the
//! group's peers and each Gloo collective give up after the timeout they were given, and a
//! peer that dies makes the collectives of the others fail as soon as its connections close.
//! (An NCCL group's timeout is enforced by libtorch's watchdog, which by default ends the
//! process: see `csrc/c10d_nccl.cpp`.)
//!
//! Tensors cross into C++ as tch's tensor pointer taken to be a `torch::Tensor*`, the same
//! tch internal `shim` relies on (see there).

// `Store::add`, `ProcessGroup::barrier` and the rank/size getters complete the c10d surface
// the tests exercise; training does not need them (yet).
#![cfg_attr(not(test), allow(dead_code))]

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use tch::Tensor;

use crate::cuda::LiveStore;
use crate::shim::{c_string, check, ffi};

/// Which c10d process group: Gloo (CPU tensors, or CUDA ones staged through the host) or NCCL
/// (CUDA tensors, one device per process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

/// c10d's timeouts in milliseconds; a zero timeout becomes the shortest one, 1 ms, since
/// c10d reads 0 as "none" in places.
fn millis(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A c10d key-value store: a TCPStore, or a prefixed view of one.
pub struct Store {
    ptr: NonNull<c_void>,
    /// Where the store is (host:port, and the prefix of a view), for error messages.
    name: String,
}

// SAFETY: c10d stores are shared between threads in libtorch itself (a TCPStore serialises
// its client's requests with a lock), and this handle is only a reference count on one.
unsafe impl Send for Store {}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: ptr came from tf_store_tcp or tf_store_prefixed and is freed once, here. A
        // process group made from this store holds its own reference to it.
        unsafe { ffi::tf_store_free(self.ptr.as_ptr()) }
    }
}

// SAFETY: the handle is a live c10d store for as long as `self` is borrowed (it is freed
// only in Drop).
unsafe impl LiveStore for Store {
    fn handle(&self) -> NonNull<c_void> {
        self.ptr
    }
}

impl Store {
    /// Connects to the TCPStore at `host:port`; with `is_server`, this process first starts
    /// its server (rank 0, when no launcher such as torchrun already runs one). As
    /// torch.distributed does, the server waits until all `world_size` processes have
    /// connected, and a client retries until the server is up; either gives up after about
    /// `timeout` (the server counts whole seconds, and rounds up; a client may add a backoff
    /// delay of up to 1.5 s), which is also how long [`Store::get`] waits for a key.
    pub fn tcp(host: &str, port: u16, world_size: usize, is_server: bool, timeout: Duration) -> Result<Store> {
        let name = format!("{host}:{port}");
        if world_size == 0 {
            bail!("TCPStore at {name}: the world size must be at least 1");
        }
        let c_host = c_string(host)?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer.
        check(unsafe {
            ffi::tf_store_tcp(c_host.as_ptr(), port, world_size, is_server as c_int, millis(timeout), &mut ptr)
        })
        .map_err(|e| {
            let role = if is_server { "starting" } else { "connecting to" };
            anyhow!("{role} the TCPStore at {name} ({world_size} processes, timeout {timeout:?}): {e}")
        })?;
        Store::from_raw(ptr, name)
    }

    /// A view of this store whose keys are all prefixed with `prefix` (c10d's PrefixStore,
    /// e.g. torchrun's `/worker/attempt_<n>`): key `k` is `<prefix>/k` in this store.
    pub fn prefixed(&self, prefix: &str) -> Result<Store> {
        let c_prefix = c_string(prefix)?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: live store, valid C string and out-pointer.
        check(unsafe { ffi::tf_store_prefixed(self.ptr.as_ptr(), c_prefix.as_ptr(), &mut ptr) })?;
        Store::from_raw(ptr, format!("{} under {prefix:?}", self.name))
    }

    fn from_raw(ptr: *mut c_void, name: String) -> Result<Store> {
        let ptr = NonNull::new(ptr).ok_or_else(|| anyhow!("the store at {name} came back null"))?;
        Ok(Store { ptr, name })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let c_key = c_string(key)?;
        // SAFETY: live store; value is readable for its length during the call.
        check(unsafe { ffi::tf_store_set(self.ptr.as_ptr(), c_key.as_ptr(), value.as_ptr(), value.len()) })
            .map_err(|e| anyhow!("setting {key:?} in the store at {}: {e}", self.name))
    }

    /// The value of `key`, waiting up to the store's timeout for some process to set it; a
    /// timeout is an error that names the key.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let c_key = c_string(key)?;
        let mut bytes = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: live store, valid C string and out-pointers.
        check(unsafe { ffi::tf_store_get(self.ptr.as_ptr(), c_key.as_ptr(), &mut bytes, &mut len) })
            .map_err(|e| anyhow!("waiting for {key:?} in the store at {}: {e}", self.name))?;
        if bytes.is_null() {
            bail!("reading {key:?} from the store at {}: no value came back", self.name);
        }
        // SAFETY: on success the shim returned `len` readable bytes, malloc'd, ours to free.
        let value = unsafe { std::slice::from_raw_parts(bytes, len) }.to_vec();
        unsafe { ffi::tf_bytes_free(bytes) };
        Ok(value)
    }

    /// Adds `delta` to the counter at `key` (0 when unset) and returns its new value, atomically
    /// across processes.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let c_key = c_string(key)?;
        let mut value = 0i64;
        // SAFETY: live store, valid C string and out-pointer.
        check(unsafe { ffi::tf_store_add(self.ptr.as_ptr(), c_key.as_ptr(), delta, &mut value) })
            .map_err(|e| anyhow!("adding to {key:?} in the store at {}: {e}", self.name))?;
        Ok(value)
    }
}

/// A c10d process group (its `Backend` object: ProcessGroupGloo or ProcessGroupNCCL): the
/// processes of a run, and the collectives between them. Every process must call the same
/// collectives in the same order, with tensors of the same shape and type.
pub struct ProcessGroup {
    ptr: NonNull<c_void>,
    rank: usize,
    world_size: usize,
    backend: Backend,
}

// SAFETY: a c10d Backend may be called from any thread (libtorch's own callers do: Python's
// threads, DDP's reducer); this handle is only a reference count on one, and it is not Sync,
// so calls through it never overlap.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: ptr came from tf_pg_gloo or tf_pg_nccl and is freed once, here. Gloo's
        // destructor waits for work in flight, which its timeout bounds.
        unsafe { ffi::tf_pg_free(self.ptr.as_ptr()) }
    }
}

impl ProcessGroup {
    /// Joins the group of `world_size` processes that meet in `store`, as process `rank`,
    /// waiting up to `timeout` for all of them; `timeout` then bounds each collective.
    ///
    /// Gloo picks its network device as torch.distributed does: the interfaces named in
    /// `GLOO_SOCKET_IFNAME` if set, else the address this machine's hostname resolves to,
    /// else loopback. NCCL runs each collective on the CUDA device of its tensor, so the
    /// caller puts them on this process's device (`cuda:<local rank>`); it needs CUDA, and
    /// is an error where there is none or torchfit was built without NCCL.
    pub fn new(
        store: &Store,
        rank: usize,
        world_size: usize,
        backend: Backend,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        if rank >= world_size {
            bail!("rank {rank} is not below the world size {world_size}");
        }
        let (c_rank, c_size) = match (c_int::try_from(rank), c_int::try_from(world_size)) {
            (Ok(r), Ok(s)) => (r, s),
            _ => bail!("a world size of {world_size} is more than c10d takes"),
        };
        let timeout = millis(timeout);
        let created = match backend {
            Backend::Gloo => {
                let mut ptr = std::ptr::null_mut();
                // SAFETY: live store and out-pointer.
                check(unsafe { ffi::tf_pg_gloo(store.ptr.as_ptr(), c_rank, c_size, timeout, &mut ptr) })
                    .and_then(|()| NonNull::new(ptr).ok_or_else(|| anyhow!("the Gloo process group came back null")))
            }
            // In the CUDA half of the shim, loaded now (crate::cuda).
            Backend::Nccl => crate::cuda::shim().and_then(|shim| shim.pg_nccl(store, c_rank, c_size, timeout)),
        };
        let ptr = created.map_err(|e| {
            anyhow!(
                "{backend:?} process group of {world_size} (this is rank {rank}), over the store at {}: {e}",
                store.name
            )
        })?;
        Ok(ProcessGroup { ptr, rank, world_size, backend })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Replaces `tensor` (contiguous) with its sum over all processes, and waits for that; a
    /// failure (a peer gone, the timeout) is an error with c10d's message.
    pub fn allreduce_sum(&self, tensor: &mut Tensor) -> Result<()> {
        // SAFETY: live group; tch's tensor pointer is a torch::Tensor*, alive for the call,
        // and the collective is complete (or, for NCCL, ordered on the current CUDA stream)
        // when it returns.
        check(unsafe { ffi::tf_pg_allreduce_sum(self.ptr.as_ptr(), tensor.as_mut_ptr() as *mut c_void) })
            .map_err(|e| self.failed("allreduce", e))
    }

    /// Starts replacing `tensor` (contiguous) with its sum over all processes; the sum is
    /// there once [`Pending::wait`] returns. The pending collective borrows `tensor` mutably
    /// until then, so it can be neither read nor dropped while the collective writes it.
    pub fn start_allreduce_sum<'a>(&self, tensor: &'a mut Tensor) -> Result<Pending<'a>> {
        let work = self.start(tensor)?;
        Ok(Pending { work, what: self.what("allreduce"), _tensor: PhantomData, _part: None })
    }

    /// [`start_allreduce_sum`](Self::start_allreduce_sum) on `part`, a view of a buffer (one
    /// bucket of a gradient buffer, while the backward pass still writes the others): the
    /// pending collective owns the view until it is waited for. The rest of the buffer is
    /// the caller's; it must leave this part alone until then (`dist::GradientSum` reads
    /// the buffer only after waiting for every part).
    pub fn start_allreduce_sum_part(&self, part: Tensor) -> Result<Pending<'static>> {
        let work = self.start(&part)?;
        Ok(Pending { work, what: self.what("allreduce"), _tensor: PhantomData, _part: Some(part) })
    }

    fn start(&self, tensor: &Tensor) -> Result<NonNull<c_void>> {
        let mut work = std::ptr::null_mut();
        // SAFETY: live group; tch's tensor pointer is a torch::Tensor*, which the work copies
        // (a new reference to the same storage), so the storage outlives the collective.
        check(unsafe { ffi::tf_pg_allreduce_sum_start(self.ptr.as_ptr(), tensor.as_ptr() as *mut c_void, &mut work) })
            .map_err(|e| self.failed("allreduce", e))?;
        NonNull::new(work).ok_or_else(|| anyhow!("the allreduce's work came back null"))
    }

    /// Replaces `tensor` (contiguous) with process `root`'s.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        if root >= self.world_size {
            bail!("broadcast from rank {root}: the group has {} processes", self.world_size);
        }
        // `root` is below world_size, which fits a c_int.
        let root = root as c_int;
        // SAFETY: as in allreduce_sum.
        check(unsafe { ffi::tf_pg_broadcast(self.ptr.as_ptr(), tensor.as_mut_ptr() as *mut c_void, root) })
            .map_err(|e| self.failed("broadcast", e))
    }

    /// Returns once every process has called it.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: live group.
        check(unsafe { ffi::tf_pg_barrier(self.ptr.as_ptr()) }).map_err(|e| self.failed("barrier", e))
    }

    fn failed(&self, op: &str, e: anyhow::Error) -> anyhow::Error {
        anyhow!("{}: {e}", self.what(op))
    }

    fn what(&self, op: &str) -> String {
        format!("{op} on rank {} of {} ({:?})", self.rank, self.world_size, self.backend)
    }
}

/// A collective in flight (see [`ProcessGroup::start_allreduce_sum`]), holding its tensor:
/// borrowed mutably for `'a`, or a view it owns.
pub struct Pending<'a> {
    work: NonNull<c_void>,
    what: String,
    _tensor: PhantomData<&'a mut Tensor>,
    _part: Option<Tensor>,
}

// SAFETY: the work handle is c10d's, safe to wait on from any thread; the tensor it holds
// is only kept, not used.
unsafe impl Send for Pending<'_> {}

impl Pending<'_> {
    /// Waits for the collective; the tensor holds the result once this returns `Ok` (for
    /// NCCL, once the current CUDA stream gets there), and is free again either way.
    pub fn wait(self) -> Result<()> {
        // SAFETY: live work handle, freed once in Drop.
        check(unsafe { ffi::tf_work_wait(self.work.as_ptr()) }).map_err(|e| anyhow!("{}: {e}", self.what))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // SAFETY: work came from tf_pg_allreduce_sum_start and is freed once, here. A work
        // dropped unwaited (an error elsewhere in the step) still completes or fails on
        // gloo's threads; freeing our reference does not cancel it.
        unsafe { ffi::tf_work_free(self.work.as_ptr()) }
    }
}

#[cfg(test)]
mod tests;
