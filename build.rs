//! Links torchfit against libtorch so the binary runs without `LD_LIBRARY_PATH` and sees CUDA
//! whenever the libtorch it was built with has it, and compiles the small C++ shim in `csrc/`
//! for what tch does not expose (`torch::jit::Module`'s builder API, the fused Adam
//! kernel, CUDA device names, c10d's stores and process groups).
use std::path::{Path, PathBuf};

fn main() {
    // torch-sys publishes the libtorch lib directory it linked against; only crates that
    // depend on torch-sys directly receive it, which is why Cargo.toml names torch-sys.
    let lib_dir = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            eprintln!("torch-sys did not report a libtorch directory; set LIBTORCH (see README)");
            std::process::exit(1);
        }
    };
    let torch_root = lib_dir.parent().unwrap_or(&lib_dir).to_path_buf();

    // Record where libtorch lives in the binary itself (RUNPATH), so that `torchfit` and the
    // test binaries find libtorch*.so without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    // rustc links with --as-needed, which drops any library none of our symbols reference.
    // libtorch_cuda.so is such a library: it registers the CUDA backend from static
    // initialisers when it is loaded, so dropping it silently turns CUDA off.
    // --no-as-needed applies to every library named after it on the command line.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    // libtorch.so is a thin library whose dependencies are libtorch_cpu.so and, in CUDA
    // builds, libtorch_cuda.so: linking it (kept by the flag above) loads the CUDA backend.
    println!("cargo:rustc-link-arg=-ltorch");

    // libtorch's C++ ABI: torch-sys compiles its own C++ glue with
    // -D_GLIBCXX_USE_CXX11_ABI=$LIBTORCH_CXX11_ABI (default 1, what the PyPI wheels use), and
    // our shim passes std::string across the same libtorch, so it must use the same value.
    // (With LIBTORCH_USE_PYTORCH torch-sys asks Python instead; the wheels all say 1.)
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());

    // Three libraries, so that each file gets only the include folders and macros it needs.
    // The shim proper: TorchScript modules, fused Adam, CUDA device names.
    cpp_build(&torch_root, &cxx11_abi).file("csrc/torchscript.cpp").file("csrc/cuda.cpp").compile("torchfit_shim");
    // c10d's stores, the Gloo process group and the collectives. libtorch ships
    // ProcessGroupGloo.hpp but not the gloo headers it includes: csrc/gloo_decl declares the
    // few names it uses (its README says why that is safe), for this file only.
    cpp_build(&torch_root, &cxx11_abi)
        .define("USE_C10D_GLOO", None)
        .include("csrc/gloo_decl")
        .file("csrc/c10d.cpp")
        .compile("torchfit_c10d");
    // c10d's NCCL process group, when this libtorch has CUDA and the headers it needs are
    // beside it; otherwise the same file compiles to a stub that says NCCL is missing.
    let mut nccl = cpp_build(&torch_root, &cxx11_abi);
    println!("cargo::rustc-check-cfg=cfg(torchfit_nccl)");
    match nccl_includes(&torch_root) {
        Ok(dirs) => {
            nccl.define("TORCHFIT_NCCL", None).define("USE_C10D_NCCL", None).define("USE_CUDA", None);
            for dir in dirs {
                nccl.flag("-isystem").flag(dir.as_os_str());
            }
            // ProcessGroupNCCL lives in libtorch_cuda (which torch-sys links); the CUDA
            // device count the file asks for first, in libc10_cuda.
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
            // Lets the tests expect the error of a build with NCCL, or of one without.
            println!("cargo:rustc-cfg=torchfit_nccl");
        }
        Err(Some(missing)) => {
            println!(
                "cargo:warning=NCCL compiled out: {missing} not found beside this CUDA libtorch \
                 (scripts/libtorch.sh installs it; see build.rs)"
            );
            // Build again once scripts/libtorch.sh has installed the headers.
            println!("cargo:rerun-if-changed={}", cuda_headers_marker(&torch_root).display());
        }
        // A CPU-only libtorch: no NCCL to have.
        Err(None) => {}
    }
    nccl.file("csrc/c10d_nccl.cpp").compile("torchfit_nccl");
    // csrc/cuda.cpp looks the CUDA runtime up with dlsym; glibc before 2.34 keeps it in libdl.
    println!("cargo:rustc-link-lib=dl");
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=build.rs");

    println!("cargo:rustc-env=TORCHFIT_LIBTORCH_VERSION={}", libtorch_version(&torch_root));
    // Where the `torch` Python package of this libtorch lives (a pip install), for the tests
    // that load torchfit's exports in PyTorch.
    let python_path = torch_root.parent().unwrap_or(&torch_root);
    println!("cargo:rustc-env=TORCHFIT_TORCH_PYTHONPATH={}", python_path.display());
}

/// A C++17 build against libtorch's headers with the C++ ABI libtorch uses.
fn cpp_build(torch_root: &Path, cxx11_abi: &str) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        // Warnings stay on for our own code; libtorch's headers are system includes
        // (-isystem), so their warnings are not ours to fix and do not flood the build.
        .warnings(true)
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi);
    for dir in [torch_root.join("include"), torch_root.join("include/torch/csrc/api/include")] {
        build.flag("-isystem").flag(dir.as_os_str());
    }
    build
}

/// The folder scripts/libtorch.sh installs the CUDA compiler's runtime headers and CCCL into,
/// beside the torch package, and the file it writes there once they are complete.
fn cuda_headers_marker(torch_root: &Path) -> PathBuf {
    torch_root.parent().unwrap_or(torch_root).join("cuda-headers/.complete")
}

/// The include folders csrc/c10d_nccl.cpp needs, found in a pip-installed torch's site
/// folder: nccl.h (nvidia-nccl-cu*, which torch requires, so its version is the one libtorch
/// was built with: that matters, the NCCL group's options hold an `ncclConfig_t`), the CUDA
/// runtime headers (nvidia/cu13/include, or cu12's nvidia/cuda_runtime/include), and the two
/// header-only packages those include (nvidia-cuda-crt and nvidia-cuda-cccl, which
/// scripts/libtorch.sh installs into cuda-headers/). Only the pip layout is searched, not a
/// system CUDA whose version could differ from libtorch's.
///
/// `Err(None)`: a libtorch without CUDA (no libtorch_cuda.so), so no NCCL to build;
/// `Err(Some(header))`: a CUDA libtorch, but `header` is nowhere to be found.
fn nccl_includes(torch_root: &Path) -> Result<Vec<PathBuf>, Option<&'static str>> {
    if !torch_root.join("lib/libtorch_cuda.so").exists() {
        return Err(None);
    }
    let site = torch_root.parent().unwrap_or(torch_root);
    // Every include folder of every NVIDIA package (CCCL keeps its own under include/cccl).
    let mut candidates = Vec::new();
    for packages in [site.join("nvidia"), site.join("cuda-headers/nvidia")] {
        let Ok(entries) = std::fs::read_dir(&packages) else { continue };
        let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path().join("include")).collect();
        dirs.sort();
        for dir in dirs {
            let cccl = dir.join("cccl");
            candidates.push(dir);
            candidates.push(cccl);
        }
    }
    let mut found: Vec<PathBuf> = Vec::new();
    for header in ["nccl.h", "cuda_runtime_api.h", "crt/host_config.h", "nv/target"] {
        let dir = candidates.iter().find(|d| d.join(header).exists()).ok_or(Some(header))?;
        if !found.contains(dir) {
            found.push(dir.clone());
        }
    }
    Ok(found)
}

/// The libtorch version, from a pip install's `version.py` or a libtorch zip's `build-version`.
fn libtorch_version(torch_root: &Path) -> String {
    let from_python = std::fs::read_to_string(torch_root.join("version.py")).ok().and_then(|text| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix("__version__")?;
            Some(rest.trim_start_matches([' ', '=']).trim().trim_matches('\'').to_string())
        })
    });
    from_python
        .or_else(|| std::fs::read_to_string(torch_root.join("build-version")).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}
