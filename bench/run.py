"""torchfit's benchmarks, side by side with the references in the same run.

Runs each workload's programs interleaved (torchfit, PyTorch eager, Keras, ... then again),
several times, fits cost against steps and samples, and writes a Markdown report of medians,
min-max, ratios, peak RSS and the fitted per-step and per-sample costs.

    python3 bench/run.py --binary target/release/torchfit --output docs/benchmarks.md

Needs the torch package the build uses on PYTHONPATH (scripts/libtorch.sh sets it). Keras is
optional: with `tensorflow-cpu` installed in ~/.cache/torchfit/keras (`make bench-keras`) or
importable, the Keras example's `fit` is measured too. So are pandas and polars, for loading
CSV files: installed in ~/.cache/torchfit/bench (`make bench-csv`) or importable.

    python3 bench/run.py --only loading       # just the CSV loading section, printed
    python3 bench/run.py --only models        # just your own PyTorch modules (CNN, LSTM) next to PyTorch loops
    python3 bench/run.py --only distributed   # just torchfit under torchrun next to PyTorch DDP
    python3 bench/run.py --only serving       # just torchfit serve next to FastAPI + uvicorn (bench/serving.py)
    python3 bench/run.py --only text          # just the text sections: the embedding-bag model next to a
                                              # PyTorch loop, tokenising next to the tokenizers package
    python3 bench/run.py --only tabular       # just TabM and FT-Transformer next to their packages, and the
                                              # recommended default's wall time next to HistGradientBoosting
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serving  # noqa: E402  (bench/serving.py, beside this file)


class Failed(Exception):
    """A measured command that failed, when the caller can go on without it."""


def measure(cmd, cwd=None, env=None, check=True):
    """Runs cmd; returns (stdout, wall seconds, peak RSS MiB) using wait4 for this child only.
    A failure ends the bench, or with check=False raises Failed with the last line of stderr.
    Linux counts this process's own high-water RSS, at the moment the child execs, in the
    child's peak: this process keeps no bulk data (see loading's CSV writer)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            message = err.read()
            if not check:
                raise Failed(reason(message, proc.returncode))
            sys.exit(f"bench: {shlex.join(cmd)} failed ({proc.returncode}):\n{message}")
        return out.read(), wall, usage.ru_maxrss / 1024.0


def reason(stderr, status):
    """One short line saying why a run failed: torchfit's own `torchfit: ...` error line when
    there is one (under torchrun the first: the rank that failed, before the launcher stopped
    the others and printed its report), else the last line that is not decoration."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip().strip("=-*#").strip()]
    ours = [l[l.index("torchfit: "):] for l in lines if "torchfit: " in l and "torchfit: warning" not in l]
    last = ours[0] if ours else (lines or ["exit status %d" % status])[-1]
    return last if len(last) <= 160 else last[:160] + "..."


def torchfit_train(binary, sets, workdir, config=None, check=True, launcher=()):
    """Trains with `sets` into a fresh folder; `launcher` is a command put before the binary
    (torchrun), in which case rank 0's summary.json is read."""
    out_dir = tempfile.mkdtemp(dir=workdir)
    os.rmdir(out_dir)
    cmd = list(launcher) + [binary, "train"] + ([str(config)] if config else []) + ["--device", "cpu", "--quiet", "--out", out_dir]
    for s in sets:
        cmd += ["--set", s]
    _, wall, rss = measure(cmd, check=check)
    path = Path(out_dir, "summary.json")
    if not path.exists() and not check:
        raise Failed(f"no summary.json in --out {out_dir}")
    summary = json.loads(path.read_text())
    return {"train": summary["train_seconds"], "total": summary["total_seconds"], "wall": wall, "rss": rss,
            "loss": summary["final_metrics"]["loss"], "world_size": summary.get("world_size"), "out": out_dir}


def torch_reference(args):
    out, wall, rss = measure([sys.executable, str(HERE / "reference_torch.py")] + args)
    result = json.loads(out.strip().splitlines()[-1])
    return {"train": result["train_seconds"], "wall": wall, "rss": rss, "loss": result["final_loss"]}


def keras_reference(keras_path):
    env = dict(os.environ, PYTHONPATH=keras_path, TF_CPP_MIN_LOG_LEVEL="2") if keras_path else None
    out, wall, rss = measure([sys.executable, str(HERE / "reference_keras.py")], env=env)
    result = json.loads(out.strip().splitlines()[-1])
    return {"train": result["train_seconds"], "wall": wall, "rss": rss, "loss": result["final_loss"]}


def matmul_gflops(n=1024, seconds=3.0):
    code = f"""
import time, torch
a, b = torch.randn({n}, {n}), torch.randn({n}, {n})
for _ in range(3): a @ b
count, start = 0, time.perf_counter()
while time.perf_counter() - start < {seconds}:
    a @ b; count += 1
print(2 * {n}**3 * count / (time.perf_counter() - start) / 1e9)
"""
    out, _, _ = measure([sys.executable, "-c", code])
    return float(out.strip())


def fit_costs(binary, workdir, base_sets, grid):
    """Trains on each (samples, batch, epochs) of `grid` and fits train_seconds =
    c + a * steps + b * samples_seen by least squares. Returns (a, b, c, r2, rows)."""
    import numpy as np

    rows = []
    for samples, batch, epochs in grid:
        sets = base_sets + [f"data.samples={samples}", f"training.batch_size={batch}", f"training.epochs={epochs}"]
        # The fastest of three runs: noise on a shared machine only ever adds time.
        seconds = min(torchfit_train(binary, sets, workdir)["train"] for _ in range(3))
        steps = epochs * -(-samples // batch)
        rows.append((samples, batch, epochs, steps, samples * epochs, seconds))
    a_matrix = np.array([[1.0, r[3], r[4]] for r in rows])
    t = np.array([r[5] for r in rows])
    (c, a, b), *_ = np.linalg.lstsq(a_matrix, t, rcond=None)
    predicted = a_matrix @ np.array([c, a, b])
    r2 = 1 - ((t - predicted) ** 2).sum() / max(((t - t.mean()) ** 2).sum(), 1e-30)
    return a, b, c, r2, rows


def write_numeric_csv(path, rows, features=20, seed=0, block=100_000):
    """A seeded regression table: `features` normal columns and y, six decimals a cell."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w = rng.standard_normal(features)
    with open(path, "w") as f:
        f.write(",".join([f"x{i}" for i in range(features)] + ["y"]) + "\n")
        for start in range(0, rows, block):
            x = rng.standard_normal((min(block, rows - start), features)).astype(np.float32)
            y = x @ w + 0.1 * rng.standard_normal(len(x))
            np.savetxt(f, np.column_stack([x, y]), fmt="%.6f", delimiter=",")


MIXED_LEVELS = (5, 12, 30, 50)


def write_mixed_csv(path, rows, features=16, levels=MIXED_LEVELS, missing=0.02, seed=1, block=100_000):
    """A seeded table with `features` numeric columns, then one text column per entry of
    `levels` (that many levels, `missing` of the cells empty), then y."""
    import io
    import numpy as np

    rng = np.random.default_rng(seed)
    w = rng.standard_normal(features)
    names = [f"x{i}" for i in range(features)] + [f"c{i}" for i in range(len(levels))] + ["y"]
    words = [np.array([f"level_{j:02d}" for j in range(k)] + [""]) for k in levels]
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        for start in range(0, rows, block):
            n = min(block, rows - start)
            x = rng.standard_normal((n, features)).astype(np.float32)
            codes = [rng.integers(0, k, n) for k in levels]
            y = x @ w + sum(0.5 * c / k for c, k in zip(codes, levels)) + 0.1 * rng.standard_normal(n)
            numbers = io.StringIO()
            np.savetxt(numbers, x, fmt="%.6f", delimiter=",")
            text = [wd[np.where(rng.random(n) < missing, k, c)] for wd, k, c in zip(words, levels, codes)]
            f.write("".join(f"{line},{','.join(t)},{v:.6f}\n" for line, v, *t in zip(numbers.getvalue().splitlines(), y, *text)))


def reference_load(library, path, tables_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [tables_path, os.environ.get("PYTHONPATH")] if p))
    out, wall, rss = measure([sys.executable, str(HERE / "reference_load.py"), library, str(path)], env=env)
    result = json.loads(out.strip().splitlines()[-1])
    return {"load": result["seconds"], "rss": rss, "above": rss - result["rss_before"], "wall": wall}


def loading(binary, work, rows, repeats, tables_path):
    """The CSV loading section: torchfit train (1 epoch) on a numeric and a mixed table next to
    pandas and polars read_csv on the same files. Returns Markdown lines."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [tables_path, os.environ.get("PYTHONPATH")] if p))
    probe = lambda module: subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, env=env).returncode == 0
    libraries = [name for name in ["pandas", "polars"] if probe(name)]
    files = {}
    for kind, write, extra in [("numeric", write_numeric_csv, ""), ("mixed", write_mixed_csv, ", missing: mean")]:
        for size, n in [("big", rows), ("tiny", 100)]:
            path = Path(work, f"{kind}-{size}.csv")
            print(f"loading: writing {path.name} ({n:,} rows)", file=sys.stderr)
            # In a process of its own: a child's peak RSS from wait4 includes this process's
            # high-water mark at the child's exec, so this process must never hold the
            # files' data (it would floor every later measurement at its size).
            subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); import run; "
                            f"run.{write.__name__}({str(path)!r}, {n})"], check=True)
            config = Path(work, f"{kind}-{size}.yaml")
            config.write_text(f"name: load_{kind}\ndata: {{kind: csv, path: {path}, target: y{extra}}}\n"
                              "model: {hidden: [16]}\ntraining: {epochs: 1, batch_size: 8192, metrics: []}\n")
            files[kind, size] = (path, config)
    runs = {(kind, program): [] for kind in ["numeric", "mixed"] for program in ["torchfit", "tiny"] + libraries}
    failed = {}
    for i in range(repeats):
        print(f"loading, round {i + 1}/{repeats}", file=sys.stderr)
        for kind in ["numeric", "mixed"]:
            for size, program in [("big", "torchfit"), ("tiny", "tiny")]:
                if (kind, program) in failed:
                    continue
                try:
                    r = torchfit_train(binary, [], work, config=files[kind, size][1], check=False)
                    runs[kind, program].append(dict(r, load=r["wall"] - r["train"]))
                except Failed as e:
                    failed[kind, program] = str(e)
            for library in libraries:
                runs[kind, library].append(reference_load(library, files[kind, "big"][0], tables_path))
    med = lambda kind, program, key: statistics.median(r[key] for r in runs[kind, program])
    mib = lambda path: path.stat().st_size / 2**20
    lines = [
        f"## Loading a CSV file ({rows:,} rows), CPU",
        "",
        f"Two seeded files: *numeric*, 20 features and a target with six decimals ({mib(files['numeric', 'big'][0]):.0f} MiB), "
        f"and *mixed*, 16 numeric features, 4 text columns of {', '.join(map(str, MIXED_LEVELS))} levels with 2% of their "
        f"cells empty, and a target ({mib(files['mixed', 'big'][0]):.0f} MiB). torchfit's load is `torchfit train` (1 epoch, "
        "batch 8192) wall time less its training loop, less the same for a 100-row file of the same columns (process "
        "start, libtorch, model, artifacts): reading, typing the columns, the float32 tensors, standardisation. Its "
        "memory above that 100-row run is set against the final float32 tensors (rows x columns x 4 bytes). pandas and "
        "polars: `read_csv(path)` with their defaults (float64, all columns), timed inside the process, memory above "
        "what the process held after its imports.",
        "",
        "| file | program | load | peak RSS | above baseline | above baseline / final tensors |",
        "|---|---|---|---|---|---|",
    ]
    summary = []
    for kind, columns in [("numeric", 21), ("mixed", 21)]:
        tensors = rows * columns * 4 / 2**20
        if (kind, "torchfit") in failed or (kind, "tiny") in failed:
            why = failed.get((kind, "torchfit")) or failed.get((kind, "tiny"))
            lines.append(f"| {kind} | torchfit | failed: {why} | - | - | - |")
            tf_load = None
        else:
            tf_load = med(kind, "torchfit", "load") - med(kind, "tiny", "load")
            above = med(kind, "torchfit", "rss") - med(kind, "tiny", "rss")
            loads = [r["load"] - med(kind, "tiny", "load") for r in runs[kind, "torchfit"]]
            lines.append(f"| {kind} | torchfit | {fmt(loads)} | {med(kind, 'torchfit', 'rss'):.0f} MiB | {above:.0f} MiB | {above / tensors:.2f} |")
        for library in libraries:
            lib_load = med(kind, library, "load")
            lines.append(f"| {kind} | {library} `read_csv` | {fmt([r['load'] for r in runs[kind, library]])} | "
                         f"{med(kind, library, 'rss'):.0f} MiB | {med(kind, library, 'above'):.0f} MiB | {med(kind, library, 'above') / tensors:.2f} |")
            if tf_load:
                summary.append(f"{kind}: **{lib_load / tf_load:.2f}x** {library}'s speed")
    lines += [
        "",
        f"- Final float32 tensors: {rows * 21 * 4 / 2**20:.0f} MiB per file ({rows:,} x 21).",
        "- torchfit's load vs the references (their time / torchfit's): " + ("; ".join(summary) if summary else "no reference measured") + ".",
    ]
    missing = [name for name in ["pandas", "polars"] if name not in libraries]
    if missing:
        lines.append(f"- {' and '.join(missing)} not installed: `make bench-csv` installs them into ~/.cache/torchfit/bench.")
    return lines


SWEEP_SETS = ["device=cpu", "data.samples=1250", "data.validation_split=0.2", "data.test_split=0",
              "training.epochs=100", "training.batch_size=32", "training.early_stopping=null",
              "training.lr_schedule={kind: constant}", "training.metrics=[]"]
SWEEP_FILE = """base: {base}
method: grid
parameters:
  training.optimizer.lr: {{values: [0.0003, 0.001, 0.003, 0.01]}}
  model.hidden: {{values: [[16, 16], [32, 32], [64, 64], [128, 128]]}}
"""


def sweep_section(binary, work, repeats, optuna_path, jobs=2):
    """The sweep section: a 16-trial grid (4 learning rates x 4 widths, friedman1 with 1,000
    training rows, 100 epochs, batch 32) with 2 workers, next to Optuna's GridSampler over the
    PyTorch eager twin with n_jobs=2, interleaved."""
    sweep_file = Path(work, "bench-sweep.yaml")
    sweep_file.write_text(SWEEP_FILE.format(base=HERE.parent / "configs" / "friedman1.yaml"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [optuna_path, os.environ.get("PYTHONPATH", "")] if p))
    have_optuna = subprocess.run([sys.executable, "-c", "import optuna"], capture_output=True, env=env).returncode == 0
    runs = {"torchfit": [], "optuna": []}
    for i in range(repeats):
        print(f"sweep, round {i + 1}/{repeats}", file=sys.stderr)
        out_dir = tempfile.mkdtemp(dir=work)
        os.rmdir(out_dir)
        cmd = [binary, "sweep", str(sweep_file), "--out", out_dir, "--jobs", str(jobs)]
        for s in SWEEP_SETS:
            cmd += ["--set", s]
        _, wall, _ = measure(cmd)
        with open(Path(out_dir, "results.csv")) as f:
            import csv
            rows = list(csv.DictReader(f))
        train = sum(float(r["train_seconds"]) for r in rows)
        total = sum(float(r["seconds"]) for r in rows)
        runs["torchfit"].append({"wall": wall, "train": train, "total": total, "trials": len(rows)})
        if have_optuna:
            out, wall, _ = measure([sys.executable, str(HERE / "reference_optuna.py"), "--jobs", str(jobs)], env=env)
            runs["optuna"].append({"wall": wall, "inner": json.loads(out.strip().splitlines()[-1])["wall_seconds"]})
    col = lambda rs, key: [r[key] for r in rs]
    med = lambda rs, key: statistics.median(col(rs, key))
    tf = runs["torchfit"]
    lines = [
        f"## Sweep (16-trial grid: 4 learning rates x 4 widths of [w, w], friedman1, 1,000 training rows, 100 epochs, batch 32, {jobs} workers), CPU",
        "",
        "| program | wall | sum of trials' train_seconds | sum of trials' total_seconds |",
        "|---|---|---|---|",
        f"| `torchfit sweep --jobs {jobs}` | {fmt(col(tf, 'wall'))} | {fmt(col(tf, 'train'))} | {fmt(col(tf, 'total'))} |",
    ]
    if have_optuna:
        lines.append(f"| Optuna GridSampler, PyTorch eager, n_jobs={jobs} (bench/reference_optuna.py) | {fmt(col(runs['optuna'], 'wall'))} | - | - |")
    lines.append("")
    if have_optuna:
        lines.append(f"- `torchfit sweep` is **{med(runs['optuna'], 'wall') / med(tf, 'wall'):.1f}x** faster than Optuna (wall, whole processes).")
    else:
        lines.append("- Optuna not installed (`make bench-optuna` to include it).")
    lines.append(f"- Wall time over (sum of train_seconds) / workers: **{med(tf, 'wall') / (med(tf, 'train') / jobs):.2f}**; "
                 f"over (sum of the trials' total_seconds) / workers: {med(tf, 'wall') / (med(tf, 'total') / jobs):.2f} "
                 "(a trial's total also holds its data, its model.pt and plot).")
    return lines


MODEL_WORKLOADS = {
    "cnn": ("CNN on 8x8 images", "classification", "cross_entropy",
            "Conv2d(1, 16, 3), BatchNorm2d, ReLU, MaxPool2d(2), Conv2d(16, 32, 3), BatchNorm2d, ReLU, MaxPool2d(2), "
            "Linear(128, 10); 10 classes of noisy 8x8 one-channel images"),
    "lstm": ("LSTM on sequences", "regression", "mse",
             "LSTM(4, 32) over 20 steps, its last hidden state into Linear(32, 1); a decaying masked sum of "
             "one feature"),
}


def model_reference(kind, paths, mode, epochs, batch, threads):
    out, wall, rss = measure([sys.executable, str(HERE / "reference_module.py"), kind] + [str(p) for p in paths] +
                             ["--mode", mode, "--epochs", str(epochs), "--batch-size", str(batch), "--threads", str(threads)])
    result = json.loads(out.strip().splitlines()[-1])
    return {"train": result["train_seconds"], "wall": wall, "rss": rss, "loss": result["final_loss"]}


def model_config(kind, paths, work):
    """The torchfit config that trains bench/modules.py's `kind` as a user module: the 2-D table
    as stored (no standardisation, no splits), PyTorch's Adam, nothing but the training loop."""
    _, task, loss, _ = MODEL_WORKLOADS[kind]
    x, y, net = paths
    config = Path(work, f"{kind}.yaml")
    config.write_text(
        f"name: bench_{kind}\nseed: 0\ntask: {task}\n"
        f"data: {{kind: npy, x: {x}, y: {y}, standardize: false, validation_split: 0, test_split: 0}}\n"
        f"model: {{kind: torchscript, path: {net}}}\n"
        f"training: {{loss: {loss}, metrics: [], checkpoint_every: 1000, optimizer: {{kind: adam, lr: 0.001, semantics: torch}}}}\n")
    return config


def models_section(binary, work, repeats, samples, epochs, batch, threads):
    """The user-module section: bench/modules.py's CNN and LSTM (scripted, saved, fed a 2-D npy
    table they reshape in forward) trained by torchfit (`model.kind: torchscript`) next to a
    plain PyTorch loop on torch.jit.load of the same file and on the eager nn.Module with its
    weights, same threads, batch, epochs and Adam, interleaved. Returns Markdown lines."""
    programs = ["torchfit", "scripted", "eager"]
    load_before = os.getloadavg()[0]
    lines = [
        f"## Your own PyTorch module ({samples:,} samples, batch {batch}, {epochs} epochs, {threads} thread{'s' * (threads != 1)}), CPU",
        "",
        "bench/modules.py's modules, scripted with `torch.jit.script(module).save(path)`, trained by torchfit as "
        "`model: {kind: torchscript, path: net.pt}` (libtorch autograd, PyTorch's Adam: `semantics: torch`) on a 2-D "
        "`.npy` table that forward reshapes, next to a plain PyTorch loop (bench/reference_module.py: shuffle, "
        "slice, zero_grad, forward, loss, backward, `torch.optim.Adam` step) on `torch.jit.load` of the same file and on "
        "the eager `nn.Module` with the same weights. Same data, batch, epochs and Adam; every program runs with "
        f"{threads} intra-op thread{'s' * (threads != 1)} (`training.threads`, `torch.set_num_threads`). Samples/s: samples x epochs over "
        f"the training loop's time (torchfit's `train_seconds`); medians of {repeats} interleaved rounds. torchfit's "
        "own default for a user module is every core; one thread keeps a shared machine's noise out of the ratios "
        "(`--model-threads N` measures N). Final loss: the last epoch's mean training loss (each program shuffles with its own generator).",
        "",
    ]
    for kind, (title, _, _, layers) in MODEL_WORKLOADS.items():
        paths = [Path(work, f"{kind}-{name}") for name in ("x.npy", "y.npy", "net.pt")]
        # In a process of its own, so this one never holds the data or torch (see measure).
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); import modules; "
                        f"modules.save({kind!r}, {str(work)!r}, {samples})"], check=True)
        config = model_config(kind, paths, work)
        sets = [f"training.epochs={epochs}", f"training.batch_size={batch}", f"training.threads={threads}"]
        runs = {name: [] for name in programs}
        failed = {}
        for i in range(repeats):
            print(f"models: {kind}, round {i + 1}/{repeats}", file=sys.stderr)
            for name in programs:
                if name in failed:
                    continue
                try:
                    if name == "torchfit":
                        runs[name].append(torchfit_train(binary, sets, work, config=config, check=False))
                    else:
                        runs[name].append(model_reference(kind, paths, name, epochs, batch, threads))
                except Failed as e:
                    failed[name] = str(e)
        rate = {name: samples * epochs / statistics.median(r["train"] for r in runs[name]) for name in programs if name not in failed}
        lines += [f"### {title}: {layers}", "", "| program | training loop | samples/s | final loss | peak RSS |", "|---|---|---|---|---|"]
        labels = {"torchfit": "torchfit, `model.kind: torchscript`", "scripted": "PyTorch loop, `torch.jit.load` of the same file",
                  "eager": "PyTorch loop, eager `nn.Module`"}
        for name in programs:
            if name in failed:
                lines.append(f"| {labels[name]} | failed: {failed[name]} | - | - | - |")
                continue
            rs = runs[name]
            lines.append(f"| {labels[name]} | {fmt([r['train'] for r in rs])} | {rate[name]:,.0f} | "
                         f"{statistics.median(r['loss'] for r in rs):.4f} | {statistics.median(r['rss'] for r in rs):.0f} MiB |")
        lines.append("")
        for ref in ["scripted", "eager"]:
            if "torchfit" in rate and ref in rate:
                got = rate["torchfit"] / rate[ref]
                # Three decimals where two would round a miss up to the goal.
                shown = f"{got:.3f}" if round(got, 2) >= 1.3 > got else f"{got:.2f}"
                lines.append(f"- torchfit / {labels[ref]}: **{shown}x** (goal >= 1.3x: {'met' if got >= 1.3 else 'not met'}).")
            else:
                lines.append(f"- torchfit / {labels[ref]}: n/a ({'torchfit' if 'torchfit' not in rate else ref} failed).")
        lines.append("")
    load_after = os.getloadavg()[0]
    busy = " (above the core count: other processes shared the machine)" if max(load_before, load_after) > os.cpu_count() else ""
    lines.append(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Load average (1 minute) when the "
                 f"section started and ended: {load_before:.1f}, {load_after:.1f}, on {os.cpu_count()} cores{busy}.")
    return lines


def torchrun(procs, no_python=False):
    """PyTorch's launcher, from the torch package on PYTHONPATH (the one the build links)."""
    return [sys.executable, "-m", "torch.distributed.run"] + (["--no-python"] if no_python else []) + \
        ["--standalone", "--nproc-per-node", str(procs)]


def ddp_reference(procs, samples):
    out, wall, rss = measure(torchrun(procs) + [str(HERE / "ddp.py"), "--samples", str(samples)], check=False)
    result = json.loads(out.strip().splitlines()[-1])
    return {"train": result["train_seconds"], "wall": wall, "rss": rss, "loss": result["final_loss"]}


def distributed(binary, work, samples, repeats):
    """The distributed section: the large workload with one thread per process, torchfit
    alone and as 2 processes under torchrun, next to PyTorch DDP (bench/ddp.py) with 1 and
    2 processes. Returns Markdown lines."""
    sets = [f"data.samples={samples}", "data.features=256", "model.hidden=[1024, 1024]",
            "training.batch_size=1024", "training.epochs=1", "training.metrics=[]", "training.threads=1"]

    def torchfit_2p():
        r = torchfit_train(binary, sets, work, check=False, launcher=torchrun(2, no_python=True))
        if r["world_size"] != 2:
            got = "no world_size" if r["world_size"] is None else f"world_size {r['world_size']}"
            raise Failed(f"summary.json says {got}, not 2: torchfit did not train as one group of 2 processes")
        return r

    programs = [
        ("PyTorch DDP, 1 process (bench/ddp.py)", lambda: ddp_reference(1, samples)),
        ("PyTorch DDP, 2 processes", lambda: ddp_reference(2, samples)),
        ("torchfit, 1 process", lambda: torchfit_train(binary, sets, work, check=False)),
        ("torchfit, 2 processes (torchrun)", torchfit_2p),
    ]
    runs = {name: [] for name, _ in programs}
    failed = {}
    for i in range(repeats):
        print(f"distributed, round {i + 1}/{repeats}", file=sys.stderr)
        for name, run in programs:
            if name in failed:
                continue
            try:
                runs[name].append(run())
            except Failed as e:
                failed[name] = str(e)
    lines = [
        f"## Distributed: the large workload ({samples:,}x256, hidden [1024, 1024], global batch 1024, 1 epoch), CPU, one thread per process",
        "",
        "Data-parallel over gloo: each process trains on its part of every global batch (512 rows each with 2 "
        "processes) and the gradients are averaged. Each process uses one libtorch thread (`training.threads=1`, "
        "`torch.set_num_threads(1)`). Samples/s: the samples of the epoch over the training loop's time (torchfit's "
        "`train_seconds` in rank 0's summary.json; bench/ddp.py times its loop the same way, on rank 0).",
        "",
        "| program | training loop | samples/s | wall |",
        "|---|---|---|---|",
    ]
    rate = {}
    for name, _ in programs:
        if name in failed:
            lines.append(f"| {name} | failed: {failed[name]} | - | - |")
            continue
        rate[name] = samples / statistics.median(r["train"] for r in runs[name])
        lines.append(f"| {name} | {fmt([r['train'] for r in runs[name]])} | {rate[name]:,.0f} | {fmt([r['wall'] for r in runs[name]])} |")

    def ratio(a, b, goal):
        if a not in rate or b not in rate:
            return f"n/a ({next(n for n in (a, b) if n not in rate)} failed)"
        got = rate[a] / rate[b]
        return f"**{got:.2f}x** (goal >= {goal}x: {'met' if got >= goal else 'not met'})"

    ddp1, ddp2 = programs[0][0], programs[1][0]
    tf1, tf2 = programs[2][0], programs[3][0]
    lines += [
        "",
        f"- torchfit 2 processes / torchfit 1 process: {ratio(tf2, tf1, 1.7)}.",
        f"- torchfit 2 processes / PyTorch DDP 2 processes: {ratio(tf2, ddp2, 1.2)}.",
        f"- PyTorch DDP 2 processes / 1 process: " + (f"{rate[ddp2] / rate[ddp1]:.2f}x." if ddp1 in rate and ddp2 in rate else "n/a."),
    ]
    return lines


def stats(values):
    return statistics.median(values), min(values), max(values)


def fmt(values, unit="s"):
    med, lo, hi = stats(values)
    return f"{med:.3f} {unit} ({lo:.3f}-{hi:.3f})"


def tabular_lines(binary, work, args):
    """The TabM and FT-Transformer sections and the default-vs-HGB one (bench/tabular_speed.py)."""
    import tabular_speed

    size = (args.tabular_samples, args.tabular_features, args.tabular_batch, args.tabular_threads or os.cpu_count())
    lines = []
    for kind in ["tabm", "ft_transformer"]:
        lines += tabular_speed.kind_section(binary, work, kind, *size, args.tabular_repeats)
    return lines + tabular_speed.default_vs_hgb_section(binary, work, args.default_variant,
                                                        list(range(args.tables_seeds)), args.tabular_threads)


def text_lines(binary, work, args):
    """The embedding-bag and tokenising sections (bench/text_speed.py)."""
    import text_speed

    threads = args.text_threads or os.cpu_count()
    return (text_speed.bag_section(binary, work, args.text_rows, args.text_epochs, args.text_batch, threads,
                                   args.text_repeats)
            + text_speed.tokenize_section(binary, work, args.text_texts, args.text_repeats))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default="target/release/torchfit")
    p.add_argument("--output", default="docs/benchmarks.md")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--large-samples", type=int, default=200_000)
    p.add_argument("--large-repeats", type=int, default=3)
    p.add_argument("--keras-path", default=str(Path.home() / ".cache/torchfit/keras"),
                   help="a pip --target folder holding tensorflow-cpu (used when it exists)")
    p.add_argument("--load-rows", type=int, default=2_000_000, help="rows of the CSV files the loading section reads")
    p.add_argument("--load-repeats", type=int, default=3)
    p.add_argument("--tables-path", default=str(Path.home() / ".cache/torchfit/bench"),
                   help="a pip --target folder holding pandas and polars (used when it exists)")
    p.add_argument("--optuna-path", default=str(Path.home() / ".cache/torchfit/optuna"),
                   help="a pip --target folder holding optuna (used when it exists)")
    p.add_argument("--sweep-repeats", type=int, default=3)
    p.add_argument("--dist-samples", type=int, default=50_000, help="samples of the distributed section's workload")
    p.add_argument("--dist-repeats", type=int, default=3)
    p.add_argument("--serve-seconds", type=int, default=5, help="seconds of wrk load per server in the serving section")
    p.add_argument("--serve-deps", default=str(Path.home() / ".cache/torchfit/serve-bench"),
                   help="a pip --target folder holding fastapi and uvicorn (used when it exists)")
    p.add_argument("--model-samples", type=int, default=20_000, help="samples of the user-module section's data sets")
    p.add_argument("--model-epochs", type=int, default=2)
    p.add_argument("--model-batch", type=int, default=64)
    p.add_argument("--model-threads", type=int, default=1, help="intra-op threads of every program in the user-module section")
    p.add_argument("--model-repeats", type=int, default=3)
    p.add_argument("--tabular-samples", type=int, default=100_000, help="rows of the TabM and FT-Transformer sections' table")
    p.add_argument("--tabular-features", type=int, default=16)
    p.add_argument("--tabular-batch", type=int, default=256)
    p.add_argument("--tabular-threads", type=int, default=1,
                   help="threads of every program in the TabM, FT-Transformer and default-vs-HGB sections (0 there: each one's default)")
    p.add_argument("--tabular-repeats", type=int, default=1,
                   help="rounds of the TabM and FT-Transformer sections (one epoch of 100,000 rows is minutes on one thread)")
    p.add_argument("--tables-seeds", type=int, default=1, help="seeds per table in the default-vs-HGB section")
    p.add_argument("--default-variant", default="mlp", help="bench/table_bench.py's variant that is the recommended default")
    p.add_argument("--text-rows", type=int, default=100_000, help="rows of the embedding-bag section's synthetic texts")
    p.add_argument("--text-epochs", type=int, default=3)
    p.add_argument("--text-batch", type=int, default=256)
    p.add_argument("--text-threads", type=int, default=1, help="threads of both programs in the embedding-bag section (0: all cores)")
    p.add_argument("--text-texts", type=int, default=1_000_000, help="short texts of the tokenising section")
    p.add_argument("--text-repeats", type=int, default=3)
    p.add_argument("--only", choices=["all", "models", "loading", "sweep", "distributed", "serving", "tabular", "text"], default="all",
                   help="run only that section and print it (--output is left alone)")
    args = p.parse_args()
    binary = str(Path(args.binary).resolve())
    model_args = (args.model_repeats, args.model_samples, args.model_epochs, args.model_batch, args.model_threads)
    if args.only == "models":
        with tempfile.TemporaryDirectory(prefix="torchfit-bench-") as work:
            print("\n".join(models_section(binary, work, *model_args)))
        return
    if args.only == "loading":
        with tempfile.TemporaryDirectory(prefix="torchfit-bench-") as work:
            print("\n".join(loading(binary, work, args.load_rows, args.load_repeats, args.tables_path)))
        return
    if args.only == "sweep":
        with tempfile.TemporaryDirectory(prefix="torchfit-bench-") as work:
            print("\n".join(sweep_section(binary, work, args.sweep_repeats, args.optuna_path)))
        return
    if args.only == "serving":
        print("\n".join(serving.section(binary, args.serve_seconds, args.serve_deps)))
        return
    if args.only == "tabular":
        with tempfile.TemporaryDirectory(prefix="torchfit-bench-") as work:
            print("\n".join(tabular_lines(binary, work, args)))
        return
    if args.only == "text":
        with tempfile.TemporaryDirectory(prefix="torchfit-bench-") as work:
            print("\n".join(text_lines(binary, work, args)))
        return
    if args.only == "distributed":
        with tempfile.TemporaryDirectory(prefix="torchfit-bench-") as work:
            print("\n".join(distributed(binary, work, args.dist_samples, args.dist_repeats)))
        return
    keras_path = args.keras_path if Path(args.keras_path, "tensorflow").is_dir() else None
    probe_env = dict(os.environ, PYTHONPATH=keras_path) if keras_path else None
    have_keras = subprocess.run([sys.executable, "-c", "import keras, tensorflow"], capture_output=True, env=probe_env).returncode == 0
    work = tempfile.mkdtemp(prefix="torchfit-bench-")

    small = {"torchfit": [], "torch": [], "keras": [], "info": []}
    for i in range(args.repeats):
        print(f"small workload, round {i + 1}/{args.repeats}", file=sys.stderr)
        small["torchfit"].append(torchfit_train(binary, [], work))
        small["torch"].append(torch_reference([]))
        if have_keras:
            small["keras"].append(keras_reference(keras_path))
        _, wall, rss = measure([binary, "info"])
        small["info"].append({"wall": wall, "rss": rss})

    n = args.large_samples
    large_sets = [f"data.samples={n}", "data.features=256", "model.hidden=[1024, 1024]",
                  "training.batch_size=1024", "training.epochs=1", "training.metrics=[]"]
    large_ref = ["--samples", str(n), "--features", "256", "--hidden", "1024,1024", "--batch-size", "1024", "--epochs", "1"]
    large = {"torchfit": [], "torch": []}
    for i in range(args.large_repeats):
        print(f"large workload, round {i + 1}/{args.large_repeats}", file=sys.stderr)
        large["torchfit"].append(torchfit_train(binary, large_sets, work))
        large["torch"].append(torch_reference(large_ref))
    gflops = matmul_gflops()
    print("cost fits", file=sys.stderr)
    small_fit = fit_costs(binary, work, ["training.checkpoint_every=1000"],
                          [(1000, 32, 200), (2000, 32, 200), (4000, 32, 100), (2000, 16, 100), (4000, 128, 200), (8000, 256, 200)])
    large_model = ["data.features=256", "model.hidden=[1024, 1024]", "training.metrics=[]"]
    large_fit = fit_costs(binary, work, large_model,
                          [(8192, 1024, 2), (16384, 1024, 2), (16384, 256, 2), (32768, 512, 1)])
    model_lines = models_section(binary, work, *model_args)
    print("distributed", file=sys.stderr)
    dist_lines = distributed(binary, work, args.dist_samples, args.dist_repeats)
    # Its own folder, removed after: the CSV files are hundreds of MB.
    with tempfile.TemporaryDirectory(prefix="torchfit-bench-load-") as load_work:
        load_lines = loading(binary, load_work, args.load_rows, args.load_repeats, args.tables_path)
    sweep_lines = sweep_section(binary, work, args.sweep_repeats, args.optuna_path)
    tab_lines = tabular_lines(binary, work, args)
    print("text", file=sys.stderr)
    txt_lines = text_lines(binary, work, args)
    print("serving", file=sys.stderr)
    serving_lines = serving.section(binary, args.serve_seconds, args.serve_deps)

    col = lambda runs, key: [r[key] for r in runs]
    med = lambda runs, key: statistics.median(col(runs, key))
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Medians of "
        f"{args.repeats} interleaved rounds (large workload: {args.large_repeats}), min-max in brackets. "
        "Times are the training loop alone unless marked wall (the whole process).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}.",
        "",
        "On a small shared machine like this one, single timings vary by a third from run to run (see the "
        "min-max); compare the ratios, which come from interleaved rounds of one run, and expect them to move "
        "by about that much between runs of `make bench`.",
        "",
        "## Keras example (1000x10, Dense(10, relu), Dense(1), Adam, batch 32, 100 epochs = 3,200 steps), CPU",
        "",
        "| program | training loop | wall | peak RSS |",
        "|---|---|---|---|",
        f"| torchfit | {fmt(col(small['torchfit'], 'train'))} | {fmt(col(small['torchfit'], 'wall'))} | {med(small['torchfit'], 'rss'):.0f} MiB |",
        f"| PyTorch eager (bench/reference_torch.py) | {fmt(col(small['torch'], 'train'))} | {fmt(col(small['torch'], 'wall'))} | {med(small['torch'], 'rss'):.0f} MiB |",
    ]
    if have_keras:
        lines.append(f"| Keras `fit` (bench/reference_keras.py) | {fmt(col(small['keras'], 'train'))} | {fmt(col(small['keras'], 'wall'))} | {med(small['keras'], 'rss'):.0f} MiB |")
    lines += [
        f"| `torchfit info` (libtorch start-up floor) | - | {fmt(col(small['info'], 'wall'))} | {med(small['info'], 'rss'):.0f} MiB |",
        "",
        f"- torchfit's training loop is **{med(small['torch'], 'train') / med(small['torchfit'], 'train'):.1f}x** faster than PyTorch eager"
        + (f" and **{med(small['keras'], 'train') / med(small['torchfit'], 'train'):.1f}x** faster than Keras `fit`." if have_keras else " (Keras not installed: `make bench-keras` to include it)."),
        f"- Whole process: {med(small['torchfit'], 'wall'):.2f} s wall; training loop plus start-up floor is "
        f"{med(small['torchfit'], 'train') + med(small['info'], 'wall'):.2f} s, a ratio of "
        f"{med(small['torchfit'], 'wall') / (med(small['torchfit'], 'train') + med(small['info'], 'wall')):.2f}.",
        "",
        f"## Large workload ({n:,}x256, hidden [1024, 1024], batch 1024, 1 epoch), CPU",
        "",
        "| program | training loop | samples/s | peak RSS |",
        "|---|---|---|---|",
    ]
    flops_per_sample = 6 * (256 * 1024 + 1024 * 1024 + 1024)  # forward 2 flops/MAC, backward twice that
    for name, runs in [("torchfit", large["torchfit"]), ("PyTorch eager", large["torch"])]:
        lines.append(f"| {name} | {fmt(col(runs, 'train'))} | {n / med(runs, 'train'):,.0f} | {med(runs, 'rss'):.0f} MiB |")
    tf_rate = n * flops_per_sample / med(large["torchfit"], "train") / 1e9
    lines += [
        "",
        f"- Samples/s vs PyTorch eager: **{med(large['torch'], 'train') / med(large['torchfit'], 'train'):.2f}x**.",
        f"- torchfit reaches {tf_rate:.0f} GFLOP/s of model arithmetic; a plain 1024x1024 `matmul` loop in the same "
        f"libtorch reaches {gflops:.0f} GFLOP/s: **{100 * tf_rate / gflops:.0f}%**.",
        f"- Peak RSS vs PyTorch eager: {med(large['torchfit'], 'rss') / med(large['torch'], 'rss'):.2f}x.",
        "",
        "## How cost grows",
        "",
        "`train_seconds` fitted as c + a x steps + b x samples seen, over runs of different sizes "
        "(samples, batch, epochs). A linear fit with R^2 near 1 means cost grows linearly with samples and epochs.",
        "",
        "| model | per-step overhead a | per-sample cost b | constant c | R^2 | runs (samples, batch, epochs: seconds) |",
        "|---|---|---|---|---|---|",
    ]
    for name, (a, b, c, r2, rows) in [("Keras example (121 parameters)", small_fit),
                                       ("256 -> 1024 -> 1024 -> 1 (1.3M parameters)", large_fit)]:
        runs = "; ".join(f"{r[0]}, {r[1]}, {r[2]}: {r[5]:.2f}" for r in rows)
        lines.append(f"| {name} | {a * 1e6:.1f} us | {b * 1e6:.2f} us | {c:.3f} s | {r2:.4f} | {runs} |")
    lines += [""] + model_lines + [""] + dist_lines + [""] + load_lines + [""] + sweep_lines + [""] + tab_lines + [""] + txt_lines + [""] + serving_lines + [
        "",
        "## Commands",
        "",
        "```",
        "make bench   # = scripts/libtorch.sh python3 bench/run.py --binary target/release/torchfit --output docs/benchmarks.md",
        "make bench-keras   # once: tensorflow-cpu into ~/.cache/torchfit/keras, so the Keras reference runs",
        f"torchfit train --device cpu --quiet --out DIR                     # Keras example",
        f"python3 bench/reference_torch.py                                   # its PyTorch eager twin",
        f"python3 bench/reference_keras.py                                   # Keras fit (PYTHONPATH=~/.cache/torchfit/keras)",
        f"torchfit train --device cpu --quiet --out DIR {' '.join('--set ' + shlex.quote(s) for s in large_sets)}",
        f"python3 bench/reference_torch.py {' '.join(large_ref)}",
        "python3 bench/run.py --only models   # just the user-module section (CNN and LSTM)",
        f"torchfit train MODEL.yaml --device cpu --quiet --out DIR --set training.epochs={args.model_epochs} "
        f"--set training.batch_size={args.model_batch} --set training.threads={args.model_threads}   # MODEL.yaml: bench/run.py's model_config",
        f"python3 bench/reference_module.py cnn X.npy Y.npy NET.pt --mode scripted --epochs {args.model_epochs} "
        f"--batch-size {args.model_batch} --threads {args.model_threads}   # or --mode eager; lstm likewise",
        "python3 bench/run.py --only distributed   # just the distributed section",
        f"python3 -m torch.distributed.run --standalone --nproc-per-node 2 bench/ddp.py --samples {args.dist_samples}   # PyTorch DDP, 2 processes",
        f"python3 -m torch.distributed.run --no-python --standalone --nproc-per-node 2 torchfit train --device cpu --quiet --out DIR "
        f"--set data.samples={args.dist_samples} ... --set training.threads=1   # torchfit, 2 processes",
        "make bench-csv   # once: pandas and polars into ~/.cache/torchfit/bench, for the loading section",
        "python3 bench/run.py --only loading   # just the loading section (writes its CSV files in a temporary folder)",
        "torchfit train LOAD.yaml --device cpu --quiet --out DIR           # loading: data {kind: csv, path, target: y}, 1 epoch",
        "python3 bench/reference_load.py pandas FILE                       # pandas.read_csv (polars: polars)",
        "make bench-optuna   # once: optuna into ~/.cache/torchfit/optuna, for the sweep section",
        "python3 bench/run.py --only sweep   # just the sweep section",
        f"torchfit sweep SWEEP.yaml --jobs 2 --out DIR {' '.join('--set ' + shlex.quote(s) for s in SWEEP_SETS)}   # SWEEP.yaml: bench/run.py's SWEEP_FILE",
        "python3 bench/reference_optuna.py --jobs 2                       # Optuna GridSampler over the PyTorch eager twin",
        "python3 bench/run.py --only tabular   # just the TabM, FT-Transformer and default-vs-HGB sections",
        f"torchfit train SPEED.yaml --device cpu --quiet --out DIR   # SPEED.yaml: bench/tabular_speed.py's kind_config (model: {{kind: tabm}})",
        f"python3 bench/reference_tabm.py --samples {args.tabular_samples} --features {args.tabular_features} "
        f"--batch-size {args.tabular_batch} --threads {args.tabular_threads}   # the tabm package; reference_ftt.py likewise",
        f"python3 bench/table_bench.py --variants {args.default_variant} --seeds {args.tables_seeds} --threads {args.tabular_threads}   # default vs HGB, every table",
        "python3 bench/run.py --only text   # just the embedding-bag and tokenising sections",
        "torchfit train BAG.yaml --device cpu --quiet --out RUN; torchfit tokenize RUN TEXTS.csv --output IDS.npy   "
        "# BAG.yaml: bench/text_speed.py's text_config; TEXTS.csv: bench/reference_text.py synth",
        f"python3 bench/reference_text.py train IDS.npy TARGETS.npy --tokenizer RUN/tokenizer.json --classes 4 "
        f"--epochs {args.text_epochs} --batch-size {args.text_batch} --threads {args.text_threads}   # the PyTorch loop",
        "python3 bench/reference_tokenizers.py RUN/tokenizer.json --csv SHORT.csv   # encode_batch, 1 thread and all "
        "(make bench-text-deps: the tokenizers package)",
        "make bench-serve-deps   # once: fastapi and uvicorn into ~/.cache/torchfit/serve-bench, for the serving reference",
        "python3 bench/run.py --only serving   # just the serving section (= make bench-serve; needs wrk)",
        f"torchfit serve DIR --port PORT --quiet; wrk -t2 -c8 -d{args.serve_seconds}s --latency -s post.lua http://127.0.0.1:PORT/predict",
        "python3 bench/reference_serve.py DIR/model.pt PORT              # FastAPI + uvicorn, torch.jit.load",
        "```",
        "",
    ]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
