//! The functions of the C++ shim linked into the binary (csrc/torchscript.cpp, csrc/cuda.cpp,
//! csrc/c10d.cpp): csrc/torchfit.h's first section, declared once on the Rust side.
//! tests/ffi_decls.rs checks that this list and the header name the same functions with the
//! same types; the CUDA library's list is in src/cuda.rs. Safe wrappers: `shim` (modules,
//! Adam, CUDA facts) and `c10d` (stores, process groups, collectives).

use std::ffi::{c_char, c_int, c_void};

extern "C" {
    // torchscript.cpp
    pub fn tf_string_free(s: *mut c_char);
    pub fn tf_module_new(class_name: *const c_char, out: *mut *mut c_void) -> *mut c_char;
    pub fn tf_module_free(module: *mut c_void);
    pub fn tf_module_register_tensor(
        module: *mut c_void,
        name: *const c_char,
        tensor: *const c_void,
        is_buffer: c_int,
    ) -> *mut c_char;
    pub fn tf_module_register_module(module: *mut c_void, name: *const c_char, child: *const c_void) -> *mut c_char;
    pub fn tf_module_define(module: *mut c_void, source: *const c_char) -> *mut c_char;
    pub fn tf_module_save(
        module: *mut c_void,
        path: *const c_char,
        extra_names: *const *const c_char,
        extra_values: *const *const c_char,
        extra_lengths: *const usize,
        n_extra: usize,
    ) -> *mut c_char;
    pub fn tf_module_load(path: *const c_char, out: *mut *mut c_void) -> *mut c_char;
    pub fn tf_module_deepcopy(module: *const c_void, out: *mut *mut c_void) -> *mut c_char;
    pub fn tf_module_named_tensors(
        module: *const c_void,
        buffers: c_int,
        names: *mut *mut c_char,
        tensors: *mut *mut *mut c_void,
        n: *mut usize,
    ) -> *mut c_char;
    pub fn tf_ptrs_free(ptrs: *mut *mut c_void);
    pub fn tf_module_set_training(module: *mut c_void, on: c_int) -> *mut c_char;
    pub fn tf_module_has_method(module: *const c_void, name: *const c_char) -> c_int;
    pub fn tf_module_run(
        module: *mut c_void,
        method: *const c_char,
        inputs: *const *const c_void,
        n_inputs: usize,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub fn tf_module_layers(
        module: *mut c_void,
        inputs: *const *const c_void,
        n_inputs: usize,
        out: *mut *mut c_char,
    ) -> *mut c_char;
    pub fn tf_tensor_set_grad(tensor: *mut c_void, grad: *const c_void) -> *mut c_char;
    pub fn tf_tensor_on_grad(tensor: *mut c_void, callback: *mut c_void, ctx: *mut c_void, index: usize)
        -> *mut c_char;
    pub fn tf_backward(output: *const c_void, grad: *const c_void) -> *mut c_char;
    pub fn tf_autocast_bf16(cuda: c_int, on: c_int) -> *mut c_char;
    pub fn tf_fused_adam(
        param: *mut c_void,
        grad: *const c_void,
        exp_avg: *mut c_void,
        exp_avg_sq: *mut c_void,
        step: *mut c_void,
        lr_tensor: *const c_void,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    ) -> *mut c_char;
    pub fn tf_set_flush_denormal(on: c_int) -> c_int;
    pub fn tf_set_graph_executor_optimize(on: c_int);

    // cuda.cpp
    pub fn tf_cuda_device_name(index: c_int, out: *mut c_char, out_len: usize) -> c_int;
    pub fn tf_cuda_backend_runtime() -> c_int;

    // c10d.cpp
    pub fn tf_store_tcp(
        host: *const c_char,
        port: u16,
        world_size: usize,
        is_server: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub fn tf_store_prefixed(store: *mut c_void, prefix: *const c_char, out: *mut *mut c_void) -> *mut c_char;
    pub fn tf_store_free(store: *mut c_void);
    pub fn tf_store_set(store: *mut c_void, key: *const c_char, value: *const u8, len: usize) -> *mut c_char;
    pub fn tf_store_get(store: *mut c_void, key: *const c_char, out: *mut *mut u8, out_len: *mut usize) -> *mut c_char;
    pub fn tf_bytes_free(bytes: *mut u8);
    pub fn tf_store_add(store: *mut c_void, key: *const c_char, delta: i64, out: *mut i64) -> *mut c_char;
    pub fn tf_pg_gloo(
        store: *mut c_void,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    pub fn tf_pg_free(pg: *mut c_void);
    pub fn tf_pg_allreduce_sum(pg: *mut c_void, tensor: *mut c_void) -> *mut c_char;
    pub fn tf_pg_allreduce_sum_start(pg: *mut c_void, tensor: *mut c_void, work: *mut *mut c_void) -> *mut c_char;
    pub fn tf_work_wait(work: *mut c_void) -> *mut c_char;
    pub fn tf_work_free(work: *mut c_void);
    pub fn tf_pg_broadcast(pg: *mut c_void, tensor: *mut c_void, root: c_int) -> *mut c_char;
    pub fn tf_pg_barrier(pg: *mut c_void) -> *mut c_char;
}
