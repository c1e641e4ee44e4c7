// Every extern "C" function of the C++ shim, declared once. Each .cpp in csrc/ includes this
// file, so the compiler checks each definition against its declaration here (a C function
// defined with other parameter or return types than declared is a compile error).
//
// The Rust side keeps one declaration list per library: src/shim/ffi.rs for the functions
// linked into the binary (the first section), src/cuda.rs's `cuda_library!` for
// libtorchfit_cuda.so, which src/cuda.rs loads with dlopen (the second section).
// tests/ffi_decls.rs checks that those lists name exactly these functions, with the same
// parameter and return types, section by section.
//
// Conventions: a `char*` return is the shim's error convention (csrc/guarded.h): nullptr on
// success, else a malloc'd message that Rust frees with its library's string_free. Handles
// are `void*`: a torch::jit::Module*, a heap c10::intrusive_ptr<c10d::Store>* (a store),
// c10::intrusive_ptr<c10d::Backend>* (a process group), c10::intrusive_ptr<c10d::Work>*
// (a collective in flight), a TfCudaGraph*; a tensor is tch's pointer, a torch::Tensor*.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- library: torchfit (linked into the binary) ----

// torchscript.cpp: error messages, TorchScript modules, fused Adam, denormals.
void tf_string_free(char* s);
char* tf_module_new(const char* class_name, void** out);
void tf_module_free(void* module);
char* tf_module_register_tensor(void* module, const char* name, const void* tensor, int is_buffer);
char* tf_module_register_module(void* module, const char* name, const void* child);
char* tf_module_define(void* module, const char* source);
char* tf_module_save(void* module, const char* path, const char* const* extra_names, const char* const* extra_values,
                     const size_t* extra_lengths, size_t n_extra);
char* tf_module_load(const char* path, void** out);
char* tf_module_deepcopy(const void* module, void** out);
char* tf_module_named_tensors(const void* module, int buffers, char** names, void*** tensors, size_t* n);
void tf_ptrs_free(void** ptrs);
char* tf_module_set_training(void* module, int on);
int tf_module_has_method(const void* module, const char* name);
char* tf_module_run(void* module, const char* method, const void* const* inputs, size_t n_inputs, void** out);

// layers.cpp: a module's children, their classes and output shapes (model.summary()).
char* tf_module_layers(void* module, const void* const* inputs, size_t n_inputs, char** out);
char* tf_tensor_set_grad(void* tensor, const void* grad);
char* tf_tensor_on_grad(void* tensor, void* callback, void* ctx, size_t index);
char* tf_backward(const void* output, const void* grad);
char* tf_autocast_bf16(int cuda, int on);
char* tf_fused_adam(void* param, const void* grad, void* exp_avg, void* exp_avg_sq, void* step,
                    const void* lr_tensor, double lr, double beta1, double beta2, double eps);
int tf_set_flush_denormal(int on);
void tf_set_graph_executor_optimize(int on);

// cuda.cpp: CUDA facts, asked of the CUDA runtime libtorch loaded (no CUDA headers needed).
int tf_cuda_device_name(int index, char* out, size_t out_len);
int tf_cuda_backend_runtime(void);

// c10d.cpp: stores, the Gloo process group, and the collectives of any process group.
char* tf_store_tcp(const char* host, uint16_t port, size_t world_size, int is_server, int64_t timeout_ms,
                   void** out);
char* tf_store_prefixed(void* store, const char* prefix, void** out);
void tf_store_free(void* store);
char* tf_store_set(void* store, const char* key, const uint8_t* value, size_t len);
char* tf_store_get(void* store, const char* key, uint8_t** out, size_t* out_len);
void tf_bytes_free(uint8_t* bytes);
char* tf_store_add(void* store, const char* key, int64_t delta, int64_t* out);
char* tf_pg_gloo(void* store, int rank, int size, int64_t timeout_ms, void** out);
void tf_pg_free(void* pg);
char* tf_pg_allreduce_sum(void* pg, void* tensor);
char* tf_pg_allreduce_sum_start(void* pg, void* tensor, void** work);
char* tf_work_wait(void* work);
void tf_work_free(void* work);
char* tf_pg_broadcast(void* pg, void* tensor, int root);
char* tf_pg_barrier(void* pg);

// ---- library: libtorchfit_cuda.so (embedded in the binary, loaded with dlopen) ----

// cuda_lib.cpp: this library's own error messages (its own kOutOfMemory).
void tf_cuda_string_free(char* s);

// c10d_nccl.cpp: the NCCL process group (a handle that c10d.cpp's functions take).
char* tf_pg_nccl(void* store, int rank, int size, int64_t timeout_ms, void** out);

// cuda_graph.cpp: CUDA graphs.
char* tf_cuda_graph_new(void** out);
char* tf_cuda_graph_capture_begin(void* graph, int device);
char* tf_cuda_graph_capture_end(void* graph);
char* tf_cuda_graph_replay(void* graph);
void tf_cuda_graph_free(void* graph);

#ifdef __cplusplus
}  // extern "C"
#endif
