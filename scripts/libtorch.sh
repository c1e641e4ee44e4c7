#!/usr/bin/env bash
# Makes libtorch 2.13.0 available, then runs the given command with it:
#   scripts/libtorch.sh cargo build --release
# With no command, prints the libtorch directory (the `torch` package folder: lib/, include/).
#
# An existing LIBTORCH is respected. Otherwise the torch==2.13.0 wheel from the Python package
# index (libtorch plus, on Linux, its CUDA libraries: about 4.7 GB) is installed once with
# `pip install --target` into a cache outside the repository, shared by every checkout:
#   ${TORCHFIT_TORCH_HOME:-$HOME/.cache/torchfit/torch-2.13.0}
# The command also gets PYTHONPATH pointing at that install, so Python tests import the same
# torch the binary links.
set -euo pipefail
version=2.13.0

if [ -n "${LIBTORCH:-}" ]; then
  if [ ! -f "$LIBTORCH/lib/libtorch.so" ]; then
    echo "libtorch.sh: LIBTORCH=$LIBTORCH has no lib/libtorch.so" >&2
    exit 1
  fi
else
  home=${TORCHFIT_TORCH_HOME:-$HOME/.cache/torchfit/torch-$version}
  if [ ! -f "$home/torch/lib/libtorch.so" ]; then
    mkdir -p "$(dirname "$home")"
    exec 9>"$home.lock"
    flock 9
    if [ ! -f "$home/torch/lib/libtorch.so" ]; then
      echo "libtorch.sh: installing torch==$version into $home (once, ~4.7 GB)" >&2
      rm -rf "$home.partial"
      python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-warn-script-location \
        --target "$home.partial" "torch==$version" numpy safetensors pyyaml pyarrow >&2
      rm -rf "$home"
      mv "$home.partial" "$home"
    fi
    exec 9>&-
  fi
  # The Python tests also load weights.safetensors, read config.yaml with PyYAML and write
  # Parquet files with pyarrow; caches made before they did lack those packages. Added under
  # the lock, since other checkouts may be running this script on the same cache.
  if [ ! -d "$home/safetensors" ] || [ ! -d "$home/yaml" ] || [ ! -d "$home/pyarrow" ]; then
    exec 9>"$home.lock"
    flock 9
    missing=()
    [ -d "$home/safetensors" ] || missing+=(safetensors)
    [ -d "$home/yaml" ] || missing+=(pyyaml)
    [ -d "$home/pyarrow" ] || missing+=(pyarrow)
    if [ ${#missing[@]} -gt 0 ]; then
      python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$home" "${missing[@]}" >&2
    fi
    exec 9>&-
  fi
  # The serving and export tests (tests/serve_python.rs, tests/triton_export.rs) talk to
  # `torchfit serve` with Triton's own HTTP client and parse config.pbtxt with its
  # ModelConfig protobuf; onnx and onnxruntime are for the ONNX export's checks. Pinned, with their
  # dependencies listed (--no-deps), so that nothing already in the cache (numpy, torch's
  # own) is replaced. grpcio is left out: the tests load tritonclient's model_config_pb2
  # from its file, which needs only protobuf.
  if [ ! -d "$home/tritonclient" ] || [ ! -d "$home/onnx" ] || [ ! -d "$home/onnxruntime" ]; then
    exec 9>"$home.lock"
    flock 9
    if [ ! -d "$home/tritonclient" ] || [ ! -d "$home/onnx" ] || [ ! -d "$home/onnxruntime" ]; then
      python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --upgrade --target "$home" \
        tritonclient==2.73.0 geventhttpclient==2.6.1 gevent==26.9.0 greenlet==3.3.2 zope.event==6.2 \
        zope.interface==8.7 python-rapidjson==1.25 urllib3==2.8.0 brotli==1.2.1 certifi==2026.10.19.post1 \
        onnx==1.23.2 protobuf==6.33.6 ml_dtypes==0.5.4 onnxruntime==1.32.0 flatbuffers==25.12.19 packaging==26.4 >&2
    fi
    exec 9>&-
  fi
  # c10d's NCCL process group (csrc/c10d_nccl.cpp) compiles against the CUDA runtime headers
  # that the wheel brings, which include two header-only packages that torch does not pull
  # in: the CUDA compiler's runtime headers (crt/) and CCCL (nv/target). Installed once, at
  # the versions that torch's cuda-toolkit==13.0.3 names for its crt and cccl extras, into a
  # folder of their own in the cache (pip --target skips, or with --upgrade replaces, a
  # top-level folder that exists, and the wheel's `nvidia/` does); build.rs looks there.
  # Only where the wheel has NCCL, i.e. a CUDA build.
  cuda_headers="$home/cuda-headers"
  if [ -f "$home/nvidia/nccl/include/nccl.h" ] && [ ! -f "$cuda_headers/.complete" ]; then
    exec 9>"$home.lock"
    flock 9
    if [ ! -f "$cuda_headers/.complete" ]; then
      rm -rf "$cuda_headers"
      # Not fatal (e.g. offline): the build then compiles NCCL out, and this is tried again
      # next time.
      if python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
        --target "$cuda_headers" nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 >&2; then
        touch "$cuda_headers/.complete"
      else
        echo "libtorch.sh: could not install the CUDA headers; this build will have no NCCL" >&2
      fi
    fi
    exec 9>&-
  fi
  export LIBTORCH="$home/torch"
fi

if [ $# -eq 0 ]; then
  echo "$LIBTORCH"
  exit 0
fi
export PYTHONPATH="$(dirname "$LIBTORCH")${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
