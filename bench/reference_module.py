"""The plain PyTorch loop that bench's model section sets torchfit against: one of
bench/modules.py's modules trained on the same x.npy/y.npy, with the same batch size, epochs,
threads and Adam (PyTorch's own defaults, lr 1e-3), written as a PyTorch user would and timed
in-process (the training loop only).

    python3 bench/reference_module.py cnn X.npy Y.npy NET.pt --mode scripted   # torch.jit.load(NET.pt)
    python3 bench/reference_module.py cnn X.npy Y.npy NET.pt --mode eager      # the nn.Module, NET.pt's weights

Prints one JSON line: {"train_seconds": ..., "final_loss": ..., "steps": ...}.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import modules  # noqa: E402  (bench/modules.py)


def load_module(kind, path, mode):
    scripted = torch.jit.load(path)
    if mode == "scripted":
        return scripted
    module = modules.MODULES[kind]()
    module.load_state_dict(scripted.state_dict())
    return module


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=sorted(modules.MODULES))
    p.add_argument("x")
    p.add_argument("y")
    p.add_argument("module", help="the torch.jit.script(...).save(...) file torchfit trains too")
    p.add_argument("--mode", choices=["scripted", "eager"], default="scripted")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(args.x))
    y = torch.from_numpy(np.load(args.y))
    if args.kind == "lstm":
        y = y.reshape(-1, 1)
    model = load_module(args.kind, args.module, args.mode)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss() if args.kind == "cnn" else nn.MSELoss()
    n, bs = len(x), args.batch_size
    steps = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        perm = torch.randperm(n)
        xs, ys = x[perm], y[perm]
        total = torch.zeros(())
        for i in range(0, n, bs):
            xb, yb = xs[i:i + bs], ys[i:i + bs]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach() * xb.shape[0]
            steps += 1
        epoch_loss = (total / n).item()  # one synchronisation per epoch, as torchfit
    seconds = time.perf_counter() - start
    print(json.dumps({"train_seconds": seconds, "final_loss": epoch_loss, "steps": steps}))


if __name__ == "__main__":
    main()
