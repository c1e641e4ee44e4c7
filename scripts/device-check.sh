#!/usr/bin/env bash
# The whole CUDA check, on a machine with an NVIDIA GPU (see docs/cuda.md):
#   scripts/libtorch.sh env TORCHFIT_BIN=target/release/torchfit bash scripts/device-check.sh
# It checks `info`, a CUDA training run, the export on the GPU from PyTorch, and times the
# Keras example and the large workload on CUDA beside PyTorch on the same GPU, and trains
# on two processes over NCCL. Everything it
# prints is also in $OUT/device-check.log (OUT defaults to /tmp/device-check).
# TORCHFIT_BIN defaults to .device/torchfit, where the project's own GPU sessions put a
# binary built for the GPU machine, and else to target/release/torchfit.
set -uo pipefail
out=${OUT:-/tmp/device-check}
mkdir -p "$out"
export LD_LIBRARY_PATH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
if [ -n "${TORCHFIT_BIN:-}" ]; then bin=$TORCHFIT_BIN
elif [ -x .device/torchfit ]; then bin=.device/torchfit
else bin=target/release/torchfit
fi
large=(--set data.samples=200000 --set data.features=256 --set 'model.hidden=[1024, 1024]'
       --set training.batch_size=1024 --set training.epochs=1 --set 'training.metrics=[]')
{
  set -x
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  "$bin" info
  rm -rf "$out/keras"; "$bin" train --device cuda --quiet --out "$out/keras"
  python3 -c "import torch; m = torch.jit.load('$out/keras/model.pt').to('cuda'); print(m(torch.randn(4, 10, device='cuda')))"
  for i in 1 2 3; do
    rm -rf "$out/k$i"; "$bin" train --device cuda --quiet --out "$out/k$i"
    python3 bench/reference_torch.py --device cuda
  done
  for i in 1 2; do
    rm -rf "$out/l$i"; "$bin" train --device cuda --quiet --out "$out/l$i" "${large[@]}"
    python3 bench/reference_torch.py --device cuda --samples 200000 --features 256 --hidden 1024,1024 --batch-size 1024 --epochs 1
  done
  # Data-parallel on NCCL (docs/distributed.md): two processes on the GPUs there are (one
  # GPU is enough to run the code path, each process takes cuda:LOCAL_RANK modulo the
  # GPUs), beside one process; the losses should agree to float rounding.
  rm -rf "$out/nccl1" "$out/nccl2"
  "$bin" train --device cuda --quiet --out "$out/nccl1" --set training.epochs=10
  python3 -m torch.distributed.run --no-python --standalone --nproc-per-node 2 \
    "$bin" train --device cuda --quiet --out "$out/nccl2" --set training.epochs=10
  grep -h '"backend"\|"world_size"\|"loss"' "$out"/nccl1/summary.json "$out"/nccl2/summary.json
  grep -h '"train_seconds"' "$out"/k*/summary.json "$out"/l*/summary.json
} 2>&1 | tee "$out/device-check.log"
