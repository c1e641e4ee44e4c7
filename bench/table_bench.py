"""`make bench-tables`: each torchfit model variant next to scikit-learn's HistGradientBoosting
on the public tables (and the two example tables), one fixed split each, several seeds.

For each table of TABLES (its config in configs/public/, one template for all):

  1. The table is cut once into a training part and a test part (TEST_FRACTION of the rows,
     numpy's default_rng(SPLIT_SEED)): the same rows for every model and seed. The parts are
     written as CSV files beside each other in the work folder, cells as in the table.
  2. torchfit, for each variant and seed: `torchfit train CONFIG` on the training part
     (data.test_split=0, data.validation_split such that validation is VALIDATION_FRACTION of
     the whole table, seed=S, then the variant's --set overrides), then `torchfit predict` on
     the test part. Wall time: both processes, whole (start-up, reading, preprocessing,
     training with early stopping, writing the run, predicting). The seed moves the
     validation rows, the initial weights and the batches.
  3. HistGradientBoosting (bench/tables.py's fit_hgb: native categories, defaults), per seed
     (random_state): read both CSV files, fit on the training part, predict the test part,
     timed twice: in this process (the Python start-up and imports not counted), and as a
     whole process of its own as a user runs it (`--hgb-job`: Python's start, the imports of
     pandas and scikit-learn, reading, fitting, predicting, writing the predictions).
  4. Both scored by the same code on the test part: accuracy and macro F1, or R² and MAE.

A variant is a name and a list of `--set` overrides (VARIANTS). Variants whose keys or values
the binary does not know (`torchfit config` says unknown value or key) are reported as
"n/a (not available)" and not trained; any other failure is shown in its cell.

    python3 bench/table_bench.py --binary target/release/torchfit --write docs/tables.md
    python3 bench/table_bench.py --quick                     # 1 seed, QUICK tables
    python3 bench/table_bench.py --variants mlp,resnet --tables males,hdma --seeds 2
    python3 bench/table_bench.py --render runs/tables/results.json   # the Markdown again

Every result is kept in runs/tables/results.json (--quick: quick.json; --results) as it comes, and the Markdown is
printed (and, with --write FILE, put between the markers of FILE's comparison section).
Needs what bench/tables.py needs (`make bench-tables-deps`).
"""
import argparse
import csv
import fnmatch
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import tables  # noqa: E402  (bench/tables.py: reading, column kinds, HGB, scores, public tables)

# One line per model variant: name, --set overrides on the table's config (the plain MLP).
VARIANTS = [
    ("mlp", []),
    ("resnet", ["model={kind: resnet}"]),
    ("mlp+piecewise_linear", ["model.numeric_embedding={kind: piecewise_linear}"]),
    ("mlp+periodic", ["model.numeric_embedding={kind: periodic}"]),
    ("tabm", ["model={kind: tabm}"]),
    ("tabm+piecewise_linear", ["model={kind: tabm, numeric_embedding: {kind: piecewise_linear}}"]),
    ("tabm+periodic", ["model={kind: tabm, numeric_embedding: {kind: periodic}}"]),
    # With the paper's optimizer (rtdl_revisiting_models' make_default_optimizer, docs/models.md):
    # the template's lr 0.002 is twenty times the rate attention is trained with.
    ("ft_transformer", ["model={kind: ft_transformer}", "training.optimizer={kind: adamw, lr: 0.0001, "
                        "weight_decay: 0.00001, param_groups: [{params: ['cls_embedding.*', 'cont_embeddings.*', "
                        "'cat_embeddings.*', '*_normalization.*', '*.bias'], weight_decay: 0.0}]}"]),
]
# The public tables (bench/tables.py's PUBLIC, copied out of their pip packages) and the two
# example tables of the repository.
TABLES = list(tables.PUBLIC) + ["titanic", "diamonds"]
QUICK = ["palmerpenguins", "hdma", "males", "diabetes"]
TEST_FRACTION, VALIDATION_FRACTION, SPLIT_SEED = 0.2, 0.15, 2026
SEEDS = [0, 1, 2]
BEGIN, END = "<!-- bench-tables: begin -->", "<!-- bench-tables: end -->"


def table_csv(name):
    """The table's CSV file: the repository's data/ for the examples, else copied out of its
    package into ~/.cache/torchfit/tables/csv (once)."""
    if name not in tables.PUBLIC:
        return ROOT / "data" / f"{name}.csv"
    path = tables.CACHE / "csv" / f"{name}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(tables.public_text(name))
    return path


def load_config(name):
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "public" / f"{name}.yaml").read_text())
    return config


def split_table(name, work):
    """Writes NAME-train.csv and NAME-test.csv (the fixed split) into work; returns their paths
    and a description of the table."""
    import numpy as np

    config = load_config(name)
    with open(table_csv(name), newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(body))
    n_test = round(len(body) * TEST_FRACTION)
    parts = {"test": sorted(order[:n_test]), "train": sorted(order[n_test:])}
    paths = {}
    for part, idx in parts.items():
        paths[part] = Path(work, f"{name}-{part}.csv")
        with open(paths[part], "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([header] + [body[i] for i in idx])
    df = tables.read_table(table_csv(name))
    target = config["data"]["target"]
    features = [c for c in df.columns if c != target]
    numeric, categorical = tables.column_kinds(df, features, set(config["data"].get("categorical") or []))
    info = {"name": name, "task": config["task"], "target": target, "rows": len(body), "train": len(parts["train"]),
            "test": n_test, "numeric": numeric, "categorical": categorical,
            "missing": int(df[features].isna().sum().sum())}
    return paths, info


def run(cmd):
    """Runs cmd; returns (wall seconds, None) or (wall, one line saying why it failed)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode == 0:
        return wall, None
    lines = [l.strip() for l in proc.stderr.splitlines() if l.strip()]
    why = next((l for l in lines if l.startswith("torchfit: ")), (lines or [f"exit {proc.returncode}"])[-1])
    return wall, why[:200]


def sets_for(paths, seed, variant_sets, threads):
    validation = VALIDATION_FRACTION / (1 - TEST_FRACTION)
    return [f"data.path={paths['train']}", "data.test_split=0", f"data.validation_split={validation:.6f}",
            f"seed={seed}"] + ([f"training.threads={threads}"] if threads else []) + variant_sets


def available(binary, name, variant_sets):
    """None when the binary takes the variant's overrides on this table's config, else why not:
    'n/a (not available)' for a kind, key or value it does not know, the error otherwise."""
    cmd = [binary, "config", str(ROOT / "configs" / "public" / f"{name}.yaml")]
    for s in variant_sets:
        cmd += ["--set", s]
    _, why = run(cmd)
    if why is None:
        return None
    return "n/a (not available)" if ("unknown value" in why or "unknown key" in why) else f"failed: {why}"


def torchfit_once(binary, name, paths, seed, variant_sets, work, threads):
    out = Path(tempfile.mkdtemp(dir=work))
    cmd = [binary, "train", str(ROOT / "configs" / "public" / f"{name}.yaml"), "--device", "cpu", "--quiet",
           "--out", str(out / "run")]
    for s in sets_for(paths, seed, variant_sets, threads):
        cmd += ["--set", s]
    train_wall, why = run(cmd)
    if why:
        return {"error": why}
    predict_wall, why = run([binary, "predict", str(out / "run"), str(paths["test"]), "--output", str(out / "pred.csv")])
    if why:
        return {"error": why}
    summary = json.loads((out / "run" / "summary.json").read_text())
    pred = tables.pd.read_csv(out / "pred.csv", dtype=str, keep_default_na=False)
    return {"wall": train_wall + predict_wall, "train_wall": train_wall, "predict_wall": predict_wall,
            "epochs": summary.get("epochs"), "parameters": summary.get("parameters"),
            "pred": pred.iloc[:, 0].tolist()}


def hgb_once(info, paths, seed, threads):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads or None):
        return hgb_timed(info, paths, seed)


def warm_up_hgb():
    """One tiny fit and predict, so that the first table's time holds no one-time imports."""
    import numpy as np

    x = tables.pd.DataFrame({"a": np.arange(50.0), "b": tables.pd.Categorical(["u", "v"] * 25)})
    for task, y in [("regression", np.arange(50.0)), ("classification", np.array(["p", "q"] * 25, dtype=object))]:
        tables.fit_hgb(task, x, y, x, ["b"], 0)


def hgb_timed(info, paths, seed):
    start = time.perf_counter()
    train, test = tables.read_table(paths["train"]), tables.read_table(paths["test"])
    x_train = tables.features(train, info["numeric"], info["categorical"])
    x_test = tables.features(test, info["numeric"], info["categorical"])
    y_train = tables.targets(info["task"], train, info["target"])
    pred = tables.fit_hgb(info["task"], x_train, y_train, x_test, info["categorical"], seed)
    return {"wall": time.perf_counter() - start, "pred": [str(p) for p in pred]}


def hgb_process(info, paths, seed, threads, work):
    """HGB's whole-process wall time: this script started again with --hgb-job, which imports,
    reads both parts, fits, predicts and writes the predictions, as a user's script would.
    Returns (seconds, predictions) or raises with the job's last line of error."""
    job = Path(work, f"hgb-{info['name']}-{seed}.json")
    pred = job.with_suffix(".csv")
    job.write_text(json.dumps({"info": info, "paths": {k: str(v) for k, v in paths.items()}, "seed": seed,
                               "threads": threads, "output": str(pred)}))
    wall, why = run([sys.executable, str(Path(__file__).resolve()), "--hgb-job", str(job)])
    if why:
        raise RuntimeError(f"HGB on {info['name']}, seed {seed}, as a process: {why}")
    return wall, pred.read_text().splitlines()


def hgb_job(path):
    """--hgb-job: one HGB fit and predict; the predictions, one per line, into the job's output."""
    job = json.loads(Path(path).read_text())
    r = hgb_once(job["info"], job["paths"], job["seed"], job["threads"])
    Path(job["output"]).write_text("".join(f"{p}\n" for p in r["pred"]))


def score(info, paths, pred):
    test = tables.read_table(paths["test"])
    truth = tables.targets(info["task"], test, info["target"])
    if info["task"] == "regression":
        pred = [float(p) for p in pred]
    return tables.score(info["task"], truth, pred)


def bench_table(binary, name, variants, seeds, threads, work, results, save, keep_hgb=False):
    paths, info = split_table(name, work)
    entry = results.setdefault(name, {})
    entry["info"] = info
    print(f"{name}: {info['rows']} rows ({info['train']} train, {info['test']} test), "
          f"{len(info['numeric'])} numeric + {len(info['categorical'])} categorical", file=sys.stderr)
    if keep_hgb and entry.get("HGB"):  # --merge: the baseline the earlier variants were measured with
        seeds_hgb = []
    else:
        entry["HGB"], seeds_hgb = [], seeds
    for seed in seeds_hgb:
        r = hgb_once(info, paths, seed, threads)
        process_wall, process_pred = hgb_process(info, paths, seed, threads, work)
        if process_pred != r["pred"]:  # the same fit twice: a difference means the job is not what was scored
            raise RuntimeError(f"HGB on {name}, seed {seed}: the process's predictions differ from this one's")
        entry["HGB"].append({"wall": r["wall"], "process_wall": process_wall, "seed": seed,
                             "metrics": score(info, paths, r["pred"])})
    for variant, variant_sets in variants:
        why = available(binary, name, variant_sets)
        if why:
            entry[variant] = {"error": why}
            continue
        entry[variant] = []
        for seed in seeds:
            r = torchfit_once(binary, name, paths, seed, variant_sets, work, threads)
            if "error" in r:
                entry[variant] = {"error": f"failed: {r['error']}"}
                break
            r["metrics"] = score(info, paths, r.pop("pred"))
            entry[variant].append(dict(r, seed=seed))
            print(f"  {variant} seed {seed}: {r['metrics']} in {r['wall']:.1f} s ({r['epochs']} epochs)", file=sys.stderr)
        save()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "torchfit"))
    p.add_argument("--tables", help=f"comma-separated names (default: all: {','.join(TABLES)})")
    p.add_argument("--variants", help="comma-separated names or globs (mlp,resnet; tabm*); default: all of "
                   + ",".join(v for v, _ in VARIANTS))
    p.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1 (default 3)")
    p.add_argument("--quick", action="store_true", help=f"1 seed, tables {','.join(QUICK)}")
    p.add_argument("--threads", type=int, default=1,
                   help="threads of torchfit (training.threads) and of HGB (OpenMP, threadpoolctl); 0: each one's "
                        "default (all cores). Default 1: on a shared machine, 2 OpenMP threads that wait for each "
                        "other can make an epoch 10-50x slower")
    p.add_argument("--results", help="where the results go as they come (default runs/tables/results.json; "
                   "with --quick, runs/tables/quick.json)")
    p.add_argument("--write", help="put the comparison between the bench-tables markers of this Markdown file")
    p.add_argument("--render", help="no training: render this results.json")
    p.add_argument("--merge", action="store_true", help="add to the results already in --results: their other "
                   "tables and variants, and HGB's runs, are kept")
    p.add_argument("--hgb-job", help=argparse.SUPPRESS)  # one whole-process HGB run (hgb_process)
    args = p.parse_args()
    if args.hgb_job:
        return hgb_job(args.hgb_job)
    import render  # noqa: E402  (bench/render.py: the Markdown)

    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        names = args.tables.split(",") if args.tables else (QUICK if args.quick else TABLES)
        unknown = [n for n in names if n not in TABLES]
        if unknown:
            sys.exit(f"bench/table_bench.py: unknown table {', '.join(unknown)}; known: {', '.join(TABLES)}")
        patterns = args.variants.split(",") if args.variants else ["*"]
        variants = [(v, s) for v, s in VARIANTS if any(fnmatch.fnmatchcase(v, pat) for pat in patterns)]
        if not variants:
            sys.exit(f"bench/table_bench.py: --variants {args.variants} matches none of {', '.join(v for v, _ in VARIANTS)}")
        seeds = list(range(1 if args.quick else args.seeds))
        binary = str(Path(args.binary).resolve())
        if not Path(binary).exists():
            sys.exit(f"bench/table_bench.py: {binary} does not exist: build it first (make build)")
        results = {"_meta": {"seeds": seeds, "variants": [v for v, _ in variants], "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                             "cores": os.cpu_count(), "load_before": os.getloadavg()[0], "threads": args.threads,
                             "sets": dict(variants)}}
        out = Path(args.results or ROOT / "runs" / "tables" / ("quick.json" if args.quick else "results.json"))
        if args.merge and out.exists():  # earlier tables kept, these ones measured again
            earlier = json.loads(out.read_text())
            meta = results["_meta"]
            names_run = set(earlier["_meta"]["variants"]) | set(meta["variants"])
            results = dict(earlier, _meta=dict(meta, started=earlier["_meta"]["started"],
                                               earlier_seconds=earlier["_meta"].get("seconds", 0),
                                               load_before=earlier["_meta"].get("load_before", meta["load_before"]),
                                               variants=[v for v, _ in VARIANTS if v in names_run],
                                               sets=dict(earlier["_meta"].get("sets", {}), **meta["sets"])))
        out.parent.mkdir(parents=True, exist_ok=True)
        save = lambda: out.write_text(json.dumps(results, indent=1))
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="torchfit-bench-tables-") as work:
            warm_up_hgb()
            for name in names:
                bench_table(binary, name, variants, seeds, args.threads, work, results, save, keep_hgb=args.merge)
        results["_meta"].update(seconds=time.perf_counter() - start + results["_meta"].pop("earlier_seconds", 0),
                                load_after=os.getloadavg()[0])
        save()
    text = render.markdown(results, dict(VARIANTS))
    print(text)
    if args.write:
        render.replace_section(Path(args.write), text, BEGIN, END)


if __name__ == "__main__":
    main()
