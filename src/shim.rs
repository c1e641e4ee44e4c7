//! Safe wrappers over the C++ shim in `csrc/`: building and saving TorchScript modules with
//! real parameters (tch only traces), libtorch's fused Adam kernel and flushing denormals
//! (`torchscript.cpp`), and CUDA facts (`cuda.cpp`); the CUDA half of the shim is wrapped in
//! `cuda`. (A saved module's extra files are read from its zip archive: `export::ExtraFiles`.)
//! c10d's stores and process groups have their own wrapper, `c10d`, which shares this file's
//! error convention (`check`).
//!
//! The shim relies on a tch internal: it takes tch's tensor pointer (`Tensor::as_ptr`,
//! `Tensor::as_mut_ptr`) to be a `torch::Tensor*` and dereferences it in C++. tch does not
//! promise that layout, which is why Cargo.toml pins tch (and torch-sys) to exactly 0.26.0;
//! moving to another tch release means checking this again.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tch::Tensor;

/// The declarations of the shim's C functions (csrc/torchfit.h), for this file and `c10d`.
pub(crate) mod ffi;

/// Turns the shim's error convention (null, or a message we must free) into a `Result`.
pub(crate) fn check(err: *mut c_char) -> Result<()> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string malloc'd by the shim.
    let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { ffi::tf_string_free(err) };
    Err(anyhow!("{}", first_line(&message)))
}

/// The first non-empty line of a libtorch error: its messages run on with C++ backtraces,
/// and the first line says what went wrong.
pub fn first_line(message: &str) -> &str {
    message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("libtorch error")
}

pub(crate) fn c_string(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| anyhow!("{s:?} contains a NUL byte"))
}

fn c_path(path: &Path) -> Result<CString> {
    c_string(path.to_str().with_context(|| format!("{} is not valid UTF-8", path.display()))?)
}

/// A `torch::jit::Module` under construction.
pub struct ScriptModule {
    ptr: *mut c_void,
}

impl Drop for ScriptModule {
    fn drop(&mut self) {
        // SAFETY: ptr came from tf_module_new and is freed once, here.
        unsafe { ffi::tf_module_free(self.ptr) }
    }
}

impl ScriptModule {
    /// An empty module of TorchScript class `class_name` (e.g. `__torch__.torchfit.Mlp`).
    pub fn new(class_name: &str) -> Result<ScriptModule> {
        let name = c_string(class_name)?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer.
        check(unsafe { ffi::tf_module_new(name.as_ptr(), &mut ptr) })?;
        Ok(ScriptModule { ptr })
    }

    /// Adds a CPU copy of `tensor` as a parameter (requires_grad) or a buffer.
    pub fn register_tensor(&mut self, name: &str, tensor: &Tensor, buffer: bool) -> Result<()> {
        let name = c_string(name)?;
        // SAFETY: tch's tensor pointer is a torch::Tensor*, alive for the call.
        check(unsafe {
            ffi::tf_module_register_tensor(self.ptr, name.as_ptr(), tensor.as_ptr() as *const c_void, buffer as c_int)
        })
    }

    pub fn register_module(&mut self, name: &str, child: &ScriptModule) -> Result<()> {
        let name = c_string(name)?;
        // SAFETY: both pointers are live modules.
        check(unsafe { ffi::tf_module_register_module(self.ptr, name.as_ptr(), child.ptr) })
    }

    /// Compiles TorchScript methods (Python-syntax `def`s taking `self`) into the module.
    pub fn define(&mut self, source: &str) -> Result<()> {
        let source = c_string(source)?;
        // SAFETY: live module, valid C string.
        check(unsafe { ffi::tf_module_define(self.ptr, source.as_ptr()) })
    }

    /// Saves the module, with `extra` files stored as `extra/<name>` in the archive
    /// (readable with `torch.jit.load(path, _extra_files={name: ""})`).
    pub fn save(&self, path: &Path, extra: &[(&str, &[u8])]) -> Result<()> {
        let path = c_path(path)?;
        let names = extra.iter().map(|(n, _)| c_string(n)).collect::<Result<Vec<_>>>()?;
        let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let value_ptrs: Vec<*const c_char> = extra.iter().map(|(_, v)| v.as_ptr() as *const c_char).collect();
        let lengths: Vec<usize> = extra.iter().map(|(_, v)| v.len()).collect();
        // SAFETY: the three arrays have extra.len() entries and outlive the call.
        check(unsafe {
            ffi::tf_module_save(
                self.ptr,
                path.as_ptr(),
                name_ptrs.as_ptr(),
                value_ptrs.as_ptr(),
                lengths.as_ptr(),
                extra.len(),
            )
        })
    }
}

impl ScriptModule {
    /// Loads a TorchScript file (what `torch.jit.save` writes) onto the CPU.
    pub fn load(path: &Path) -> Result<ScriptModule> {
        let c = c_path(path)?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid C string and out-pointer.
        check(unsafe { ffi::tf_module_load(c.as_ptr(), &mut ptr) })?;
        Ok(ScriptModule { ptr })
    }

    /// A deep copy: its own parameters and buffers, the same methods.
    pub fn deep_copy(&self) -> Result<ScriptModule> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: live module and out-pointer.
        check(unsafe { ffi::tf_module_deepcopy(self.ptr, &mut ptr) })?;
        Ok(ScriptModule { ptr })
    }

    /// The parameters (or buffers) of the module and its submodules, in `named_parameters()`
    /// order, sharing the module's tensors.
    pub fn named_tensors(&self, buffers: bool) -> Result<Vec<(String, Tensor)>> {
        let (mut names, mut tensors, mut n) = (std::ptr::null_mut(), std::ptr::null_mut(), 0usize);
        // SAFETY: live module, out-pointers; on success the shim hands over `names` and the
        // array of `n` new tensor pointers.
        check(unsafe {
            ffi::tf_module_named_tensors(self.ptr, c_int::from(buffers), &mut names, &mut tensors, &mut n)
        })?;
        // SAFETY: `names` is a NUL-terminated malloc'd string, freed once here.
        let joined = unsafe { CStr::from_ptr(names) }.to_string_lossy().into_owned();
        unsafe { ffi::tf_string_free(names) };
        // SAFETY: `tensors` holds `n` torch::Tensor* that we now own, each wrapped once.
        let owned: Vec<Tensor> =
            (0..n).map(|i| unsafe { Tensor::from_ptr(*tensors.add(i) as *mut torch_sys::C_tensor) }).collect();
        unsafe { ffi::tf_ptrs_free(tensors) };
        let names = if n == 0 { Vec::new() } else { joined.split('\n').map(str::to_string).collect() };
        Ok(names.into_iter().zip(owned).collect())
    }

    /// `module.train(on)`: dropout and BatchNorm behave as in training, or as in evaluation.
    pub fn set_training(&self, on: bool) -> Result<()> {
        // SAFETY: live module.
        check(unsafe { ffi::tf_module_set_training(self.ptr, c_int::from(on)) })
    }

    pub fn has_method(&self, name: &str) -> bool {
        let Ok(name) = c_string(name) else { return false };
        // SAFETY: live module, valid C string.
        unsafe { ffi::tf_module_has_method(self.ptr, name.as_ptr()) != 0 }
    }

    /// Runs `method` on tensor arguments; its result must be a tensor.
    pub fn run(&self, method: &str, inputs: &[&Tensor]) -> Result<Tensor> {
        let method = c_string(method)?;
        let ptrs: Vec<*const c_void> = inputs.iter().map(|t| t.as_ptr() as *const c_void).collect();
        let mut out = std::ptr::null_mut();
        // SAFETY: live module, tensor pointers alive for the call; on success `out` is a new
        // torch::Tensor* that we own.
        check(unsafe { ffi::tf_module_run(self.ptr, method.as_ptr(), ptrs.as_ptr(), ptrs.len(), &mut out) })?;
        Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
    }
}

/// A child module of a TorchScript module's root, as `ScriptModule::layers` finds it.
pub struct ChildLayer {
    pub name: String,
    /// Its TorchScript class's qualified name (`__torch__.torch.nn.modules.linear.Linear`).
    pub class: String,
    /// The shape of what the root's forward got from it, when the call was seen.
    pub output: Option<Vec<i64>>,
}

impl ScriptModule {
    /// The root's children in order, each with its class and, run on `inputs`, the shape of
    /// its output (see csrc/layers.cpp).
    pub fn layers(&self, inputs: &[&Tensor]) -> Result<Vec<ChildLayer>> {
        let ptrs: Vec<*const c_void> = inputs.iter().map(|t| t.as_ptr() as *const c_void).collect();
        let mut text = std::ptr::null_mut();
        // SAFETY: live module, tensor pointers alive for the call; on success `text` is a
        // NUL-terminated malloc'd string, freed once here.
        check(unsafe { ffi::tf_module_layers(self.ptr, ptrs.as_ptr(), ptrs.len(), &mut text) })?;
        let lines = unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned();
        unsafe { ffi::tf_string_free(text) };
        Ok(lines
            .lines()
            .map(|line| {
                let mut fields = line.split('\t');
                let (name, class, shape) =
                    (fields.next().unwrap_or(""), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
                let output = (!shape.is_empty()).then(|| shape.split(',').filter_map(|d| d.parse().ok()).collect());
                ChildLayer { name: name.to_string(), class: class.to_string(), output }
            })
            .collect())
    }
}

// SAFETY: a torch::jit::Module is a handle onto heap objects with no thread affinity; the
// wrapper is used by one thread at a time (it is not Sync).
unsafe impl Send for ScriptModule {}

/// Makes `grad` the `.grad` of `tensor`: autograd then accumulates into it in place.
pub fn set_grad(tensor: &mut Tensor, grad: &Tensor) -> Result<()> {
    // SAFETY: both are live tch tensors.
    check(unsafe { ffi::tf_tensor_set_grad(tensor.as_mut_ptr() as *mut c_void, grad.as_ptr() as *const c_void) })
}

/// Has autograd call `callback(ctx, index)` each time it has accumulated a gradient into
/// `tensor`'s `.grad`.
///
/// # Safety
/// `ctx` must stay valid, and `callback` callable with it, for as long as a backward pass
/// may reach `tensor`; `callback` must not unwind.
pub unsafe fn on_grad(
    tensor: &mut Tensor,
    callback: extern "C" fn(*mut c_void, usize),
    ctx: *mut c_void,
    index: usize,
) -> Result<()> {
    // SAFETY: a live tensor; the caller vouches for ctx and callback.
    check(unsafe { ffi::tf_tensor_on_grad(tensor.as_mut_ptr() as *mut c_void, callback as *mut c_void, ctx, index) })
}

/// `output.backward(grad)`: autograd's pass from a non-scalar output, given its gradient
/// (cast to the output's dtype), accumulating into the leaves' `.grad`.
pub fn backward(output: &Tensor, grad: &Tensor) -> Result<()> {
    // SAFETY: both are live tch tensors.
    check(unsafe { ffi::tf_backward(output.as_ptr() as *const c_void, grad.as_ptr() as *const c_void) })
}

/// Turns bf16 autocast on or off for the CPU or CUDA, in this thread.
pub fn autocast_bf16(cuda: bool, on: bool) -> Result<()> {
    // SAFETY: no pointers.
    check(unsafe { ffi::tf_autocast_bf16(c_int::from(cuda), c_int::from(on)) })
}

/// One Adam step (PyTorch's rule) on flat buffers with libtorch's fused kernel; `step` is a
/// float scalar tensor that the call advances by one before the update. The rate is `lr`,
/// or with `lr_tensor` a float scalar on the parameters' device, read when the kernel runs
/// (what a CUDA graph needs).
#[allow(clippy::too_many_arguments)]
pub fn fused_adam(
    param: &mut Tensor,
    grad: &Tensor,
    exp_avg: &mut Tensor,
    exp_avg_sq: &mut Tensor,
    step: &mut Tensor,
    lr_tensor: Option<&Tensor>,
    lr: f64,
    betas: (f64, f64),
    eps: f64,
) -> Result<()> {
    // SAFETY: tch's tensor pointers are torch::Tensor*, alive for the call; the kernel
    // updates param, exp_avg, exp_avg_sq and step in place.
    check(unsafe {
        ffi::tf_fused_adam(
            param.as_mut_ptr() as *mut c_void,
            grad.as_ptr() as *const c_void,
            exp_avg.as_mut_ptr() as *mut c_void,
            exp_avg_sq.as_mut_ptr() as *mut c_void,
            step.as_mut_ptr() as *mut c_void,
            lr_tensor.map_or(std::ptr::null(), |t| t.as_ptr() as *const c_void),
            lr,
            betas.0,
            betas.1,
            eps,
        )
    })
}

/// The name of CUDA device `index` (e.g. "NVIDIA H200"), from the CUDA runtime libtorch
/// loaded; `None` when there is none (a CPU-only libtorch, no driver) or the index is bad.
pub fn cuda_device_name(index: usize) -> Option<String> {
    let index = c_int::try_from(index).ok()?;
    // cudaDeviceProp's name field is 256 bytes, NUL included.
    let mut name = [0 as c_char; 256];
    // SAFETY: `name` is writable for its whole length, which is what the call is told.
    let status = unsafe { ffi::tf_cuda_device_name(index, name.as_mut_ptr(), name.len()) };
    if status != 0 {
        return None;
    }
    // SAFETY: on success the shim wrote a NUL-terminated string within `name`.
    Some(unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned())
}

/// Flushes denormal floats to zero in this thread and the threads it starts from now on;
/// whether the CPU has that mode.
pub fn set_flush_denormal(on: bool) -> bool {
    // SAFETY: no pointers.
    unsafe { ffi::tf_set_flush_denormal(c_int::from(on)) != 0 }
}

/// Turns the TorchScript graph executor's optimisations on or off in the calling thread.
pub fn set_graph_executor_optimize(on: bool) {
    // SAFETY: no pointers.
    unsafe { ffi::tf_set_graph_executor_optimize(c_int::from(on)) }
}

/// The CUDA runtime version of libtorch's registered CUDA backend, as `13.0`; `None` when
/// libtorch has none (libtorch_cuda not loaded, or a CPU-only libtorch).
pub fn cuda_backend_runtime() -> Option<String> {
    // SAFETY: no arguments.
    let version = unsafe { ffi::tf_cuda_backend_runtime() };
    (version > 0).then(|| format!("{}.{}", version / 1000, version % 1000 / 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_device_names_exist_exactly_for_the_devices_libtorch_sees() {
        let count = tch::Cuda::device_count().max(0) as usize;
        for i in 0..count {
            let name = cuda_device_name(i);
            assert!(name.as_deref().is_some_and(|n| !n.is_empty()), "cuda:{i}: {name:?}");
        }
        assert_eq!(cuda_device_name(count), None);
        assert_eq!(cuda_device_name(usize::MAX), None);
    }
}
