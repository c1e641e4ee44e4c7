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

The text tables (bench/tables.py's TEXT: a free-text column and a class; their configs add
data.text and model.text) take TEXT_VARIANTS (the text encoders) instead of VARIANTS, and
TF-IDF + logistic regression instead of HGB (bench/tables.py's fit_tfidf: word 1-2-grams and
char_wb 2-5-grams, C in 1 and 10), per seed after torchfit's runs: fitted on the training
part less the validation rows of torchfit's run with that seed (its split.json; a draw of the
same size from the seed where no run gave one), each analyzer's C and the better analyzer
picked on those rows, scored on the test part. It runs as a process of its own (`--tfidf-job`),
timed whole and, inside it, from reading to predicting. Their results go to a section of their
own (TEXT_BEGIN, TEXT_END).

A variant is a name and a list of `--set` overrides (VARIANTS). Variants whose keys or values
the binary does not know (`torchfit config` says unknown value or key) are reported as
"n/a (not available)" and not trained; any other failure is shown in its cell.

    python3 bench/table_bench.py --binary target/release/torchfit --write docs/tables.md
    python3 bench/table_bench.py --quick                     # 1 seed, QUICK tables
    python3 bench/table_bench.py --text --write docs/tables.md   # only the text tables
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
# The text tables' variants: each encoder with its own defaults (the whole of model.text set).
TEXT_VARIANTS = [
    ("bag", ["model.text={encoder: bag}"]),
    ("bag_bigrams", ["model.text={encoder: bag, ngrams: 2}"]),
    # 128 tokens, not the templates' 512: attention's time grows with the square of the length.
    ("transformer", ["model.text={encoder: transformer}", "data.tokenizer.max_length=128"]),
]
# The public tables (bench/tables.py's PUBLIC, copied out of their pip packages) and the two
# example tables of the repository.
TABLES = list(tables.PUBLIC) + ["titanic", "diamonds"]
QUICK = ["palmerpenguins", "hdma", "males", "diabetes"]
TEST_FRACTION, VALIDATION_FRACTION, SPLIT_SEED = 0.2, 0.15, 2026
SEEDS = [0, 1, 2]
BEGIN, END = "<!-- bench-tables: begin -->", "<!-- bench-tables: end -->"
TEXT_BEGIN, TEXT_END = "<!-- bench-tables-text: begin -->", "<!-- bench-tables-text: end -->"


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
    target, text = config["data"]["target"], config["data"].get("text") or []
    features = [c for c in df.columns if c != target and c not in text]
    numeric, categorical = tables.column_kinds(df, features, set(config["data"].get("categorical") or []))
    info = {"name": name, "task": config["task"], "target": target, "rows": len(body), "train": len(parts["train"]),
            "test": n_test, "numeric": numeric, "categorical": categorical,
            "missing": int(df[features].isna().sum().sum())}
    if text:
        words = tables.texts(df, text).str.split().str.len()
        info.update(text=text, classes=int(df[target].nunique()), median_words=float(words.median()))
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
    validation = json.loads((out / "run" / "split.json").read_text())["validation"]
    pred = tables.pd.read_csv(out / "pred.csv", dtype=str, keep_default_na=False)
    return {"wall": train_wall + predict_wall, "train_wall": train_wall, "predict_wall": predict_wall,
            "epochs": summary.get("epochs"), "parameters": summary.get("parameters"),
            "pred": pred.iloc[:, 0].tolist(), "validation": validation}


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


def validation_rows(seed, train_rows):
    """Where no torchfit run gave its validation rows: as many (data.validation_split of the
    training part, as sets_for asks of torchfit), drawn from the seed."""
    import numpy as np

    n = round(train_rows * VALIDATION_FRACTION / (1 - TEST_FRACTION))
    return sorted(np.random.default_rng(seed).permutation(train_rows)[:n].tolist())


def tfidf_timed(info, paths, validation):
    """bench/tables.py's fit_tfidf on the training part less the validation rows (indices into
    the training part), its analyzers' predictions for the test part; wall: reading to
    predicting."""
    start = time.perf_counter()
    train, test = tables.read_table(paths["train"]), tables.read_table(paths["test"])
    x, y = tables.texts(train, info["text"]), tables.targets(info["task"], train, info["target"])
    held = set(validation)
    fit = [i for i in range(len(train)) if i not in held]
    r = tables.fit_tfidf(x.iloc[fit].tolist(), y[fit], x.iloc[validation].tolist(), y[validation],
                         tables.texts(test, info["text"]).tolist())
    return dict(r, wall=time.perf_counter() - start)


def tfidf_process(info, paths, seed, validation, threads, work):
    """fit_tfidf as a process of its own (--tfidf-job): Python's start, the imports, reading,
    fitting every candidate, predicting. Returns its results with process_wall, the whole."""
    job = Path(work, f"tfidf-{info['name']}-{seed}.json")
    output = job.with_suffix(".out.json")
    job.write_text(json.dumps({"info": info, "paths": {k: str(v) for k, v in paths.items()},
                               "validation": validation, "threads": threads, "output": str(output)}))
    wall, why = run([sys.executable, str(Path(__file__).resolve()), "--tfidf-job", str(job)])
    if why:
        raise RuntimeError(f"TF-IDF on {info['name']}, seed {seed}: {why}")
    return dict(json.loads(output.read_text()), process_wall=wall)


def tfidf_job(path):
    """--tfidf-job: tfidf_timed with the job's threads; its results as JSON into the job's output."""
    from threadpoolctl import threadpool_limits

    job = json.loads(Path(path).read_text())
    with threadpool_limits(limits=job["threads"] or None):
        r = tfidf_timed(job["info"], job["paths"], job["validation"])
    Path(job["output"]).write_text(json.dumps(r))


def score(info, paths, pred):
    test = tables.read_table(paths["test"])
    truth = tables.targets(info["task"], test, info["target"])
    if info["task"] == "regression":
        pred = [float(p) for p in pred]
    return tables.score(info["task"], truth, pred)


def bench_table(binary, name, variants, seeds, threads, work, results, save, keep_baseline=False):
    """HGB (TF-IDF on a text table) and each variant with each seed on the table; keep_baseline
    (--merge): the baseline runs already in results are kept."""
    paths, info = split_table(name, work)
    entry = results.setdefault(name, {})
    entry["info"] = info
    print(f"{name}: {info['rows']} rows ({info['train']} train, {info['test']} test), "
          f"{len(info['numeric'])} numeric + {len(info['categorical'])} categorical"
          + (f" + text {', '.join(info['text'])}" if "text" in info else ""), file=sys.stderr)
    if "text" in info:
        validation = run_variants(binary, name, info, paths, variants, seeds, threads, work, entry, save)
        if not (keep_baseline and entry.get("TF-IDF")):
            entry["TF-IDF"] = []
            for seed in seeds:
                rows = validation.get(seed)
                r = tfidf_process(info, paths, seed, rows or validation_rows(seed, info["train"]), threads, work)
                for analyzer in tables.TFIDF:
                    r[analyzer]["metrics"] = score(info, paths, r[analyzer].pop("pred"))
                r.update(seed=seed, validation="torchfit's" if rows else "own draw", metrics=r[r["best"]]["metrics"])
                entry["TF-IDF"].append(r)
                print(f"  TF-IDF seed {seed}: {r['best']} {r['metrics']} in {r['wall']:.1f} s", file=sys.stderr)
                save()
        return
    if keep_baseline and entry.get("HGB"):  # --merge: the baseline the earlier variants were measured with
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
    run_variants(binary, name, info, paths, variants, seeds, threads, work, entry, save)


def run_variants(binary, name, info, paths, variants, seeds, threads, work, entry, save):
    """Each variant with each seed into entry; returns the validation rows of each seed (its
    first run's split.json: they depend on the seed and the rows, not on the model)."""
    validation = {}
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
            if validation.setdefault(seed, r["validation"]) != r.pop("validation"):
                print(f"  warning: {variant} seed {seed} validated on other rows than the seed's first run; "
                      "the TF-IDF baseline uses the first run's", file=sys.stderr)
            r["metrics"] = score(info, paths, r.pop("pred"))
            entry[variant].append(dict(r, seed=seed))
            print(f"  {variant} seed {seed}: {r['metrics']} in {r['wall']:.1f} s ({r['epochs']} epochs)", file=sys.stderr)
        save()
    return validation


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "torchfit"))
    p.add_argument("--tables", help=f"comma-separated names (default: all: {','.join(TABLES)})")
    p.add_argument("--text", action="store_true", help=f"the text tables only: {','.join(tables.TEXT)}")
    p.add_argument("--variants", help="comma-separated names or globs (mlp,resnet; tabm*); default: all of "
                   + ",".join(v for v, _ in VARIANTS + TEXT_VARIANTS) + ". A table none of whose variants "
                   "is chosen is left out")
    p.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1 (default 3)")
    p.add_argument("--quick", action="store_true", help=f"1 seed, tables {','.join(QUICK)} (with --text: the text tables)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads of torchfit (training.threads) and of HGB (OpenMP, threadpoolctl); 0: each one's "
                        "default (all cores). Default 1: on a shared machine, 2 OpenMP threads that wait for each "
                        "other can make an epoch 10-50x slower")
    p.add_argument("--results", help="where the results go as they come (default runs/tables/results.json; "
                   "with --quick, runs/tables/quick.json)")
    p.add_argument("--write", help="put the comparison between the bench-tables markers of this Markdown file "
                   "(the text tables' between the bench-tables-text markers)")
    p.add_argument("--render", help="no training: render this results.json")
    p.add_argument("--merge", action="store_true", help="add to the results already in --results: their other "
                   "tables and variants, and the baselines' runs, are kept")
    p.add_argument("--hgb-job", help=argparse.SUPPRESS)  # one whole-process HGB run (hgb_process)
    p.add_argument("--tfidf-job", help=argparse.SUPPRESS)  # one whole-process TF-IDF run (tfidf_process)
    args = p.parse_args()
    if args.hgb_job:
        return hgb_job(args.hgb_job)
    if args.tfidf_job:
        return tfidf_job(args.tfidf_job)
    import render  # noqa: E402  (bench/render.py: the Markdown)

    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        names = args.tables.split(",") if args.tables else (tables.TEXT if args.text else QUICK if args.quick else TABLES)
        unknown = [n for n in names if n not in TABLES]
        if unknown:
            sys.exit(f"bench/table_bench.py: unknown table {', '.join(unknown)}; known: {', '.join(TABLES)}")
        patterns = args.variants.split(",") if args.variants else ["*"]
        chosen = lambda kinds: [(v, s) for v, s in kinds if any(fnmatch.fnmatchcase(v, pat) for pat in patterns)]
        variants, text_variants = chosen(VARIANTS), chosen(TEXT_VARIANTS)
        if not variants and not text_variants:
            sys.exit(f"bench/table_bench.py: --variants {args.variants} matches none of "
                     f"{', '.join(v for v, _ in VARIANTS + TEXT_VARIANTS)}")
        names = [n for n in names if (text_variants if n in tables.TEXT else variants)]
        if not names:
            sys.exit("bench/table_bench.py: none of the variants chosen applies to the tables chosen "
                     f"(text tables: {', '.join(v for v, _ in TEXT_VARIANTS)}; the others: {', '.join(v for v, _ in VARIANTS)})")
        seeds = list(range(1 if args.quick else args.seeds))
        binary = str(Path(args.binary).resolve())
        if not Path(binary).exists():
            sys.exit(f"bench/table_bench.py: {binary} does not exist: build it first (make build)")
        results = {"_meta": {"seeds": seeds, "variants": [v for v, _ in variants],
                             "text_variants": [v for v, _ in text_variants],
                             "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                             "cores": os.cpu_count(), "load_before": os.getloadavg()[0], "threads": args.threads,
                             "sets": dict(variants + text_variants)}}
        out = Path(args.results or ROOT / "runs" / "tables" / ("quick.json" if args.quick else "results.json"))
        if args.merge and out.exists():  # earlier tables kept, these ones measured again
            earlier = json.loads(out.read_text())
            meta = results["_meta"]
            run_before = lambda key, kinds: [v for v, _ in kinds
                                             if v in set(earlier["_meta"].get(key, [])) | set(meta[key])]
            results = dict(earlier, _meta=dict(meta, started=earlier["_meta"]["started"],
                                               seeds=sorted(set(earlier["_meta"]["seeds"]) | set(meta["seeds"])),
                                               earlier_seconds=earlier["_meta"].get("seconds", 0),
                                               load_before=earlier["_meta"].get("load_before", meta["load_before"]),
                                               variants=run_before("variants", VARIANTS),
                                               text_variants=run_before("text_variants", TEXT_VARIANTS),
                                               sets=dict(earlier["_meta"].get("sets", {}), **meta["sets"])))
        out.parent.mkdir(parents=True, exist_ok=True)
        save = lambda: out.write_text(json.dumps(results, indent=1))
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="torchfit-bench-tables-") as work:
            warm_up_hgb()
            for name in names:
                kinds = text_variants if name in tables.TEXT else variants
                bench_table(binary, name, kinds, seeds, args.threads, work, results, save, keep_baseline=args.merge)
        results["_meta"].update(seconds=time.perf_counter() - start + results["_meta"].pop("earlier_seconds", 0),
                                load_after=os.getloadavg()[0])
        save()
    sets = dict(VARIANTS + TEXT_VARIANTS)
    # Each section only where the results have its tables: --text leaves the others' alone.
    for names_of, markdown, begin, end in [(render.table_names, render.markdown, BEGIN, END),
                                           (render.text_table_names, render.text_markdown, TEXT_BEGIN, TEXT_END)]:
        if not names_of(results):
            continue
        text = markdown(results, sets)
        print(text)
        if args.write:
            render.replace_section(Path(args.write), text, begin, end)


if __name__ == "__main__":
    main()
