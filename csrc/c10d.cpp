// PyTorch's own distributed layer (c10d), which libtorch ships and tch does not expose: the
// TCPStore that processes meet through (optionally under a PrefixStore), a Gloo process group
// over it, and the collectives torchfit's data-parallel training uses, called through
// c10d::Backend so they work the same on the NCCL group made in c10d_nccl.cpp. Wrapped
// safely in src/c10d.rs; every function returns nullptr on success or an error message that
// the caller frees with tf_string_free.
//
// Handles given to Rust: a store is a heap `c10::intrusive_ptr<c10d::Store>*`, a process
// group a heap `c10::intrusive_ptr<c10d::Backend>*` (c10d objects are reference counted, and
// a process group keeps its store alive itself).
//
// ProcessGroupGloo.hpp needs gloo's headers, which libtorch does not ship: this file alone is
// compiled with csrc/gloo_decl/ on its include path (see the README there for why that is
// safe, and what this file must therefore never do).
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "guarded.h"
#include "torchfit.h"

using torchfit::guarded;

namespace {

using StorePtr = c10::intrusive_ptr<c10d::Store>;
using BackendPtr = c10::intrusive_ptr<c10d::Backend>;

StorePtr& store_of(void* handle) { return *static_cast<StorePtr*>(handle); }
BackendPtr& backend_of(void* handle) { return *static_cast<BackendPtr*>(handle); }

// c10d's collectives read and write a tensor's memory as one dense block (Gloo through its
// data pointer and element count), so a strided view would be reduced wrongly; torchfit
// reduces flat buffers, and anything else is a caller's mistake to report.
at::Tensor& collective_tensor(void* tensor, const char* op) {
  auto& t = *static_cast<at::Tensor*>(tensor);
  TORCH_CHECK(t.defined(), op, ": the tensor is undefined");
  TORCH_CHECK(t.is_contiguous(), op, ": the tensor must be contiguous");
  return t;
}

// Waits for a collective. Gloo's work finishes (or fails) within the group's timeout, so this
// returns; a failure (a peer gone, the timeout) is rethrown here as the error that ended it.
// NCCL's wait makes the current CUDA stream wait for the collective, without blocking.
void wait(const c10::intrusive_ptr<c10d::Work>& work) { work->wait(); }

}  // namespace

extern "C" {

// Connects to the TCPStore at host:port, after starting its server in this process if
// `is_server`. As torch.distributed does (wait_for_workers): the server waits until all
// `world_size` processes have connected, and a client retries connecting; either gives up
// after about `timeout_ms`, which is also how long get() waits for a key.
//
// A client connects with half the timeout: TCPStore retries whole connection attempts, each
// as long as its timeout, until a deadline of that same timeout has passed, and the first
// attempt ends just short of it, so a server that never comes would take two timeouts and a
// backoff delay (0.5-1.5 s) to be reported. With half, that is one timeout and the delay.
char* tf_store_tcp(const char* host, uint16_t port, size_t world_size, int is_server, int64_t timeout_ms,
                   void** out) {
  return guarded([&] {
    const std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = world_size;
    opts.waitWorkers = true;
    opts.timeout = opts.isServer ? timeout : std::max(timeout / 2, std::chrono::milliseconds(1));
    // As torch.distributed's env:// rendezvous: several stores in one process may share a
    // host:port (one server), e.g. a group's store and another made from the same address.
    opts.multiTenant = true;
    StorePtr store = c10::make_intrusive<c10d::TCPStore>(host, opts);
    store->setTimeout(timeout);
    *out = new StorePtr(std::move(store));
  });
}

// A view of `store` whose keys all start with `prefix` (what torch.distributed and torchrun
// use to keep groups, and restarts, apart).
char* tf_store_prefixed(void* store, const char* prefix, void** out) {
  return guarded([&] {
    StorePtr view = c10::make_intrusive<c10d::PrefixStore>(prefix, store_of(store));
    *out = new StorePtr(std::move(view));
  });
}

void tf_store_free(void* store) { delete static_cast<StorePtr*>(store); }

char* tf_store_set(void* store, const char* key, const uint8_t* value, size_t len) {
  return guarded([&] { store_of(store)->set(key, std::vector<uint8_t>(value, value + len)); });
}

// The value of `key`, waiting up to the store's timeout for it to be set. The bytes are
// malloc'd into *out (never null, even when empty) for the caller to free with tf_bytes_free.
char* tf_store_get(void* store, const char* key, uint8_t** out, size_t* out_len) {
  return guarded([&] {
    const std::vector<uint8_t> value = store_of(store)->get(key);
    auto* bytes = static_cast<uint8_t*>(std::malloc(value.empty() ? 1 : value.size()));
    if (bytes == nullptr) throw std::bad_alloc();
    if (!value.empty()) std::memcpy(bytes, value.data(), value.size());
    *out = bytes;
    *out_len = value.size();
  });
}

void tf_bytes_free(uint8_t* bytes) { std::free(bytes); }

// Adds `delta` to the integer at `key` (0 if unset) and returns the new value: the store's
// atomic counter.
char* tf_store_add(void* store, const char* key, int64_t delta, int64_t* out) {
  return guarded([&] { *out = store_of(store)->add(key, delta); });
}

// A Gloo process group of `size` processes over `store`, this one being `rank`. Its network
// device is chosen as torch.distributed chooses it (ProcessGroupGloo::Options::create_default
// is the code Python's ProcessGroupGloo constructor runs): one device per interface named in
// GLOO_SOCKET_IFNAME, else the address this machine's hostname resolves to, else loopback;
// TORCH_GLOO_LAZY_INIT is honoured too. `timeout_ms` bounds connecting to every peer and each
// collective.
char* tf_pg_gloo(void* store, int rank, int size, int64_t timeout_ms, void** out) {
  return guarded([&] {
    auto options = c10d::ProcessGroupGloo::Options::create_default(std::chrono::milliseconds(timeout_ms));
    BackendPtr pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store_of(store), rank, size, options);
    *out = new BackendPtr(std::move(pg));
  });
}

// Waits for the group's work in flight (Gloo's destructor does so itself, each piece of work
// bounded by the timeout) and stops its threads.
void tf_pg_free(void* pg) { delete static_cast<BackendPtr*>(pg); }

// Sums `tensor` (a tch tensor, i.e. a torch::Tensor*) over the group, in place.
char* tf_pg_allreduce_sum(void* pg, void* tensor) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{collective_tensor(tensor, "allreduce")};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    wait(backend_of(pg)->allreduce(tensors, opts));
  });
}

// Starts summing `tensor` over the group and returns at once: *work receives the handle
// that tf_work_wait waits on and tf_work_free frees. Training overlaps the sum of one
// layer's gradients with the backward pass through the layers before it, as DDP's buckets
// do. The work holds its own reference to the tensor's storage.
char* tf_pg_allreduce_sum_start(void* pg, void* tensor, void** work) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{collective_tensor(tensor, "allreduce")};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    *work = new c10::intrusive_ptr<c10d::Work>(backend_of(pg)->allreduce(tensors, opts));
  });
}

// Waits for a collective started above (the group's timeout bounds it).
char* tf_work_wait(void* work) {
  return guarded([&] { wait(*static_cast<c10::intrusive_ptr<c10d::Work>*>(work)); });
}

void tf_work_free(void* work) { delete static_cast<c10::intrusive_ptr<c10d::Work>*>(work); }

// Overwrites `tensor` with rank `root`'s.
char* tf_pg_broadcast(void* pg, void* tensor, int root) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{collective_tensor(tensor, "broadcast")};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    wait(backend_of(pg)->broadcast(tensors, opts));
  });
}

// Returns once every process of the group has called it.
char* tf_pg_barrier(void* pg) {
  return guarded([&] { wait(backend_of(pg)->barrier(c10d::BarrierOptions())); });
}

}  // extern "C"
