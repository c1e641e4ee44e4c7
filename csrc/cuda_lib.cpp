// libtorchfit_cuda.so, the CUDA half of the shim: c10d_nccl.cpp and cuda_graph.cpp linked
// against libtorch_cuda into a shared library of their own, which the binary embeds and loads
// only when NCCL or a CUDA graph is used (src/cuda.rs), so that no other process pays for
// loading the CUDA libraries. This file adds what a library of its own needs besides.
#include "guarded.h"
#include "torchfit.h"

extern "C" {

// Frees an error message of this library's functions. Not tf_string_free: this library
// has its own copy of kOutOfMemory, which is what a message is compared with.
void tf_cuda_string_free(char* s) {
  if (s != torchfit::kOutOfMemory) std::free(s);
}

}  // extern "C"
