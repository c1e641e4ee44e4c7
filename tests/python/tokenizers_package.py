"""Python's side of the tokenizer tests: Hugging Face's `tokenizers` package (0.23.3, the version
of the Rust crate torchfit builds on) loading the tokenizer.json torchfit stores, and giving the
same ids as `torchfit tokenize`.

usage: tokenizers_package.py corpus FILE.csv        a CSV with a `text` column of hard cases
                                                     (Unicode, punctuation, emoji, whitespace)
                                                     and a `label` column
       tokenizers_package.py check TOKENIZER FILE.csv IDS.npy COLUMN [COLUMN ...]
                                                     the tokenizer's encode_batch on each COLUMN
                                                     (padding and truncation as it says), the
                                                     columns' ids side by side, held to IDS.npy
                                                     (int64 [rows, columns * max_length]: what
                                                     `torchfit tokenize` writes) exactly
       tokenizers_package.py model MODEL.pt FILE.csv PREDICTIONS.csv
                                                     torch.jit.load's predict_proba on the numeric
                                                     columns (features.json) and the package's ids
                                                     of the text columns (text.json), held to
                                                     `torchfit predict --proba`'s within 1e-5
       tokenizers_package.py onnx MODEL.onnx FILE.csv PREDICTIONS.csv
                                                     the same with onnxruntime, the tokenizer and
                                                     the text columns from the model's metadata

TOKENIZER is a tokenizer.json (Tokenizer.from_file) or a model.pt, whose extra file
tokenizer.json is read with torch.jit.load(..., _extra_files=...) (Tokenizer.from_str).

The package is installed on first use with `pip install --no-deps --target
~/.cache/torchfit/tokenizers tokenizers==0.23.3` (Tokenizer.from_file needs no other package;
`make bench-text-deps` does the same); when that fails, every command exits 77 and the Rust side
skips, saying why. Other scripts get the package with `from tokenizers_package import
tokenizers` and `tokenizers()`.
"""
import csv
import os
import sys

import numpy as np

from checks import check, finish, pip_install_once, require

SKIP = 77
PACKAGE = "tokenizers==0.23.3"
TOKENIZERS_DIR = os.path.expanduser("~/.cache/torchfit/tokenizers")

# Texts a tokenizer's normalisation and pre-tokenisation must agree on byte for byte: accents
# composed and decomposed, other scripts, emoji (with skin tones, ZWJ sequences and flags),
# punctuation runs, digits, URLs, odd whitespace inside a text, a long word, one letter.
CORPUS = [
    "Great coffee, would buy again!!!",
    "Café crème: déjà vu… naïve façade",
    "Cafe\u0301 cre\u0300me (decomposed accents)",
    "GROSSE Straße, ÆØÅ æøå, İstanbul ıi",
    "東京は晴れです。今日は良い天気！",
    "Привет, мир! Ελληνικά κείμενα.",
    "مرحبا بالعالم",
    "Loved it 😍😍 👍🏽 👨‍👩‍👧 🇫🇷 ❤️",
    "wait... what?!?! (no way) [really] {yes} <ok>",
    "$19.99 -> 20% off; 3.14159 & 1,000,000 #1 @user",
    "see https://example.com/a?b=c&d=e#f or mail x.y@z.org",
    "tabs\tand\u00a0non-breaking\u2003spaces   and\nnewlines",
    "\"quoted\" 'single' «guillemets» „low“ — dash – en",
    "supercalifragilisticexpialidocious" * 3,
    "a",
]


def tokenizers():
    """The package, installed into TOKENIZERS_DIR on first use (tests run at once share it: the
    folder appears whole or not at all); exits SKIP when pip cannot install it."""
    pip_install_once(TOKENIZERS_DIR, "tokenizers", [PACKAGE], f"{PACKAGE} (the Python tokenizers)")
    sys.path.insert(0, TOKENIZERS_DIR)
    import tokenizers as package
    return package


def write_corpus(path):
    """CORPUS as CSV, each text with a label (two classes, so that a classifier can train on it)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows([text, "ab"[i % 2]] for i, text in enumerate(CORPUS))


def load(path):
    """The tokenizer of a tokenizer.json, or the one a model.pt carries as its extra file."""
    if not path.endswith(".pt"):
        return tokenizers().Tokenizer.from_file(path)
    import torch

    extra = {"tokenizer.json": ""}
    torch.jit.load(path, _extra_files=extra)
    spec = extra["tokenizer.json"]
    require(spec, f"{path} has no extra file tokenizer.json")
    # torch.jit.load fills _extra_files with bytes (str in older releases)
    return tokenizers().Tokenizer.from_str(spec.decode() if isinstance(spec, bytes) else spec)


def encode_columns(tokenizer_path, csv_path, columns):
    """The ids `torchfit tokenize` should write: each column's encode_batch, side by side."""
    tokenizer = load(tokenizer_path)
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    parts = []
    for column in columns:
        encodings = tokenizer.encode_batch([row[column] for row in rows])
        lengths = {len(e.ids) for e in encodings}
        require(len(lengths) == 1, f"{tokenizer_path} does not pad {column} to one length: lengths {sorted(lengths)}")
        parts.append(np.array([e.ids for e in encodings], dtype=np.int64))
    return rows, np.hstack(parts)


def compare(tokenizer_path, csv_path, ids_path, columns):
    rows, want = encode_columns(tokenizer_path, csv_path, columns)
    got = np.load(ids_path)
    require(got.dtype == np.int64 and got.shape == want.shape,
            f"{ids_path} is {got.dtype} {list(got.shape)}; the package gives int64 {list(want.shape)}")
    width = want.shape[1] // len(columns)
    for r in range(len(rows)):
        for c, column in enumerate(columns):
            span = slice(c * width, (c + 1) * width)
            check(f"row {r} {column}", np.array_equal(got[r, span], want[r, span]),
                  f"{rows[r][column]!r}: torchfit {got[r, span].tolist()}, the package {want[r, span].tolist()}")
    finish("tokenizer ids: ")


def extra_files(model_path, names):
    """model.pt's extra files, as text."""
    import torch

    extra = {name: "" for name in names}
    module = torch.jit.load(model_path, _extra_files=extra)
    return module, {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items()}


def read_rows(csv_path):
    with open(csv_path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def predictions(path):
    """The p_<label> columns of `torchfit predict --proba`'s CSV."""
    rows = read_rows(path)
    return np.array([[float(v) for k, v in row.items() if k.startswith("p_")] for row in rows])


def numeric_columns(rows, features):
    return np.array([[float(row[f]) for f in features] for row in rows], dtype=np.float32).reshape(len(rows), len(features))


def compare_model(model_path, csv_path, predictions_path):
    """model.pt called by hand: x is the numeric features, then the text columns' ids as floats."""
    import json
    import torch

    module, extra = extra_files(model_path, ["features.json", "text.json"])
    features, text = json.loads(extra["features.json"]), json.loads(extra["text.json"])
    rows, ids = encode_columns(model_path, csv_path, text["columns"])
    x = torch.cat([torch.from_numpy(numeric_columns(rows, features)), torch.from_numpy(ids).float()], 1)
    got = module.predict_proba(x).detach().numpy()
    want = predictions(predictions_path)
    require(got.shape == want.shape, f"predict_proba gives {got.shape}, torchfit predict {want.shape}")
    worst = float(np.abs(got - want).max())
    check("model.pt on the package's ids", worst <= 1e-5, f"differs from torchfit predict by {worst}")
    finish(f"model.pt (largest difference {worst:.2e}): ")


def compare_onnx(onnx_path, csv_path, predictions_path):
    """The ONNX model on the package's ids, the tokenizer read from the model's metadata."""
    import json
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path)
    meta = session.get_modelmeta().custom_metadata_map
    features, text = json.loads(meta["features"]), json.loads(meta["text"])
    tokenizer = tokenizers().Tokenizer.from_str(meta["tokenizer"])
    rows = read_rows(csv_path)
    ids = np.hstack([np.array([e.ids for e in tokenizer.encode_batch([r[c] for r in rows])], dtype=np.int64)
                     for c in text["columns"]])
    feeds = {"ids": ids}
    if features:
        feeds["numeric"] = numeric_columns(rows, features)
    got = session.run(["probabilities"], feeds)[0]
    want = predictions(predictions_path)
    worst = float(np.abs(got - want).max())
    check("onnxruntime on the package's ids", worst <= 1e-5, f"differs from torchfit predict by {worst}")
    finish(f"ONNX (largest difference {worst:.2e}): ")


def main():
    args = sys.argv[1:]
    if len(args) == 4 and args[0] == "model":
        return compare_model(args[1], args[2], args[3])
    if len(args) == 4 and args[0] == "onnx":
        return compare_onnx(args[1], args[2], args[3])
    if len(args) == 2 and args[0] == "corpus":
        return write_corpus(args[1])
    if len(args) >= 5 and args[0] == "check":
        return compare(args[1], args[2], args[3], args[4:])
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
