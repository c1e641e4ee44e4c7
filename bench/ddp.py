"""The PyTorch DDP reference for torchfit's distributed training: the large workload of
bench/run.py (torchfit's default run with 256 features, hidden [1024, 1024], batch 1024,
1 epoch, MSE, Adam) trained data-parallel over gloo on the CPU, one thread per process.

Run under torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR, ...:

    python3 -m torch.distributed.run --standalone --nproc-per-node 2 bench/ddp.py --samples 50000

As torchfit generates it (data.kind random_normal, seed 42): x = randn(n, 256), y = randn(n, 1),
the same on every rank. Each epoch every rank draws the same permutation; each global batch
of --batch-size rows (the last one shorter) is split into WORLD_SIZE equal contiguous parts,
one per rank, as DistributedSampler shards an epoch; DDP averages the gradients, so a step
is the step of the global batch. Adam with torchfit's defaults (lr 1e-3, eps 1e-7).

Timed like torchfit's train_seconds: the training loop alone, from a barrier after setup to
the epoch's loss summed over the ranks (one synchronisation per epoch, as torchfit). Rank 0
prints one JSON line: {"train_seconds", "samples_per_second", "final_loss", "steps",
"world_size"}; samples/s is the global samples over that time.
"""
import argparse
import json
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--hidden", default="1024,1024")
    p.add_argument("--batch-size", type=int, default=1024, help="global batch, split across the ranks")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in each process")
    p.add_argument("--seed", type=int, default=42, help="torchfit's default config's seed")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(args.seed)
    n, bs = args.samples, args.batch_size
    x = torch.randn(n, args.features)
    y = torch.randn(n, 1)
    widths = [args.features] + [int(w) for w in args.hidden.split(",") if w] + [1]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    # Same seed on every rank, and DDP broadcasts rank 0's parameters anyway.
    model = DistributedDataParallel(nn.Sequential(*layers))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.MSELoss()

    steps = 0
    dist.barrier()
    start = time.perf_counter()
    for _ in range(args.epochs):
        perm = torch.randperm(n)  # the same on every rank: same seed, same draws
        # This rank's part of each global batch, gathered once per epoch.
        parts = [torch.tensor_split(perm[i:i + bs], world)[rank] for i in range(0, n, bs)]
        mine = torch.cat(parts)
        xs, ys = x[mine], y[mine]
        total = torch.zeros(())
        at = 0
        for part in parts:
            xb, yb = xs[at:at + len(part)], ys[at:at + len(part)]
            at += len(part)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            opt.step()
            total += loss.detach() * len(part)
            steps += 1
        dist.all_reduce(total)  # one synchronisation per epoch, as torchfit
        epoch_loss = (total / n).item()
    seconds = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"train_seconds": seconds, "samples_per_second": n * args.epochs / seconds,
                          "final_loss": epoch_loss, "steps": steps, "world_size": world}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
