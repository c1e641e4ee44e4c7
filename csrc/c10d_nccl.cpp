// c10d's NCCL process group, kept apart from c10d.cpp because it needs what only a CUDA
// libtorch with NVIDIA's pip headers beside it has: nccl.h (nvidia-nccl-cu*, a dependency of
// the torch wheel) and the CUDA runtime headers with the two header-only packages they
// include (nvidia-cuda-crt, nvidia-cuda-cccl), which scripts/libtorch.sh installs. build.rs
// defines TORCHFIT_NCCL and puts those folders on this file's include path when it finds them
// all; otherwise (a CPU-only libtorch, a libtorch zip) this file compiles to a stub whose
// function reports that this torchfit was built without NCCL. Handles are those of c10d.cpp.
//
// Once made, the group is a c10d::Backend like the Gloo one: c10d.cpp's collectives, and
// tf_pg_free, serve both.
#include <cstdint>

#ifdef TORCHFIT_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#endif

#include "guarded.h"
#include "torchfit.h"

using torchfit::guarded;

extern "C" {

// An NCCL process group of `size` processes over `store` (a c10d.cpp store handle), this one
// being `rank`. Its collectives run on the CUDA device of the tensors given to them. With no
// CUDA device visible this is an error rather than libtorch's failure deeper in: NCCL needs
// one. `timeout_ms` is the group's timeout, which libtorch's watchdog enforces (by default it
// then ends the process: TORCH_NCCL_ASYNC_ERROR_HANDLING).
char* tf_pg_nccl(void* store, int rank, int size, int64_t timeout_ms, void** out) {
#ifdef TORCHFIT_NCCL
  return guarded([&] {
    TORCH_CHECK(c10::cuda::device_count() > 0,
                "the NCCL backend needs a CUDA device, and this process sees none (no GPU, no driver, or "
                "CUDA_VISIBLE_DEVICES empty); use the gloo backend on CPU");
    // Options holds an ncclConfig_t by value, so this allocation's size comes from the nccl.h
    // build.rs found: the one of the nvidia-nccl wheel that this torch requires, whose
    // version is the one libtorch was built with.
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = std::chrono::milliseconds(timeout_ms);
    auto& base = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
    c10::intrusive_ptr<c10d::Backend> pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(base, rank, size, options);
    *out = new c10::intrusive_ptr<c10d::Backend>(std::move(pg));
  });
#else
  (void)store;
  (void)rank;
  (void)size;
  (void)timeout_ms;
  (void)out;
  return torchfit::copy_string(
      "this torchfit was built without NCCL (its libtorch has no CUDA, or the NCCL and CUDA headers "
      "were not found beside it when it was built: see build.rs); use the gloo backend");
#endif
}

}  // extern "C"
