"""The Markdown of `make bench-tables` (bench/table_bench.py's results.json): the tables, the
quality and wall time of each variant next to HistGradientBoosting, and a tally per variant;
for the text tables, a section of their own: each text encoder next to TF-IDF + logistic
regression. Also used by bench/run.py's section on the recommended default's wall time."""
import statistics
from pathlib import Path

PRIMARY = {"classification": ("accuracy", "f1", "acc", "F1"), "regression": ("r2", "mae", "R²", "MAE")}


def runs_of(entry, variant):
    """The variant's runs on a table, or None with the reason in the second place."""
    got = entry.get(variant)
    if got is None:
        return None, "not run"
    if isinstance(got, dict):
        return None, got["error"]
    return got, None


def mean_sd(values):
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def number(v):
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"


def quality_cell(task, runs):
    key, second, _, second_label = PRIMARY[task]
    m, sd = mean_sd([r["metrics"][key] for r in runs])
    m2, _ = mean_sd([r["metrics"][second] for r in runs])
    spread = f" ± {number(sd)}" if len(runs) > 1 else ""
    return f"{number(m)}{spread} ({second_label} {number(m2)})"


def wall(runs):
    return statistics.mean(r["wall"] for r in runs)


def process_wall(hgb_runs):
    """HGB's whole-process wall time (Python's start and imports included), or None for results
    measured before table_bench.py timed it."""
    walls = [r.get("process_wall") for r in hgb_runs]
    return statistics.mean(walls) if walls and None not in walls else None


def variant_names(results):
    return results["_meta"]["variants"]


def table_names(results):
    """The tables compared with HGB (not the text tables)."""
    return [n for n in results if not n.startswith("_") and "text" not in results[n]["info"]]


def text_table_names(results):
    return [n for n in results if not n.startswith("_") and "text" in results[n]["info"]]


def tables_section(results):
    lines = ["| table | task | rows: train / test | features: numeric + categorical | missing feature cells |",
             "| --- | --- | --- | --- | --- |"]
    for name in table_names(results):
        i = results[name]["info"]
        lines.append(f"| {name} | {i['task']} | {i['train']} / {i['test']} | {len(i['numeric'])} + {len(i['categorical'])} | {i['missing']} |")
    return lines


def quality_section(results):
    variants = variant_names(results)
    lines = ["| table | metric | HGB | " + " | ".join(variants) + " |", "|---" * (3 + len(variants)) + "|"]
    for name in table_names(results):
        entry, task = results[name], results[name]["info"]["task"]
        cells = [quality_cell(task, entry["HGB"])]
        for v in variants:
            runs, why = runs_of(entry, v)
            cells.append(quality_cell(task, runs) if runs else why)
        lines.append(f"| {name} | {PRIMARY[task][2]} | " + " | ".join(cells) + " |")
    return lines


def wall_section(results):
    variants = variant_names(results)
    lines = ["| table | HGB | " + " | ".join(variants) + " |", "|---" * (2 + len(variants)) + "|"]
    for name in table_names(results):
        entry = results[name]
        hgb, process = wall(entry["HGB"]), process_wall(entry["HGB"])
        cells = [f"{hgb:.2f} s" + (f" (process {process:.2f} s)" if process else "")]
        for v in variants:
            runs, why = runs_of(entry, v)
            if not runs:
                cells.append(why)
                continue
            epochs = statistics.mean(r["epochs"] for r in runs)
            cells.append(f"{wall(runs):.1f} s ({wall(runs) / hgb:.1f}x; {epochs:.0f} epochs)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def tally_section(results):
    """Per variant: tables where its mean beats the plain MLP's, where it is at or above HGB's
    (accuracy or R²; also counted with one standard deviation of its own seeds' spread in its
    favour: HGB's is nil below 10,000 rows), and its wall time over HGB's."""
    variants = variant_names(results)
    lines = ["| variant | tables run | beats mlp (mean) | >= HGB (mean) | >= HGB within its own sd | wall / HGB: median, max |",
             "| --- | --- | --- | --- | --- | --- |"]
    for v in variants:
        run, beats_mlp, ge_hgb, near_hgb, ratios = 0, 0, 0, 0, []
        for name in table_names(results):
            entry, task = results[name], results[name]["info"]["task"]
            key = PRIMARY[task][0]
            runs, _ = runs_of(entry, v)
            if not runs:
                continue
            run += 1
            m, sd = mean_sd([r["metrics"][key] for r in runs])
            hgb_m = mean_sd([r["metrics"][key] for r in entry["HGB"]])[0]
            mlp_runs, _ = runs_of(entry, "mlp")
            if mlp_runs and v != "mlp":
                beats_mlp += m > mean_sd([r["metrics"][key] for r in mlp_runs])[0]
            ge_hgb += m >= hgb_m
            near_hgb += m + sd >= hgb_m
            ratios.append(wall(runs) / wall(entry["HGB"]))
        if not run:
            why = next((why for n in table_names(results) for _, why in [runs_of(results[n], v)]), "not run")
            lines.append(f"| {v} | 0 ({why}) | - | - | - | - |")
            continue
        mlp_cell = "-" if v == "mlp" else f"{beats_mlp} of {run}"
        lines.append(f"| {v} | {run} | {mlp_cell} | {ge_hgb} of {run} | {near_hgb} of {run} | "
                     f"{statistics.median(ratios):.1f}x, {max(ratios):.1f}x |")
    return lines


def measured(results, baseline):
    """The first paragraph: when, how long, seeds, threads, load."""
    meta = results["_meta"]
    took = f", {meta['seconds'] / 60:.0f} minutes in all" if "seconds" in meta else ""
    busy = max(meta.get("load_before", 0), meta.get("load_after", 0)) > meta.get("cores", 1)
    load = (f" Load average (1 minute) at the start and end: {meta['load_before']:.1f}, {meta.get('load_after', 0):.1f} "
            f"on {meta['cores']} cores" + (" (above the core count: other work shared the machine)." if busy else ".")
            ) if "load_before" in meta else ""
    threads = {0: "every program with its default threads", 1: "one thread"}.get(meta.get("threads"), f"{meta.get('threads')} threads")
    return (f"Measured by `make bench-tables` (bench/table_bench.py) on {meta['started']}, CPU{took}; "
            f"seeds {', '.join(map(str, meta['seeds']))} (the mean ± the standard deviation over seeds); "
            f"{threads} for torchfit and {baseline} alike.{load}")


def overrides(variants, variant_sets):
    return "; ".join(f"`{v}`: " + (" ".join(f"`--set {s}`" for s in variant_sets.get(v, [])) or "the config as it is")
                     for v in variants)


def markdown(results, variant_sets):
    return "\n".join([
        measured(results, "HGB"),
        "",
        f"Variants (each one `--set` list on the table's config in configs/public/): "
        f"{overrides(variant_names(results), variant_sets)}.",
        "",
        *tables_section(results),
        "",
        "**Quality on the test part** (accuracy or R², higher is better; in brackets macro F1 or MAE in the "
        "target's units, means over seeds):",
        "",
        *quality_section(results),
        "",
        "**Wall time**, mean over seeds: torchfit is `torchfit train` (early stopping) plus `torchfit predict` "
        "on the test part, whole processes; HGB is reading both parts, fit and predict inside Python "
        "(imports not counted; where measured, HGB as a whole process of its own, Python's start and "
        "the imports included, in brackets). torchfit's brackets: over HGB's in-Python time, and the "
        "epochs early stopping ran.",
        "",
        *wall_section(results),
        "",
        "**Tally** (accuracy or R², means over seeds):",
        "",
        *tally_section(results),
    ])


def text_markdown(results, variant_sets):
    """The text tables' section: each text encoder next to TF-IDF + logistic regression (word,
    char, and the better of the two on the validation rows), quality and wall time."""
    variants = results["_meta"].get("text_variants", [])
    names = text_table_names(results)
    analyzers = ["word", "char"]
    tfidf = {n: results[n]["TF-IDF"] for n in names}
    lines = [
        "### Text tables: torchfit bag / transformer vs TF-IDF+LR (word, char, best)",
        "",
        measured(results, "TF-IDF + LR"),
        "",
        f"Variants (each one `--set` list on the table's config in configs/public/): {overrides(variants, variant_sets)}.",
        "TF-IDF+LR: scikit-learn's `TfidfVectorizer(min_df=2, sublinear_tf=True)` on word 1-2-grams (word) or "
        "`char_wb` 2-5-grams (char), each with `LogisticRegression` at C = 1 and C = 10, fitted on the training "
        "rows torchfit trained on (the training part less its validation rows); each analyzer's C, and the "
        "better analyzer (best), picked on torchfit's validation rows; all scored on the test part.",
        "",
        "| table | rows: train / test | classes | text column (median words) |",
        "| --- | --- | --- | --- |",
    ]
    for n in names:
        i = results[n]["info"]
        lines.append(f"| {n} | {i['train']} / {i['test']} | {i['classes']} | "
                     f"{', '.join(i['text'])} ({i['median_words']:.0f}) |")
    lines += ["", "**Accuracy on the test part** (in brackets macro F1; means over seeds; best: which analyzer "
              "won on validation, per seed):", "",
              "| table | " + " | ".join(variants) + " | TF-IDF+LR word | TF-IDF+LR char | TF-IDF+LR best |",
              "|---" * (4 + len(variants)) + "|"]
    for n in names:
        cells = []
        for v in variants:
            runs, why = runs_of(results[n], v)
            cells.append(quality_cell("classification", runs) if runs else why)
        for a in analyzers:
            cells.append(quality_cell("classification", [r[a] for r in tfidf[n]]) + ", C "
                         + "/".join(f"{r[a]['C']:g}" for r in tfidf[n]))
        won = [r["best"] for r in tfidf[n]]
        cells.append(quality_cell("classification", tfidf[n]) + "; " + ", ".join(f"{a} {won.count(a)}x" for a in analyzers if a in won))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "**Wall time**, mean over seeds: torchfit is `torchfit train` (early stopping) plus `torchfit "
              "predict` on the test part, whole processes (in brackets: over TF-IDF+LR's process, and the epochs); "
              "TF-IDF+LR is reading both parts, fitting all four candidates and predicting, as a process of its own "
              "(Python's start and the imports included) and inside it (in brackets).", "",
              "| table | TF-IDF+LR | " + " | ".join(variants) + " |", "|---" * (2 + len(variants)) + "|"]
    for n in names:
        process = statistics.mean(r["process_wall"] for r in tfidf[n])
        cells = [f"{process:.1f} s ({wall(tfidf[n]):.1f} s)"]
        for v in variants:
            runs, why = runs_of(results[n], v)
            if not runs:
                cells.append(why)
                continue
            epochs = statistics.mean(r["epochs"] for r in runs)
            cells.append(f"{wall(runs):.1f} s ({wall(runs) / process:.1f}x; {epochs:.0f} epochs)")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "**Goal** (issue 22: match or beat TF-IDF+LR best on accuracy, means over seeds):", ""]
    for v in variants:
        ran = [n for n in names if runs_of(results[n], v)[0]]
        at_or_above = sum(mean_sd([r["metrics"]["accuracy"] for r in results[n][v]])[0]
                          >= mean_sd([r["metrics"]["accuracy"] for r in tfidf[n]])[0] for n in ran)
        lines.append(f"- `{v}`: at or above TF-IDF+LR best on {at_or_above} of {len(ran)} tables run"
                     + (f" (of {len(names)})." if len(ran) < len(names) else "."))
    return "\n".join(lines)


def replace_section(path, text, begin, end):
    """Puts text between the begin and end marker lines of path (appended with them if absent)."""
    doc = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)
