"""FT-Transformer's training speed: torchfit's `model.kind: ft_transformer` against
`rtdl_revisiting_models.FTTransformer` (0.0.2) in a plain PyTorch loop, same table, same
threads, same batch size, the package's default network and optimizer (get_default_kwargs(),
AdamW lr 1e-4 wd 1e-5, rows shuffled each epoch). The table: ROWS rows of 8 numeric and 2
text columns (10 features), a binary target. Each side trains EPOCHS epochs; the last epoch's
wall time gives samples/s (torchfit's from metrics.csv's `seconds`, the loop's timed in
process: forward, backward and optimizer step, no evaluation on either side), and so does
its CPU time (steadier on a busy machine: torchfit's is the CPU time of a run of EPOCHS epochs
less that of a run of one, over EPOCHS - 1).

    scripts/libtorch.sh python3 bench/ft_transformer.py --binary target/release/torchfit \
        [--rows 20000] [--threads 1] [--batch-size 256] [--epochs 2] [--repeat 3]

Prints one line per repetition and the medians; needs the package in ~/.cache/torchfit/rtdl
(tests/python/builtin_models.py installs it).
"""
import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.expanduser("~/.cache/torchfit/rtdl"))
import rtdl_revisiting_models as rtdl  # noqa: E402

NUMERIC, LEVELS = 8, [6, 12]


def write_table(path, rows):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, NUMERIC))
    codes = [rng.integers(0, n, size=rows) for n in LEVELS]
    score = x[:, 0] - 0.5 * x[:, 1] * x[:, 2] + (codes[0] % 2) - 0.3 * (codes[1] > 5) + 0.3 * rng.normal(size=rows)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"x{j}" for j in range(NUMERIC)] + ["a", "b", "y"])
        for i in range(rows):
            w.writerow([f"{v:.6f}" for v in x[i]] + [f"a{codes[0][i]}", f"b{codes[1][i]}", int(score[i] > 0)])
    return x.astype(np.float32), np.stack(codes, 1), (score > 0).astype(np.int64)


def torchfit(binary, folder, args, epochs):
    """(wall seconds of the last epoch, CPU seconds of the whole process)."""
    config = os.path.join(folder, "ftt.yaml")
    with open(config, "w") as f:
        f.write(f"seed: 1\ntask: classification\ndata: {{kind: csv, path: {folder}/t.csv, target: y, "
                f"validation_split: 0, test_split: 0}}\nmodel: {{kind: ft_transformer}}\n"
                f"training: {{epochs: {epochs}, batch_size: {args.batch_size}, loss: cross_entropy, "
                f"metrics: [], threads: {args.threads}, optimizer: {{kind: adamw, lr: 0.0001, "
                f"weight_decay: 0.00001}}}}\n")
    run = os.path.join(tempfile.mkdtemp(dir=folder), "r")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([binary, "train", config, "--device", "cpu", "--quiet", "--out", run], check=True,
                   capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    with open(os.path.join(run, "metrics.csv")) as f:
        return float(list(csv.DictReader(f))[-1]["seconds"]), cpu


def torchfit_epoch(binary, folder, args):
    """(wall, CPU) seconds of one epoch: the last epoch's wall time, and the CPU time of a run
    of `epochs` epochs less that of a run of 1 (start, data and saving cancel out)."""
    wall, cpu = torchfit(binary, folder, args, args.epochs)
    _, cpu_one = torchfit(binary, folder, args, 1)
    return wall, (cpu - cpu_one) / (args.epochs - 1)


def reference(x, codes, y, args):
    """The loop a PyTorch user writes; (wall, CPU) seconds of its last epoch."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    x = (x - x.mean(0)) / x.std(0)
    x, codes, y = torch.from_numpy(x), torch.from_numpy(codes), torch.from_numpy(y)
    m = rtdl.FTTransformer(n_cont_features=NUMERIC, cat_cardinalities=[n + 1 for n in LEVELS], d_out=2,
                           **rtdl.FTTransformer.get_default_kwargs())
    opt = m.make_default_optimizer()
    m.train()
    for _ in range(args.epochs):
        start, cpu = time.perf_counter(), time.process_time()
        order = torch.randperm(len(x))
        for s in range(0, len(x), args.batch_size):
            i = order[s:s + args.batch_size]
            loss = torch.nn.functional.cross_entropy(m(x[i], codes[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start, time.process_time() - cpu
    return seconds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="target/release/torchfit")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        x, codes, y = write_table(os.path.join(folder, "t.csv"), args.rows)
        ours, theirs = [], []
        for r in range(args.repeat):  # interleaved, so that a busy spell hits both
            ours.append([args.rows / t for t in torchfit_epoch(os.path.abspath(args.binary), folder, args)])
            theirs.append([args.rows / t for t in reference(x, codes, y, args)])
            print(f"repeat {r + 1}: samples/s by wall time: torchfit {ours[-1][0]:.0f}, rtdl loop {theirs[-1][0]:.0f}; "
                  f"by CPU time: torchfit {ours[-1][1]:.0f}, rtdl loop {theirs[-1][1]:.0f}")
        for i, what in enumerate(["wall", "CPU"]):
            a, b = statistics.median(o[i] for o in ours), statistics.median(t[i] for t in theirs)
            print(f"median by {what} time: torchfit {a:.0f} samples/s, rtdl FTTransformer loop {b:.0f} samples/s: "
                  f"{a / b:.2f}x ({args.rows} rows, batch {args.batch_size}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
