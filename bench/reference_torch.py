"""The PyTorch eager reference: the same MLP, data shapes, batching and Adam as a torchfit run,
written as a PyTorch user would, timed in-process (training loop only).

Prints one JSON line: {"train_seconds": ..., "final_loss": ..., "steps": ...}.
"""
import argparse
import json
import time

import torch
from torch import nn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--features", type=int, default=10)
    p.add_argument("--hidden", type=str, default="10")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    # bf16: torch.autocast(dtype=torch.bfloat16) around forward and loss, the PyTorch twin of
    # torchfit's training.precision: bf16.
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    x = torch.randn(args.samples, args.features, device=device)
    y = torch.randn(args.samples, 1, device=device)
    widths = [args.features] + [int(w) for w in args.hidden.split(",") if w] + [1]
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.MSELoss()
    n, bs = args.samples, args.batch_size
    steps = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        perm = torch.randperm(n, device=device)
        xs, ys = x[perm], y[perm]
        total = torch.zeros((), device=device)
        for i in range(0, n, bs):
            xb, yb = xs[i:i + bs], ys[i:i + bs]
            opt.zero_grad()
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
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
