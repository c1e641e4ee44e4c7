#!/usr/bin/env bash
# The whole CUDA check, on a machine with an NVIDIA GPU (see docs/cuda.md):
#   scripts/libtorch.sh env TORCHFIT_BIN=target/release/torchfit bash scripts/device-check.sh
# It checks `info`, a CUDA training run, the export on the GPU and the CPU from PyTorch,
# times the Keras example (fp32 and bf16, CUDA graphs on and off) and the large workload
# (fp32 and bf16) on CUDA beside PyTorch on the same GPU, runs the CUDA-graph equality test
# (tests/cuda_graphs.rs: graphs on and off end within 1e-6 relative), trains on two
# processes over NCCL, and times data-parallel training on the CPU over Gloo (1 and 2
# processes, beside PyTorch DDP). Everything it
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
  python3 -c "import torch; m = torch.jit.load('$out/keras/model.pt'); print(m(torch.randn(4, 10)))"
  # Precision and CUDA graphs on the Keras example: graphs replay the step when on (or auto,
  # the default); the losses of each precision should agree with graphs on and off.
  for precision in fp32 bf16; do
    for graphs in on off; do
      run="$out/kg-$precision-$graphs"; rm -rf "$run"
      "$bin" train --device cuda --quiet --out "$run" --set training.precision=$precision --set training.cuda_graphs=$graphs
    done
  done
  grep -H '"precision"\|"cuda_graphs"\|"loss"\|"train_seconds"' "$out"/kg-*/summary.json
  # The equality test itself (needs the source tree and cargo, as `make test` does).
  if command -v cargo > /dev/null; then
    cargo test --release --test cuda_graphs -- --nocapture
  else
    echo "cargo not found: skipped the equality test (cargo test --release --test cuda_graphs)"
  fi
  for i in 1 2 3; do
    rm -rf "$out/k$i"; "$bin" train --device cuda --quiet --out "$out/k$i"
    python3 bench/reference_torch.py --device cuda
  done
  for i in 1 2; do
    rm -rf "$out/l$i"; "$bin" train --device cuda --quiet --out "$out/l$i" "${large[@]}"
    python3 bench/reference_torch.py --device cuda --samples 200000 --features 256 --hidden 1024,1024 --batch-size 1024 --epochs 1
  done
  rm -rf "$out/lbf16"; "$bin" train --device cuda --quiet --out "$out/lbf16" "${large[@]}" --set training.precision=bf16
  python3 bench/reference_torch.py --device cuda --samples 200000 --features 256 --hidden 1024,1024 --batch-size 1024 --epochs 1 --precision bf16
  # Data-parallel on NCCL (docs/distributed.md): two processes on the GPUs there are (one
  # GPU is enough to run the code path, each process takes cuda:LOCAL_RANK modulo the
  # GPUs), beside one process; the losses should agree to float rounding.
  rm -rf "$out/nccl1" "$out/nccl2"
  "$bin" train --device cuda --quiet --out "$out/nccl1" --set training.epochs=10
  python3 -m torch.distributed.run --no-python --standalone --nproc-per-node 2 \
    "$bin" train --device cuda --quiet --out "$out/nccl2" --set training.epochs=10
  grep -h '"backend"\|"world_size"\|"loss"' "$out"/nccl1/summary.json "$out"/nccl2/summary.json
  grep -H '"train_seconds"\|"precision"\|"cuda_graphs"' "$out"/k*/summary.json "$out"/l*/summary.json
  # Data-parallel on the CPU over Gloo, the workload of docs/benchmarks.md's distributed
  # section (one thread per process, 1 and 2 processes, beside PyTorch DDP), on a machine
  # with cores to spare for the communication.
  dist=(--device cpu --quiet --set data.samples=50000 --set data.features=256 --set 'model.hidden=[1024, 1024]'
        --set training.batch_size=1024 --set training.epochs=1 --set 'training.metrics=[]' --set training.threads=1)
  for i in 1 2; do
    rm -rf "$out/g1-$i" "$out/g2-$i"
    "$bin" train --out "$out/g1-$i" "${dist[@]}"
    python3 -m torch.distributed.run --no-python --standalone --nproc-per-node 2 "$bin" train --out "$out/g2-$i" "${dist[@]}"
    for procs in 1 2; do
      python3 -m torch.distributed.run --standalone --nproc-per-node $procs bench/ddp.py --samples 50000
    done
  done
  grep -H '"train_seconds"\|"world_size"' "$out"/g*/summary.json
} 2>&1 | tee "$out/device-check.log"
