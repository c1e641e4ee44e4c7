#!/usr/bin/env bash
# The whole CUDA check for a session that is lent the accelerator machine, in one call:
#   ../shared/device/build-for-device.sh      # here first: .device/torchfit against libtorch 2.11
#   run(command="bash scripts/device-check.sh", carry=[".device"], timeout_s=540)
# It checks `info`, a CUDA training run, the export on the GPU from PyTorch, and times the
# Keras example and the large workload on CUDA beside PyTorch on the same GPU. Everything it
# prints is also in $OUT/device-check.log; copy the numbers into docs/cuda.md.
set -uo pipefail
out=${OUT:-/tmp/device-check}
mkdir -p "$out"
export LD_LIBRARY_PATH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
bin=.device/torchfit
large=(--set data.samples=200000 --set data.features=256 --set 'model.hidden=[1024, 1024]'
       --set training.batch_size=1024 --set training.epochs=1 --set 'training.metrics=[]')
{
  set -x
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  "$bin" info
  "$bin" train --device cuda --quiet --out "$out/keras"
  python3 -c "import torch; m = torch.jit.load('$out/keras/model.pt').to('cuda'); print(m(torch.randn(4, 10, device='cuda')))"
  for i in 1 2 3; do
    rm -rf "$out/k$i"; "$bin" train --device cuda --quiet --out "$out/k$i"
    python3 bench/reference_torch.py --device cuda
  done
  for i in 1 2; do
    rm -rf "$out/l$i"; "$bin" train --device cuda --quiet --out "$out/l$i" "${large[@]}"
    python3 bench/reference_torch.py --device cuda --samples 200000 --features 256 --hidden 1024,1024 --batch-size 1024 --epochs 1
  done
  grep -h '"train_seconds"' "$out"/k*/summary.json "$out"/l*/summary.json
} 2>&1 | tee "$out/device-check.log"
