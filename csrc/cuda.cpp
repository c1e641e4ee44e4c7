// CUDA facts that neither tch nor libtorch's C++ API report, asked of the CUDA runtime that
// libtorch has already loaded. Nothing here includes CUDA headers or links the CUDA runtime:
// symbols are looked up at run time, so the same code builds against a CPU-only libtorch and
// simply reports "not available" there. Wrapped safely in src/shim.rs.
#include <ATen/detail/CUDAHooksInterface.h>
#include <dlfcn.h>

#include <cstddef>
#include <cstring>

#include "torchfit.h"

extern "C" {

// Copies the name of CUDA device `index` (NUL-terminated, truncated to out_len - 1 bytes)
// into `out`. Returns 0 on success, -1 when no CUDA runtime is loaded in this process (a
// CPU-only libtorch), or the CUDA runtime's error code (e.g. no driver, bad index).
//
// libtorch (c10::cuda) exposes no device name, so this calls cudaGetDeviceProperties itself.
// CUDA 12 exports it as cudaGetDeviceProperties_v2 (its header maps the plain name onto that),
// while CUDA 11 and CUDA 13 (the torch 2.13 wheel's libcudart.so.13) export the plain name:
// both are tried, _v2 first. Every version takes a cudaDeviceProp*, a struct that starts with
// `char name[256]` and whose size changes between CUDA releases (about 1 KiB today): it is
// written into a scratch buffer far larger than any release's struct, and only `name` is read.
int tf_cuda_device_name(int index, char* out, size_t out_len) {
  if (out == nullptr || out_len == 0) return -1;
  out[0] = '\0';
  using GetProperties = int (*)(void*, int);
  void* symbol = dlsym(RTLD_DEFAULT, "cudaGetDeviceProperties_v2");
  if (symbol == nullptr) symbol = dlsym(RTLD_DEFAULT, "cudaGetDeviceProperties");
  if (symbol == nullptr) return -1;
  alignas(alignof(std::max_align_t)) unsigned char props[16 * 1024] = {};
  const int status = reinterpret_cast<GetProperties>(symbol)(props, index);
  if (status != 0) return status;
  constexpr size_t kNameLen = 256;
  const size_t len = strnlen(reinterpret_cast<const char*>(props), kNameLen);
  const size_t n = len < out_len - 1 ? len : out_len - 1;
  std::memcpy(out, props, n);
  out[n] = '\0';
  return 0;
}

// The CUDA runtime version libtorch's CUDA backend was built with (e.g. 13000), or -1 when
// libtorch has no CUDA backend registered (libtorch_cuda not loaded: src/cuda.rs). Only the
// registered backend answers this, and it needs no GPU, so it tells on any machine whether
// loading libtorch_cuda at run time worked. (tch does not expose libtorch's CUDA hooks.)
int tf_cuda_backend_runtime() {
  try {
    return static_cast<int>(at::detail::getCUDAHooks().versionCUDART());
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
