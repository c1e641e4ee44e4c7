"""bench/run.py's sections on the tabular model kinds (issue 21's speed goals):

- `kind_section`: `torchfit train` with `model: {kind: tabm}` (or `ft_transformer`) on a seeded
  synthetic regression table next to the reference package's module in a plain PyTorch loop
  (bench/reference_tabm.py, bench/reference_ftt.py): same rows, features, batch, epochs,
  optimizer and threads; samples/s over the training loop, interleaved rounds, the ratio.
  When the binary refuses the kind, the section says so and measures nothing.
- `default_vs_hgb_section`: whole-process wall time of the recommended default vs
  HistGradientBoosting on each table of `make bench-tables` (bench/table_bench.py's machinery).
"""
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Failed, fmt, measure, torchfit_train  # noqa: E402  (bench/run.py)

SKIP = 77  # bench/refpkgs.py: the reference package could not be installed

KINDS = {
    # kind: (title, reference script, the torchfit optimizer as the reference's, goal, reference's description)
    "tabm": ("TabM (k = 32)", "reference_tabm.py", "{kind: adamw, lr: 0.002, weight_decay: 0.0003}", 1.5,
             "the `tabm` package's `TabM.make(n_num_features, cat_cardinalities=[], d_out=1)` (its defaults: "
             "k = 32, 3 blocks of 512, dropout 0.1), each member on its own shuffle of the rows, loss the mean "
             "of the members' MSE, AdamW (lr 2e-3, weight decay 3e-4)"),
    "ft_transformer": ("FT-Transformer", "reference_ftt.py", "{kind: adamw, lr: 0.0001, weight_decay: 0.00001}", 1.2,
                       "`rtdl_revisiting_models.FTTransformer(**FTTransformer.get_default_kwargs())` (3 blocks, "
                       "d_block 192, 8 heads) with its `make_default_optimizer()` (AdamW, lr 1e-4, weight decay 1e-5)"),
}


def kind_config(kind, work, samples, features, batch, threads):
    config = Path(work, f"speed-{kind}.yaml")
    config.write_text(
        f"name: bench_{kind}\nseed: 0\ntask: regression\n"
        f"data: {{kind: linear, samples: {samples}, features: {features}, validation_split: 0, test_split: 0}}\n"
        f"model: {{kind: {kind}}}\n"
        f"training: {{epochs: 1, batch_size: {batch}, loss: mse, metrics: [], threads: {threads}, "
        f"checkpoint_every: 1000, optimizer: {KINDS[kind][2]}}}\n")
    return config


def interleave(programs, repeats, what):
    """Runs each program once per round; returns ({name: its results}, {name: why it failed})."""
    runs, failed = {name: [] for name in programs}, {}
    for i in range(repeats):
        print(f"{what}: round {i + 1}/{repeats}", file=sys.stderr)
        for name, program in programs.items():
            if name not in failed:
                try:
                    runs[name].append(program())
                except Failed as e:
                    failed[name] = str(e)
    return runs, failed


def refused(binary, config):
    """The binary's one-line refusal of the config (an unknown model.kind), or None."""
    got = subprocess.run([binary, "config", str(config)], capture_output=True, text=True)
    if got.returncode == 0:
        return None
    return next((l for l in got.stderr.splitlines() if l.startswith("torchfit: ")), got.stderr.strip()[-200:])


def reference(kind, samples, features, batch, threads):
    cmd = [sys.executable, str(HERE / KINDS[kind][1]), "--samples", str(samples), "--features", str(features),
           "--batch-size", str(batch), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == SKIP:
        raise Failed("not installed: " + (proc.stderr.strip().splitlines() or ["pip failed"])[-1])
    if proc.returncode != 0:
        raise Failed((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"train": result["train_seconds"], "loss": result["final_loss"]}


def kind_section(binary, work, kind, samples, features, batch, threads, repeats):
    title, script, _, goal, described = KINDS[kind]
    config = kind_config(kind, work, samples, features, batch, threads)
    lines = [f"## {title} on a {samples:,}-row table ({features} numeric features, batch {batch}, 1 epoch, "
             f"{threads} thread{'s' * (threads != 1)}), CPU", ""]
    why = refused(binary, str(config))
    if why:
        why = why.replace(str(config), "its config")
        return lines + [f"This binary does not train `model: {{kind: {kind}}}` yet ({why}), so nothing was "
                        f"measured; bench/{script} is the reference it will be set against.", ""]
    lines += [
        f"`torchfit train` with `model: {{kind: {kind}}}` (its defaults) on a seeded `kind: linear` table, "
        f"next to {described} in a plain PyTorch loop (bench/{script}) on a seeded table of the same shape. "
        "Same rows, batch, epoch and threads (`training.threads`, `torch.set_num_threads`). Samples/s: rows over "
        f"the training loop's time (torchfit's `train_seconds`); medians of {repeats} interleaved rounds.",
        "",
        "| program | training loop | samples/s | last epoch's loss |",
        "|---|---|---|---|",
    ]
    programs = {
        "torchfit": lambda: torchfit_train(binary, [], work, config=config, check=False),
        "reference": lambda: reference(kind, samples, features, batch, threads),
    }
    runs, failed = interleave(programs, repeats, kind)
    labels = {"torchfit": f"torchfit, `model.kind: {kind}`", "reference": f"PyTorch loop, bench/{script}"}
    rate = {}
    for name in programs:
        if name in failed:
            lines.append(f"| {labels[name]} | failed: {failed[name]} | - | - |")
            continue
        rate[name] = samples / statistics.median(r["train"] for r in runs[name])
        lines.append(f"| {labels[name]} | {fmt([r['train'] for r in runs[name]])} | {rate[name]:,.0f} | "
                     f"{statistics.median(r['loss'] for r in runs[name]):.4f} |")
    lines.append("")
    if len(rate) == 2:
        got = rate["torchfit"] / rate["reference"]
        lines.append(f"- torchfit / the reference: **{got:.2f}x** samples/s (goal >= {goal}x: {'met' if got >= goal else 'not met'}).")
    else:
        lines.append(f"- torchfit / the reference: n/a ({' and '.join(failed)} failed).")
    return lines + [""]


def default_vs_hgb_section(binary, work, variant, seeds, threads):
    """Wall time of the recommended default (a bench/table_bench.py variant) vs HGB on each table,
    measured by bench/table_bench.py in a process of its own (it brings scikit-learn and pandas
    from ~/.cache/torchfit/tables, which this process must not mix with torch's numpy)."""
    import render

    out = Path(work, "default-vs-hgb.json")
    cmd = [sys.executable, str(HERE / "table_bench.py"), "--binary", binary, "--variants", variant,
           "--seeds", str(len(seeds)), "--threads", str(threads), "--results", str(out)]
    print(f"default vs HGB: {' '.join(cmd[1:])}", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    title = "## The recommended default vs HistGradientBoosting: wall time on the tables of `make bench-tables`, CPU"
    if proc.returncode != 0 or not out.exists():
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return [title, "", f"Not measured: bench/table_bench.py failed ({why}; `make bench-tables-deps` installs "
                "what it needs).", ""]
    results = json.loads(out.read_text())
    sets = results["_meta"]["sets"][variant]
    lines = [
        title,
        "",
        f"The recommended default (`{variant}`: " + (" ".join(f"`--set {s}`" for s in sets) or "configs/public/'s template as it is")
        + f") and scikit-learn's HistGradientBoosting on each table's fixed split, seed{'s' * (len(seeds) != 1)} "
        f"{', '.join(map(str, seeds))}, {threads or 'default'} thread{'s' * (threads != 1)} each. torchfit: `torchfit train` "
        "(early stopping) + `torchfit predict` on the test part, whole processes; HGB: reading both parts, fit and "
        "predict, as a process of its own (Python's start, the imports of pandas and scikit-learn, reading, "
        "fitting, predicting, writing the predictions: what the goal compares) and inside an already started "
        "Python (no start, no imports: the stricter view). Quality: docs/tables.md.",
        "",
        "| table | HGB, process | HGB, in Python | torchfit | of which `predict` | torchfit / HGB process | goal <= 3x "
        "| torchfit / HGB in Python |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ratios, strict = [], []
    for name in render.table_names(results):
        runs, why = render.runs_of(results[name], variant)
        hgb, process = render.wall(results[name]["HGB"]), render.process_wall(results[name]["HGB"])
        if not runs or process is None:
            lines.append(f"| {name} | - | {hgb:.2f} s | {why or 'HGB not timed as a process'} | - | - | - | - |")
            continue
        ratio = render.wall(runs) / process
        ratios.append(ratio)
        strict.append(render.wall(runs) / hgb)
        predict = statistics.mean(r["predict_wall"] for r in runs)
        lines.append(f"| {name} | {process:.2f} s | {hgb:.2f} s | {render.wall(runs):.2f} s | {predict:.2f} s | "
                     f"{ratio:.2f}x | {'met' if ratio <= 3 else 'not met'} | {strict[-1]:.2f}x |")
    met = sum(r <= 3 for r in ratios)
    lines += ["", f"- Within 3x of HGB's whole-process wall time on **{met} of {len(ratios)}** tables (worst "
              f"{max(ratios):.2f}x); against HGB's fit and predict inside a started Python, within 3x on "
              f"{sum(r <= 3 for r in strict)} of {len(strict)} (worst {max(strict):.1f}x)." if ratios
              else "- No table measured.", ""]
    return lines
