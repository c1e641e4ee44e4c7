"""bench/run.py's sections on text columns (issue 22's speed goals), on seeded synthetic texts
(bench/reference_text.py's):

- `bag_section`: `torchfit train` with `model.text: {encoder: bag}` on a text classification
  table next to the same model in a plain PyTorch loop (bench/reference_text.py train) on the
  ids torchfit's own tokenizer gives (`torchfit tokenize`): same rows, batch, epochs, optimizer
  and threads; samples/s over the training loop, interleaved rounds. Goal: >= 1.3x.
- `tokenize_section`: `torchfit tokenize` on 1,000,000 short texts next to the `tokenizers`
  Python package's `encode_batch` with the same tokenizer.json (bench/reference_tokenizers.py),
  one thread and all. Goal: >= 1.0x.

When the binary refuses a text config, a section says so and measures nothing.

    python3 bench/text_speed.py --binary target/release/torchfit     # both sections, printed
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reference_text import CLASSES, synthetic_texts, write_synthetic  # noqa: E402
from run import Failed, fmt, measure, torchfit_train  # noqa: E402  (bench/run.py)
from tabular_speed import interleave, refused  # noqa: E402

SKIP = 77  # bench/refpkgs.py: the reference package could not be installed
# The model both sides train: the tables' template's body without dropout (the two programs'
# masks would come from different generators anyway), the bag of 64-wide token embeddings.
HIDDEN, D_EMBEDDING, LR, WEIGHT_DECAY = [128, 64], 64, 0.002, 0.01


def text_config(work, name, path, epochs, batch, threads, max_length=128):
    """A config training the bag model on path's `text` -> `label`, every row for training."""
    config = Path(work, f"{name}.yaml")
    config.write_text(
        f"name: {name}\nseed: 0\ntask: classification\n"
        f"data: {{kind: csv, path: {path}, target: label, text: [text], validation_split: 0, test_split: 0, "
        f"tokenizer: {{kind: bpe, vocab_size: 8000, lowercase: true, max_length: {max_length}}}}}\n"
        f"model: {{hidden: {HIDDEN}, activation: relu, dropout: 0, text: {{encoder: bag, d_embedding: {D_EMBEDDING}}}}}\n"
        f"training: {{epochs: {epochs}, batch_size: {batch}, loss: cross_entropy, metrics: [], threads: {threads}, "
        f"checkpoint_every: 1000, optimizer: {{kind: adamw, lr: {LR}, weight_decay: {WEIGHT_DECAY}}}}}\n")
    return config


def torchfit_tokenize(binary, run, csv_path, output):
    """`torchfit tokenize RUN FILE.csv --output IDS.npy`, a whole process; its wall seconds."""
    _, wall, _ = measure([binary, "tokenize", str(run), str(csv_path), "--output", str(output)], check=False)
    return wall


def reference(script_args):
    """A bench/reference_*.py run's JSON line; Failed (with why) when it cannot run."""
    proc = subprocess.run([sys.executable] + [str(a) for a in script_args], capture_output=True, text=True)
    if proc.returncode == SKIP:
        raise Failed("not installed: " + (proc.stderr.strip().splitlines() or ["pip failed"])[-1])
    if proc.returncode != 0:
        raise Failed((proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bag_reference(ids, targets, tokenizer_json, epochs, batch, threads):
    r = reference([HERE / "reference_text.py", "train", ids, targets, "--tokenizer", tokenizer_json,
                   "--classes", CLASSES, "--d-embedding", D_EMBEDDING, "--hidden", *HIDDEN, "--epochs", epochs,
                   "--batch-size", batch, "--lr", LR, "--weight-decay", WEIGHT_DECAY, "--threads", threads])
    return {"train": sum(r["epoch_seconds"]), "loss": r["final_loss"]}


def bag_section(binary, work, rows, epochs, batch, threads, repeats):
    table, targets = Path(work, "bag.csv"), Path(work, "bag-targets.npy")
    write_synthetic(table, rows, targets=targets)
    config = text_config(work, "bench_text_bag", table, epochs, batch, threads)
    lines = [f"## The embedding-bag text model on {rows:,} synthetic texts (5-30 words, {CLASSES} classes, batch "
             f"{batch}, {epochs} epoch{'s' * (epochs != 1)}, {threads} thread{'s' * (threads != 1)}), CPU", ""]
    why = refused(binary, str(config))
    if why:
        return lines + [f"This binary does not train a text column yet ({why.replace(str(config), 'its config')}), "
                        "so nothing was measured; bench/reference_text.py is the reference it will be set against.", ""]
    # The reference trains on the ids of torchfit's own tokenizer, so both see the same tokens.
    ids = Path(work, "bag-ids.npy")
    try:
        first = torchfit_train(binary, [], work, config=config, check=False)
        torchfit_tokenize(binary, first["out"], table, ids)
    except Failed as e:
        return lines + [f"Not measured: the first `torchfit train`, or `torchfit tokenize` on its run, failed ({e}).", ""]
    tokenizer_json = Path(first["out"], "tokenizer.json")
    lines += [
        "`torchfit train` with `model.text: {encoder: bag}` (BPE, 8,000 tokens, 128 tokens a text, bag of "
        f"{D_EMBEDDING}-wide embeddings, MLP {HIDDEN}) on bench/reference_text.py's synthetic table, next to the same "
        "model in a plain PyTorch loop (bench/reference_text.py train: `nn.EmbeddingBag(mode=\"mean\", padding_idx)` "
        "on the ids `torchfit tokenize` gives, AdamW, cross-entropy, a shuffle per epoch). Same rows, batch, epochs "
        "and threads. Samples/s: rows times epochs over the training loop's time (torchfit's `train_seconds`); "
        f"medians of {repeats} interleaved rounds.",
        "",
        "| program | training loop | samples/s | last epoch's loss |",
        "|---|---|---|---|",
    ]
    rated = lambda r: dict(r, rate=rows * epochs / r["train"])
    programs = {
        "torchfit": lambda: rated(torchfit_train(binary, [], work, config=config, check=False)),
        "reference": lambda: rated(bag_reference(ids, targets, tokenizer_json, epochs, batch, threads)),
    }
    labels = {"torchfit": "torchfit, `model.text: {encoder: bag}`", "reference": "PyTorch loop, bench/reference_text.py"}
    runs, failed = interleave(programs, repeats, "bag")
    for name in programs:
        if name in failed:
            lines.append(f"| {labels[name]} | failed: {failed[name]} | - | - |")
            continue
        lines.append(f"| {labels[name]} | {fmt([r['train'] for r in runs[name]])} | "
                     f"{statistics.median(r['rate'] for r in runs[name]):,.0f} | "
                     f"{statistics.median(r['loss'] for r in runs[name]):.4f} |")
    return lines + [""] + goal_line(runs, failed, 1.3, "samples/s") + [""]


def goal_line(runs, failed, goal, unit, reference="reference"):
    """torchfit's median rate over the reference's, against the goal."""
    if failed:
        return [f"- torchfit / the reference: n/a ({' and '.join(failed)} failed)."]
    got = statistics.median(r["rate"] for r in runs["torchfit"]) / statistics.median(r["rate"] for r in runs[reference])
    return [f"- torchfit / the reference: **{got:.2f}x** {unit} (goal >= {goal}x: {'met' if got >= goal else 'not met'})."]


def tokenize_section(binary, work, texts, repeats):
    table = Path(work, "tokenize.csv")
    short, labels = synthetic_texts(texts, 5, 15)
    with open(table, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["text", "label"]] + list(zip(short, labels)))
    # The tokenizer: fitted by torchfit on the bag section's kind of table, one epoch of training.
    fit_table = Path(work, "tokenizer-fit.csv")
    write_synthetic(fit_table, 20_000)
    config = text_config(work, "bench_text_tokenizer", fit_table, 1, 256, 1, max_length=32)
    lines = [f"## Tokenising {texts:,} short texts (5-15 words), CPU", ""]
    why = refused(binary, str(config))
    if why:
        return lines + [f"This binary does not take a text column yet ({why.replace(str(config), 'its config')}), "
                        "so nothing was measured; bench/reference_tokenizers.py is the reference.", ""]
    try:
        run = torchfit_train(binary, [], work, config=config, check=False)["out"]
    except Failed as e:
        return lines + [f"Not measured: `torchfit train` for the tokenizer failed ({e}).", ""]
    tokenizer_json = Path(run, "tokenizer.json")
    lines += [
        f"`torchfit tokenize RUN FILE.csv --output IDS.npy` (a whole process: start, reading the CSV, tokenising, "
        "writing the ids) next to the `tokenizers` Python package's `Tokenizer.from_file(RUN/tokenizer.json)"
        ".encode_batch(texts)` (bench/reference_tokenizers.py: encode_batch alone, the texts already read; one "
        "thread, and all threads), with the tokenizer torchfit fitted (BPE, 8,000 tokens, lowercase, 32 tokens a "
        f"text, padded). Medians of {repeats} interleaved rounds.",
        "",
        "| program | time | texts/s |",
        "|---|---|---|",
    ]
    ids = Path(work, "tokenize-ids.npy")
    timed = lambda seconds: {"seconds": seconds, "rate": texts / seconds}
    programs = {
        "torchfit": lambda: timed(torchfit_tokenize(binary, run, table, ids)),
        "reference": lambda: reference([HERE / "reference_tokenizers.py", tokenizer_json, "--csv", table]),
    }
    runs, failed = interleave(programs, repeats, "tokenize")
    if "torchfit" not in failed:
        lines.append(f"| torchfit tokenize, whole process | {fmt([r['seconds'] for r in runs['torchfit']])} | "
                     f"{statistics.median(r['rate'] for r in runs['torchfit']):,.0f} |")
    else:
        lines.append(f"| torchfit tokenize | failed: {failed['torchfit']} | - |")
    for setting, label in [("one_thread", "1 thread"), ("all_threads", f"{os.cpu_count()} threads")]:
        if "reference" in failed:
            lines.append(f"| tokenizers encode_batch, {label} | failed: {failed['reference']} | - |")
            continue
        runs[setting] = [dict(r[setting], rate=r[setting]["texts_per_second"]) for r in runs["reference"]]
        lines.append(f"| tokenizers encode_batch, {label} | {fmt([r['seconds'] for r in runs[setting]])} | "
                     f"{statistics.median(r['rate'] for r in runs[setting]):,.0f} |")
    lines.append("")
    for setting, label in [("one_thread", "one thread"), ("all_threads", "all threads")]:
        lines += [line.replace("the reference", f"encode_batch on {label}")
                  for line in goal_line(runs, failed, 1.0, "texts/s", reference=setting)]
    return lines + [""]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default="target/release/torchfit")
    p.add_argument("--rows", type=int, default=100_000, help="the bag section's rows")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--texts", type=int, default=1_000_000, help="the tokenising section's texts")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    binary = str(Path(args.binary).resolve())
    with tempfile.TemporaryDirectory(prefix="torchfit-bench-text-") as work:
        lines = bag_section(binary, work, args.rows, args.epochs, args.batch_size, args.threads, args.repeats)
        lines += tokenize_section(binary, work, args.texts, args.repeats)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
