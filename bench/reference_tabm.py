"""The plain PyTorch loop that bench's TabM section sets `torchfit train` with `model: {kind:
tabm}` against: the `tabm` package's `TabM.make(...)` (its defaults: k=32 members, 3 blocks of
width 512, dropout 0.1) on a seeded synthetic regression table of numeric features, one epoch,
AdamW, written as the package's example trains it and timed in-process (the loop only).

Each member sees its own shuffle of the training rows (the paper's training; --share-batches:
all members see the same batch), the loss is the mean of the members' MSE losses.

    python3 bench/reference_tabm.py --samples 100000 --features 16 --batch-size 256 --threads 1

Prints one JSON line: {"train_seconds": ..., "final_loss": ..., "steps": ..., "samples": ...}.
The package is installed on first use into ~/.cache/torchfit/bench-tabular (bench/refpkgs.py).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refpkgs  # noqa: E402  (bench/refpkgs.py)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=3e-4)
    p.add_argument("--share-batches", action="store_true")
    args = p.parse_args()
    refpkgs.ensure()
    import tabm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, k = args.samples, args.k
    x = torch.randn(n, args.features)
    y = x @ torch.randn(args.features) / args.features ** 0.5 + 0.1 * torch.randn(n)
    model = tabm.TabM.make(n_num_features=args.features, cat_cardinalities=[], d_out=1, k=k)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        if args.share_batches:
            batches = torch.randperm(n).split(args.batch_size)
        else:  # [n, k]: column j is member j's own shuffle of the rows
            batches = torch.rand(n, k).argsort(dim=0).split(args.batch_size, dim=0)
        total = torch.zeros(())
        for idx in batches:
            opt.zero_grad()
            out = model(x[idx]).squeeze(-1)  # [batch, k]
            target = y[idx] if idx.ndim == 2 else y[idx].unsqueeze(-1).expand(-1, k)
            loss = torch.nn.functional.mse_loss(out, target)  # the mean of the members' losses
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
            steps += 1
        epoch_loss = (total / n).item()
    seconds = time.perf_counter() - start
    print(json.dumps({"train_seconds": seconds, "final_loss": epoch_loss, "steps": steps, "samples": n * args.epochs}))


if __name__ == "__main__":
    main()
