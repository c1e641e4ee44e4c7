//! libtorch's CUDA backend, loaded at run time rather than linked.
//!
//! Linked, libtorch_cuda and the libraries under it (cuBLAS, cuDNN, NCCL, ...) load with
//! every process and run their static initialisers: about 0.17 s of a 0.45 s start on a
//! 2-core machine, paid by every command on machines that have no GPU at all. So the binary
//! links libtorch_cpu only, and [`load_backend`], first thing in `main`, loads libtorch_cuda
//! when this machine has an NVIDIA driver. That must come before anything asks libtorch about
//! CUDA: libtorch settles whether it has CUDA at the first question. Without a driver
//! libtorch answers "no CUDA" as it always did there, so `device: cuda` is the same clear
//! error and `auto` picks the CPU.
//!
//! The CUDA half of the C++ shim (csrc/c10d_nccl.cpp, csrc/cuda_graph.cpp), which refers
//! to libtorch_cuda, is likewise a shared library of its own (build.rs), embedded in the
//! binary and loaded the first time NCCL or a CUDA graph is used ([`shim`]).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};

use crate::shim::first_line;

/// Set to 1, loads the CUDA backend even where no NVIDIA driver is found (to check a build's
/// CUDA libraries on a machine without a GPU); set to 0, never loads it.
pub const LOAD_ENV: &str = "TORCHFIT_LOAD_CUDA";

/// What [`load_backend`] did, for `torchfit info`: loaded, or why not.
static BACKEND: OnceLock<Result<(), String>> = OnceLock::new();

/// Loads libtorch_cuda when this machine has an NVIDIA driver (the driver library
/// libcuda.so.1 loads) or [`LOAD_ENV`] says so. Call it before anything else asks libtorch
/// about CUDA; calls after the first do nothing.
pub fn load_backend() {
    BACKEND.get_or_init(|| {
        match std::env::var(LOAD_ENV).ok().as_deref() {
            Some("0") => return Err(format!("{LOAD_ENV}=0")),
            Some("1") => {}
            _ if !has_driver() => return Err("no NVIDIA driver: libcuda.so.1 not found".into()),
            _ => {}
        }
        dlopen("libtorch_cuda.so", libc::RTLD_NOW | libc::RTLD_GLOBAL).map(drop).map_err(|e| e.to_string())
    });
}

/// `Ok` when [`load_backend`] loaded the CUDA backend, else why not.
pub fn backend_state() -> Result<(), &'static str> {
    match BACKEND.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(why)) => Err(why),
        None => Err("load_backend was not called"),
    }
}

fn has_driver() -> bool {
    // Kept loaded when found: libtorch_cuda would load it next anyway.
    dlopen("libcuda.so.1", libc::RTLD_LAZY | libc::RTLD_GLOBAL).is_ok()
}

/// dlopen(3) of `name`, found as the binary finds its libraries (its RUNPATH names
/// libtorch's folder).
fn dlopen(name: &str, flags: c_int) -> Result<*mut c_void> {
    let c_name = CString::new(name)?;
    // SAFETY: a NUL-terminated name; the handle is never closed (the library stays).
    let handle = unsafe { libc::dlopen(c_name.as_ptr(), flags) };
    if handle.is_null() {
        bail!("{}", dlerror());
    }
    Ok(handle)
}

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call.
    let err = unsafe { libc::dlerror() };
    if err.is_null() {
        return "unknown dlopen error".into();
    }
    unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
}

/// Declares libtorchfit_cuda.so's functions once (csrc/torchfit.h's second section; checked
/// against it by tests/ffi_decls.rs) and makes from that one list the table of function
/// pointers, [`Functions`], and its loading by name from the library.
macro_rules! cuda_library {
    ($(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?;)*) => {
        /// The library's functions, looked up by name once it is loaded.
        struct Functions {
            $($name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
        }

        impl Functions {
            /// Each function, at the address `symbol` finds for its name.
            ///
            /// # Safety
            /// `symbol` must return the address of the library's extern "C" function of
            /// that name, which has the signature declared here.
            unsafe fn load(symbol: impl Fn(&str) -> Result<*mut c_void>) -> Result<Functions> {
                Ok(Functions {
                    $($name: std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) $(-> $ret)?>(
                        symbol(stringify!($name))?,
                    ),)*
                })
            }
        }
    };
}

cuda_library! {
    // cuda_lib.cpp
    fn tf_cuda_string_free(s: *mut c_char);
    // c10d_nccl.cpp
    fn tf_pg_nccl(store: *mut c_void, rank: c_int, size: c_int, timeout_ms: i64, out: *mut *mut c_void) -> *mut c_char;
    // cuda_graph.cpp
    fn tf_cuda_graph_new(out: *mut *mut c_void) -> *mut c_char;
    fn tf_cuda_graph_capture_begin(graph: *mut c_void, device: c_int) -> *mut c_char;
    fn tf_cuda_graph_capture_end(graph: *mut c_void) -> *mut c_char;
    fn tf_cuda_graph_replay(graph: *mut c_void) -> *mut c_char;
    fn tf_cuda_graph_free(graph: *mut c_void);
}

/// A c10d store whose handle (a heap `c10::intrusive_ptr<c10d::Store>*`, csrc/c10d.cpp)
/// the NCCL process group is made over: `crate::c10d::Store`.
///
/// # Safety
/// `handle` must return a live store handle, which stays live while `self` is borrowed.
pub unsafe trait LiveStore {
    fn handle(&self) -> NonNull<c_void>;
}

/// The CUDA half of the shim: libtorchfit_cuda.so, loaded (see csrc/cuda_lib.cpp). Its
/// functions are reached through safe methods here and [`CudaGraph`].
pub struct Shim {
    functions: Functions,
}

impl Shim {
    /// `Ok` for a null return of one of the library's functions, else its message (freed).
    ///
    /// # Safety
    /// `err` must be what one of the library's functions returned, not yet checked.
    unsafe fn check(&self, err: *mut c_char) -> Result<()> {
        if err.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null return is a NUL-terminated string malloc'd by the library,
        // freed once, here.
        let message = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
        unsafe { (self.functions.tf_cuda_string_free)(err) };
        Err(anyhow!("{}", first_line(&message)))
    }

    /// A new NCCL process group (csrc/c10d_nccl.cpp) of `size` processes meeting in `store`,
    /// this one being `rank`, each collective bounded by `timeout_ms`: a handle of the kind
    /// csrc/c10d.cpp's functions take, which the caller owns and frees with `tf_pg_free`.
    pub fn pg_nccl(
        &self,
        store: &impl LiveStore,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
    ) -> Result<NonNull<c_void>> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: a live store handle (LiveStore) and a valid out-pointer.
        unsafe {
            self.check((self.functions.tf_pg_nccl)(store.handle().as_ptr(), rank, size, timeout_ms, &mut ptr))?;
        }
        NonNull::new(ptr).ok_or_else(|| anyhow!("the NCCL process group came back null"))
    }
}

/// A CUDA graph (`at::cuda::CUDAGraph`): the CUDA work queued between `capture_begin` and
/// `capture_end`, recorded once and then run again by `replay` on the same memory. Work
/// captured must not read host values that change, nor synchronise with the host.
pub struct CudaGraph {
    ptr: *mut c_void,
    /// csrc/cuda_graph.cpp's functions.
    shim: &'static Shim,
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: ptr came from tf_cuda_graph_new and is freed once, here.
        unsafe { (self.shim.functions.tf_cuda_graph_free)(self.ptr) }
    }
}

impl CudaGraph {
    /// Whether this build compiled CUDA graphs in (a CUDA libtorch with the CUDA headers).
    pub fn compiled() -> bool {
        cfg!(torchfit_cuda_graphs)
    }

    pub fn new() -> Result<CudaGraph> {
        let shim = shim()?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid out-pointer.
        unsafe { shim.check((shim.functions.tf_cuda_graph_new)(&mut ptr)) }?;
        Ok(CudaGraph { ptr, shim })
    }

    /// Starts capturing CUDA device `device`'s work, on a side stream made current.
    pub fn capture_begin(&mut self, device: usize) -> Result<()> {
        let device = c_int::try_from(device).map_err(|_| anyhow!("CUDA device index {device} out of range"))?;
        // SAFETY: live graph.
        unsafe { self.shim.check((self.shim.functions.tf_cuda_graph_capture_begin)(self.ptr, device)) }
    }

    /// Ends the capture (also after an error in the captured work) and readies the graph.
    pub fn capture_end(&mut self) -> Result<()> {
        // SAFETY: live graph.
        unsafe { self.shim.check((self.shim.functions.tf_cuda_graph_capture_end)(self.ptr)) }
    }

    pub fn replay(&mut self) -> Result<()> {
        // SAFETY: live graph.
        unsafe { self.shim.check((self.shim.functions.tf_cuda_graph_replay)(self.ptr)) }
    }
}

/// The library build.rs linked, as bytes in the binary.
static LIBRARY: &[u8] = include_bytes!(env!("TORCHFIT_CUDA_LIBRARY"));

/// The CUDA half of the shim, loaded on first use (with libtorch_cuda, which it links).
pub fn shim() -> Result<&'static Shim> {
    static SHIM: OnceLock<std::result::Result<Shim, String>> = OnceLock::new();
    SHIM.get_or_init(|| open_shim().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("cannot load torchfit's CUDA library: {e}"))
}

fn open_shim() -> Result<Shim> {
    // dlopen needs a file: an anonymous one in memory, which goes when the process does.
    // SAFETY: a NUL-terminated name; the descriptor is closed below.
    let fd = unsafe { libc::memfd_create(c"libtorchfit_cuda.so".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: fd is a new descriptor this function owns.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std::io::Write::write_all(&mut file, LIBRARY)?;
    let handle = dlopen(&format!("/proc/self/fd/{fd}"), libc::RTLD_NOW | libc::RTLD_LOCAL)?;
    drop(file);
    let symbol = |name: &str| -> Result<*mut c_void> {
        let c_name = CString::new(name)?;
        // SAFETY: a live handle and a NUL-terminated name.
        let address = unsafe { libc::dlsym(handle, c_name.as_ptr()) };
        match address.is_null() {
            true => bail!("libtorchfit_cuda.so has no {name}"),
            false => Ok(address),
        }
    };
    // SAFETY: `symbol` finds each function by its name in the library build.rs made from
    // csrc/, whose signatures csrc/torchfit.h declares and `cuda_library!` repeats (checked
    // by tests/ffi_decls.rs).
    Ok(Shim { functions: unsafe { Functions::load(symbol) }? })
}
