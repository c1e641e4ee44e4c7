//! TEMPORARY stub of the c10d wrappers (replaced by the shim branch).
use std::time::Duration;
use anyhow::{bail, Result};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend { Gloo, Nccl }
pub struct Store;
impl Store {
    pub fn tcp(_host: &str, _port: u16, _world_size: usize, _is_server: bool, _timeout: Duration) -> Result<Store> { bail!("stub") }
    pub fn prefixed(&self, _prefix: &str) -> Result<Store> { bail!("stub") }
    pub fn set(&self, _key: &str, _value: &[u8]) -> Result<()> { bail!("stub") }
    pub fn get(&self, _key: &str) -> Result<Vec<u8>> { bail!("stub") }
    pub fn add(&self, _key: &str, _delta: i64) -> Result<i64> { bail!("stub") }
}
pub struct ProcessGroup;
impl ProcessGroup {
    pub fn new(_store: &Store, _rank: usize, _world_size: usize, _backend: Backend, _timeout: Duration) -> Result<ProcessGroup> { bail!("stub") }
    pub fn allreduce_sum(&self, _tensor: &mut Tensor) -> Result<()> { bail!("stub") }
    pub fn broadcast(&self, _tensor: &mut Tensor, _root: usize) -> Result<()> { bail!("stub") }
    pub fn barrier(&self) -> Result<()> { bail!("stub") }
}
