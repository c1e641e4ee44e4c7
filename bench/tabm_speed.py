"""TabM's training speed: torchfit's `model.kind: tabm` against the `tabm` package's module in
the plain PyTorch loop of its example (shared batches, the mean of the members' losses, Adam),
on the same rows with the same threads: samples/s of one epoch (the last of EPOCHS; 1 by
default, as one epoch of the default TabM on 20,000 rows runs for a minute on one core and the
first step's warm-up is lost in it), the best of REPEATS interleaved tries.

usage: PYTHONPATH=<torch>:<dir with tabm.py> python3 bench/tabm_speed.py TORCHFIT [ROWS] [THREADS]

The defaults are TabM.make's (k 32, 3 blocks of 512, dropout 0.1), regression on ROWS x 10
numeric features (20,000), batches of 256, shuffled, float32 on the CPU.
"""
import csv
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

FEATURES, BATCH, REPEATS, EPOCHS = 10, 256, 2, 1


def data(folder, rows):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    np.save(os.path.join(folder, "x.npy"), x)
    np.save(os.path.join(folder, "y.npy"), y)
    return torch.from_numpy(x), torch.from_numpy(y)


def package_epoch(x, y, threads):
    """Seconds of the last epoch of the package's module in a plain loop."""
    import tabm
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = tabm.TabM.make(n_num_features=FEATURES, d_out=1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m.train()
    seconds = []
    for _ in range(EPOCHS):
        start = time.perf_counter()
        for idx in torch.randperm(len(x)).split(BATCH):
            out = m(x[idx])  # [batch, k, 1]
            loss = torch.nn.functional.mse_loss(out.flatten(0, 1), y[idx].repeat_interleave(m.k, 0))
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    return seconds[-1]


def torchfit_epoch(binary, folder, threads):
    """Seconds of the last epoch of `model: {kind: tabm}` (metrics.csv's own timing)."""
    config = os.path.join(folder, "tabm.yaml")
    with open(config, "w") as f:
        f.write(f"seed: 0\ndevice: cpu\ntask: regression\n"
                f"data: {{kind: npy, x: {folder}/x.npy, y: {folder}/y.npy, validation_split: 0, test_split: 0}}\n"
                f"model: {{kind: tabm}}\n"
                f"training: {{epochs: {EPOCHS}, batch_size: {BATCH}, loss: mse, metrics: [], threads: {threads}, "
                f"optimizer: {{kind: adam, lr: 0.001}}}}\n")
    run = tempfile.mkdtemp(dir=folder)
    os.rmdir(run)
    subprocess.run([binary, "train", config, "--quiet", "--out", run], check=True, capture_output=True)
    with open(os.path.join(run, "metrics.csv")) as f:
        return float(list(csv.DictReader(f))[-1]["seconds"])


def main(binary, rows=20000, threads=1):
    rows, threads = int(rows), int(threads)
    with tempfile.TemporaryDirectory() as folder:
        x, y = data(folder, rows)
        ours, theirs = [], []
        for _ in range(REPEATS):
            ours.append(torchfit_epoch(binary, folder, threads))
            theirs.append(package_epoch(x, y, threads))
        a, b = rows / min(ours), rows / min(theirs)
        print(f"{rows} rows x {FEATURES}, k 32, 3 x 512, batch {BATCH}, {threads} thread(s): "
              f"torchfit {a:.0f} samples/s, tabm package {b:.0f} samples/s, ratio {a / b:.2f} "
              f"(epoch seconds: torchfit {sorted(ours)}, package {sorted(theirs)})")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(*sys.argv[1:])
