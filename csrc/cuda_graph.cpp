// CUDA graphs: libtorch's at::cuda::CUDAGraph, which tch does not expose, so that a training
// step can be captured once and replayed (src/train/graph.rs). Compiled for real where
// build.rs finds the CUDA runtime headers beside a CUDA libtorch (TORCHFIT_CUDA_GRAPHS);
// elsewhere the same functions exist and report that this build has no CUDA graphs.
// Wrapped safely in src/cuda.rs (`CudaGraph`).
#include "guarded.h"
#include "torchfit.h"

#ifdef TORCHFIT_CUDA_GRAPHS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

// A graph, and while it is being captured the stream that was current before: CUDA cannot
// capture the legacy default stream, where tch's eager work runs, so a side stream is made
// current for the capture. (Swapped by hand: c10's CUDAStreamGuard would instantiate
// CUDAGuardImpl, whose inline methods call the CUDA runtime directly, which we do not link.)
struct TfCudaGraph {
  at::cuda::CUDAGraph graph;
  std::optional<c10::cuda::CUDAStream> previous;
};
#endif

extern "C" {

#ifdef TORCHFIT_CUDA_GRAPHS
// A new, empty graph in *out (free with tf_cuda_graph_free).
char* tf_cuda_graph_new(void** out) {
  return torchfit::guarded([&] { *out = new TfCudaGraph(); });
}

// Starts capturing the work queued on CUDA device `device` from now on, on a side stream.
// The device is synchronised first, so that eager work queued before is done and the
// captured work starts from its results.
char* tf_cuda_graph_capture_begin(void* graph, int device) {
  return torchfit::guarded([&] {
    auto* g = static_cast<TfCudaGraph*>(graph);
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    c10::cuda::device_synchronize();
    g->previous = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device));
    c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device)));
    g->graph.capture_begin();
  });
}

// Ends the capture and instantiates the graph; the side stream stops being current either
// way, so a failed capture leaves eager work on the default stream as before.
char* tf_cuda_graph_capture_end(void* graph) {
  auto* g = static_cast<TfCudaGraph*>(graph);
  char* err = torchfit::guarded([&] { g->graph.capture_end(); });
  if (g->previous) c10::cuda::setCurrentCUDAStream(*g->previous);
  g->previous.reset();
  return err;
}

// Replays the captured work on the current stream, after what is already queued there.
char* tf_cuda_graph_replay(void* graph) {
  return torchfit::guarded([&] { static_cast<TfCudaGraph*>(graph)->graph.replay(); });
}

void tf_cuda_graph_free(void* graph) { delete static_cast<TfCudaGraph*>(graph); }
#else
char* tf_cuda_graph_new(void** out) {
  *out = nullptr;
  return torchfit::copy_string("this torchfit was built without CUDA graphs (no CUDA libtorch or CUDA headers)");
}
char* tf_cuda_graph_capture_begin(void*, int) { return torchfit::copy_string("no CUDA graphs in this build"); }
char* tf_cuda_graph_capture_end(void*) { return torchfit::copy_string("no CUDA graphs in this build"); }
char* tf_cuda_graph_replay(void*) { return torchfit::copy_string("no CUDA graphs in this build"); }
void tf_cuda_graph_free(void*) {}
#endif

}  // extern "C"
