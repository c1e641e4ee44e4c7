"""The Python side of bench's tokenising goal (issue 22: torchfit tokenises 1,000,000 short
texts at least as fast as this): Hugging Face's `tokenizers` package,
`Tokenizer.from_file(TOKENIZER.json).encode_batch(texts)`, with the padding and truncation the
file configures, on one thread and on all of them.

    python3 bench/reference_tokenizers.py RUN/tokenizer.json                  # 1,000,000 texts of 5-15 words
    python3 bench/reference_tokenizers.py RUN/tokenizer.json --csv FILE.csv --column text
    python3 bench/reference_tokenizers.py RUN/tokenizer.json --csv FILE.csv --output ids.npy

The texts are bench/reference_text.py's synthetic ones (--texts, seeded) or a CSV column, read
before the clock starts; the time is encode_batch's alone. Each thread setting runs in a
process of its own, as the `tokenizers` package reads its settings once: one thread is
TOKENIZERS_PARALLELISM=false and RAYON_NUM_THREADS=1; all threads is TOKENIZERS_PARALLELISM=true
and RAYON_NUM_THREADS unset (one per core). Prints one JSON line: {"texts", "tokens" (the ids
encode_batch returned, padding included), "one_thread": {"seconds", "texts_per_second"},
"all_threads": {"seconds", "texts_per_second", "threads"}}.

--output: the ids of the one-thread run as int64 [texts, length] .npy (the file must pad to a
fixed length, or the texts be as long), to set beside `torchfit tokenize`'s.

The package is installed on first use into ~/.cache/torchfit/tokenizers (bench/refpkgs.py;
`make bench-text-deps` does it ahead); the synthetic texts need numpy.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import refpkgs  # noqa: E402  (bench/refpkgs.py)

SHORT_WORDS = (5, 15)
ONE_THREAD = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}


def read_texts(csv_path=None, column="text", count=1_000_000, seed=0):
    """The CSV's column (missing cells as empty text), or count synthetic short texts."""
    if csv_path:
        with open(csv_path, newline="") as f:
            return [row[column] for row in csv.DictReader(f)]
    from reference_text import synthetic_texts

    return synthetic_texts(count, *SHORT_WORDS, seed=seed)[0]


def encode(tokenizer_json, texts, output=None):
    """encode_batch on texts in this process; returns (seconds, ids returned)."""
    tokenizers = refpkgs.tokenizers()
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    start = time.perf_counter()
    encodings = tokenizer.encode_batch(texts)
    seconds = time.perf_counter() - start
    if output:
        import numpy as np

        lengths = {len(e.ids) for e in encodings}
        if len(lengths) != 1:
            sys.exit(f"bench/reference_tokenizers.py: --output needs one length; the ids have {sorted(lengths)[:5]}...: "
                     "the tokenizer.json does not pad to a fixed length")
        np.save(output, np.array([e.ids for e in encodings], dtype=np.int64))
    return seconds, sum(len(e.ids) for e in encodings)


def timed(tokenizer_json, source, env, output=None):
    """One thread setting: this script again with --job and env; its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), str(tokenizer_json), "--job", json.dumps(source)]
    if output:
        cmd += ["--output", str(output)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        sys.exit(proc.returncode)  # 77 (the package could not be installed) passes through
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(tokenizer_json, source, output=None):
    """Both thread settings on the same texts; the JSON line's fields."""
    base = {k: v for k, v in os.environ.items() if k not in ONE_THREAD}
    one = timed(tokenizer_json, source, dict(base, **ONE_THREAD), output)
    every = timed(tokenizer_json, source, dict(base, TOKENIZERS_PARALLELISM="true"))
    if every["tokens"] != one["tokens"]:
        sys.exit("bench/reference_tokenizers.py: one thread and all threads returned different numbers of ids")
    rate = lambda r: {"seconds": r["seconds"], "texts_per_second": r["texts"] / r["seconds"]}
    return {"texts": one["texts"], "tokens": one["tokens"], "one_thread": rate(one),
            "all_threads": dict(rate(every), threads=os.cpu_count())}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tokenizer", help="a tokenizer.json (a torchfit run's, or model.pt's extra file)")
    p.add_argument("--csv", help="texts from this CSV file's --column (default: synthetic ones)")
    p.add_argument("--column", default="text")
    p.add_argument("--texts", type=int, default=1_000_000, help="how many synthetic texts (default 1,000,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="the one-thread run's ids as int64 .npy")
    p.add_argument("--job", help=argparse.SUPPRESS)  # one thread setting, in the environment it was given
    args = p.parse_args()
    if args.job:
        source = json.loads(args.job)
        texts = read_texts(**source)
        seconds, tokens = encode(args.tokenizer, texts, args.output)
        print(json.dumps({"texts": len(texts), "tokens": tokens, "seconds": seconds}))
        return
    source = {"csv_path": args.csv, "column": args.column, "count": args.texts, "seed": args.seed}
    print(json.dumps(compare(args.tokenizer, source, args.output)))


if __name__ == "__main__":
    main()
