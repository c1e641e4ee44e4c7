"""Array data for tests/arrays.rs, and a plain PyTorch training loop on it as the reference.

usage: arrays_reference.py DIR EPOCHS BATCH LR

Writes into DIR:
- images: x.npy [40, 1, 4, 4] float32, y.npy [40] int64 labels 0..2, cnn.pt, a scripted
  Conv2d -> ReLU -> Flatten -> Linear module;
- tokens: ids.npy [40, 6] int64 ids < 10, t.npy [40] float32 targets, emb.pt, a scripted
  Embedding -> Flatten -> Linear module;
- reference.json: per-epoch training losses of each module trained by a plain loop (samples
  in file order, batches of BATCH, Adam with lr LR, PyTorch's defaults): the mean over the
  epoch's samples of each one's loss, taken before its batch's step, as metrics.csv's loss is.
"""
import json
import sys

import numpy as np
import torch
from torch import nn


def train(module, x, y, loss_fn, epochs, batch, lr):
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        total = 0.0
        for start in range(0, len(x), batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            opt.zero_grad()
            loss = loss_fn(module(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        losses.append(total / len(x))
    return losses


def main():
    out, epochs, batch, lr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    torch.manual_seed(0)
    gen = np.random.default_rng(0)
    x = gen.standard_normal((40, 1, 4, 4)).astype(np.float32)
    y = (np.arange(40) % 3).astype(np.int64)
    x[y == 1, 0, 1:3, 1:3] += 1.5
    np.save(f"{out}/x.npy", x)
    np.save(f"{out}/y.npy", y)
    cnn = torch.jit.script(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)))
    cnn.save(f"{out}/cnn.pt")

    ids = gen.integers(0, 10, size=(40, 6)).astype(np.int64)
    t = (ids[:, 0] - ids[:, 5]).astype(np.float32) / 4.0
    np.save(f"{out}/ids.npy", ids)
    np.save(f"{out}/t.npy", t)
    emb = torch.jit.script(nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(24, 1)))
    emb.save(f"{out}/emb.pt")

    # The saved files, trained: the same initial weights torchfit starts from.
    cnn_losses = train(torch.jit.load(f"{out}/cnn.pt"), torch.from_numpy(x), torch.from_numpy(y),
                       nn.functional.cross_entropy, epochs, batch, lr)
    emb_losses = train(torch.jit.load(f"{out}/emb.pt"), torch.from_numpy(ids), torch.from_numpy(t).unsqueeze(1),
                       nn.functional.mse_loss, epochs, batch, lr)
    with open(f"{out}/reference.json", "w") as f:
        json.dump({"cnn": cnn_losses, "emb": emb_losses}, f)


if __name__ == "__main__":
    main()
