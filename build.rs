//! Links torchfit against libtorch so the binary runs without `LD_LIBRARY_PATH` and sees CUDA
//! whenever the libtorch it was built with has it, and compiles the small C++ shim in `csrc/`
//! for what tch does not expose (`torch::jit::Module`'s builder API, the fused Adam
//! kernel, CUDA device names).
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

    let mut shim = cc::Build::new();
    shim.cpp(true)
        .pic(true)
        .std("c++17")
        // Warnings stay on for our own code; libtorch's headers are system includes
        // (-isystem), so their warnings are not ours to fix and do not flood the build.
        .warnings(true)
        .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi.as_str())
        .file("csrc/torchscript.cpp")
        .file("csrc/cuda.cpp");
    for dir in [torch_root.join("include"), torch_root.join("include/torch/csrc/api/include")] {
        shim.flag("-isystem").flag(dir.as_os_str());
    }
    shim.compile("torchfit_shim");
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
