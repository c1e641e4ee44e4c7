//! Links torchfit against libtorch so the binary runs without `LD_LIBRARY_PATH`, and compiles
//! the small C++ shim in `csrc/` for what tch does not expose (`torch::jit::Module`'s builder
//! API, the fused Adam kernel, CUDA device names, c10d's stores and process groups, CUDA
//! graphs); its CUDA half becomes a shared library of its own that the binary embeds.
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
    // Nothing here links libtorch_cuda: rustc's --as-needed drops the one torch-sys names,
    // since no symbol of ours refers to it. The CUDA backend (libtorch_cuda and cuBLAS,
    // cuDNN, NCCL, ... under it) costs every process ~0.17 s of start-up to load, so
    // src/cuda.rs loads it at run time, when this machine has an NVIDIA driver; the CUDA
    // half of the shim is a library of its own for the same reason (below).

    // libtorch's C++ ABI: torch-sys compiles its own C++ glue with
    // -D_GLIBCXX_USE_CXX11_ABI=$LIBTORCH_CXX11_ABI (default 1, what the PyPI wheels use), and
    // our shim passes std::string across the same libtorch, so it must use the same value.
    // (With LIBTORCH_USE_PYTORCH torch-sys asks Python instead; the wheels all say 1.)
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let cxx11_abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());

    // Three libraries, so that each file gets only the include folders and macros it needs.
    // The shim proper: TorchScript modules, fused Adam, CUDA device names.
    cpp_build(&torch_root, &cxx11_abi)
        .file("csrc/torchscript.cpp")
        .file("csrc/layers.cpp")
        .file("csrc/cuda.cpp")
        .compile("torchfit_shim");
    // c10d's stores, the Gloo process group and the collectives. libtorch ships
    // ProcessGroupGloo.hpp but not the gloo headers it includes: csrc/gloo_decl declares the
    // few names it uses (its README says why that is safe), for this file only.
    cpp_build(&torch_root, &cxx11_abi)
        .define("USE_C10D_GLOO", None)
        .include("csrc/gloo_decl")
        .file("csrc/c10d.cpp")
        .compile("torchfit_c10d");
    // The CUDA half of the shim (c10d's NCCL process group, CUDA graphs) refers to
    // libtorch_cuda, so it is a shared library of its own, embedded in the binary and loaded
    // only when it is used (src/cuda.rs). Its files need the CUDA headers beside a CUDA
    // libtorch; without them they compile to stubs that say what this build lacks.
    let mut nccl = cpp_build(&torch_root, &cxx11_abi);
    println!("cargo::rustc-check-cfg=cfg(torchfit_nccl)");
    match cuda_includes(
        &torch_root,
        &["nccl.h", CUDA_RUNTIME_HEADERS[0], CUDA_RUNTIME_HEADERS[1], CUDA_RUNTIME_HEADERS[2]],
    ) {
        Ok(dirs) => {
            nccl.define("TORCHFIT_NCCL", None).define("USE_C10D_NCCL", None).define("USE_CUDA", None);
            for dir in dirs {
                nccl.flag("-isystem").flag(dir.as_os_str());
            }
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
    nccl.file("csrc/c10d_nccl.cpp");
    // CUDA graphs (at::cuda::CUDAGraph), with the same CUDA headers less NCCL's.
    let mut graphs = cpp_build(&torch_root, &cxx11_abi);
    println!("cargo::rustc-check-cfg=cfg(torchfit_cuda_graphs)");
    if let Ok(dirs) = cuda_includes(&torch_root, &CUDA_RUNTIME_HEADERS) {
        graphs.define("TORCHFIT_CUDA_GRAPHS", None).define("USE_CUDA", None);
        for dir in dirs {
            graphs.flag("-isystem").flag(dir.as_os_str());
        }
        println!("cargo:rustc-cfg=torchfit_cuda_graphs");
    }
    graphs.file("csrc/cuda_graph.cpp").file("csrc/cuda_lib.cpp");
    let library = link_shared(&lib_dir, &[nccl, graphs], "libtorchfit_cuda.so");
    println!("cargo:rustc-env=TORCHFIT_CUDA_LIBRARY={}", library.display());
    // csrc/cuda.cpp looks the CUDA runtime up with dlsym; glibc before 2.34 keeps it in libdl.
    println!("cargo:rustc-link-lib=dl");
    // Where the shim's static libraries are, for tests/ffi_decls.rs's `nm` check.
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rustc-env=TORCHFIT_SHIM_OUT_DIR={out_dir}");
    // Every file of csrc/ (a folder is scanned whole): the .cpp files, csrc/torchfit.h that
    // declares their extern "C" functions (and that each includes, so the compiler checks
    // them against it), guarded.h and gloo_decl/.
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

/// Compiles `builds` and links their objects into the shared library `name` in OUT_DIR,
/// against libtorch's CUDA libraries where this libtorch has them (found at run time through
/// the RUNPATH recorded here, as the binary finds its own).
fn link_shared(lib_dir: &Path, builds: &[cc::Build], name: &str) -> PathBuf {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join(name);
    let mut command = builds[0].get_compiler().to_command();
    command.arg("-shared").arg("-o").arg(&out);
    for build in builds {
        command.args(build.compile_intermediates());
    }
    command.arg(format!("-L{}", lib_dir.display())).arg(format!("-Wl,-rpath,{}", lib_dir.display()));
    if lib_dir.join("libtorch_cuda.so").exists() {
        command.args(["-ltorch_cuda", "-lc10_cuda"]);
    }
    command.args(["-ltorch_cpu", "-lc10"]);
    match command.status() {
        Ok(status) if status.success() => out,
        result => {
            eprintln!("linking {} failed ({result:?}): {command:?}", out.display());
            std::process::exit(1);
        }
    }
}

/// The folder scripts/libtorch.sh installs the CUDA compiler's runtime headers and CCCL into,
/// beside the torch package, and the file it writes there once they are complete.
fn cuda_headers_marker(torch_root: &Path) -> PathBuf {
    torch_root.parent().unwrap_or(torch_root).join("cuda-headers/.complete")
}

/// What CUDA-facing C++ includes: the CUDA runtime API, and the two header-only packages it
/// pulls in (the compiler's runtime headers, CCCL).
const CUDA_RUNTIME_HEADERS: [&str; 3] = ["cuda_runtime_api.h", "crt/host_config.h", "nv/target"];

/// The include folders holding `headers` (csrc/c10d_nccl.cpp needs nccl.h and the CUDA
/// runtime's; csrc/cuda_graph.cpp the CUDA runtime's), found in a pip-installed torch's site
/// folder: nccl.h (nvidia-nccl-cu*, which torch requires, so its version is the one libtorch
/// was built with: that matters, the NCCL group's options hold an `ncclConfig_t`), the CUDA
/// runtime headers (nvidia/cu13/include, or cu12's nvidia/cuda_runtime/include), and the two
/// header-only packages those include (nvidia-cuda-crt and nvidia-cuda-cccl, which
/// scripts/libtorch.sh installs into cuda-headers/). Only the pip layout is searched, not a
/// system CUDA whose version could differ from libtorch's.
///
/// `Err(None)`: a libtorch without CUDA (no libtorch_cuda.so), so no NCCL to build;
/// `Err(Some(header))`: a CUDA libtorch, but `header` is nowhere to be found.
fn cuda_includes(torch_root: &Path, headers: &[&'static str]) -> Result<Vec<PathBuf>, Option<&'static str>> {
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
    for &header in headers {
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
