"""Raw rows into model.pt, run by tests/python_interop.rs.

usage: raw_rows.py RUN_DIR RAW.csv PREDICTIONS.csv

A model with categorical features takes rows as they are: `m.encode(numeric, categorical)`,
`m.predict_rows(...)` and `m.predict_proba_rows(...)`, with the numeric features as a float
tensor (NaN where a cell is missing) and each categorical column as a list of strings by name.
Their answers must be exactly `torchfit predict --proba` on the same CSV, whose rows hold
levels never seen in training and missing cells. Prints 'N passed, 0 failed'.
"""
import csv
import json
import math
import sys

import torch

from checks import finish, require

MISSING = {"", "na", "n/a", "nan"}
# A column of yes/no (true/false, t/f) is a numeric feature of 1/0.
BOOLEANS = {"true": 1.0, "yes": 1.0, "t": 1.0, "false": 0.0, "no": 0.0, "f": 0.0}
def main(run, raw_path, predictions_path):
    extra = {"features.json": "", "categorical.json": "", "labels.json": ""}
    m = torch.jit.load(f"{run}/model.pt", _extra_files=extra)
    features = json.loads(extra["features.json"])
    categorical = json.loads(extra["categorical.json"])
    labels = json.loads(extra["labels.json"])
    require(len(categorical) > 0, "extra/categorical.json describes the categorical features")

    with open(raw_path, newline="") as f:
        rows = list(csv.DictReader(f))
    def number(cell):
        cell = cell.strip().lower()
        return math.nan if cell in MISSING else BOOLEANS.get(cell, None) if cell in BOOLEANS else float(cell)

    numeric = torch.tensor([[number(r[name]) for name in features] for r in rows], dtype=torch.float32)
    text = {c["name"]: [r[c["name"]] for r in rows] for c in categorical}
    unseen = [v for c in categorical for v in text[c["name"]]
              if v.strip() not in c["levels"][:c["other"]] and v.strip().lower() not in MISSING]
    require(unseen, "the rows hold levels unseen in training")
    require(any(v.strip().lower() in MISSING for vs in text.values() for v in vs), "and missing cells")

    with torch.no_grad():
        x = m.encode(numeric, text)
        out = m.predict_rows(numeric, text)
        proba = m.predict_proba_rows(numeric, text)
        require(torch.equal(out, m(x)), "predict_rows is forward of encode")
    require(x.shape == (len(rows), len(features) + len(categorical)), f"encode's shape {tuple(x.shape)}")

    # A categorical column left out is an error that names it, not a bare KeyError.
    first = categorical[0]["name"]
    try:
        m.predict_rows(numeric, {k: v for k, v in text.items() if k != first})
        require(False, "predict_rows without a categorical column fails")
    except Exception as e:  # torch.jit.Error, or the builtin class TorchScript raised
        require(f'categorical has no column "{first}"' in str(e), f"the error names the column: {e}")

    with open(predictions_path, newline="") as f:
        theirs = list(csv.reader(f))[1:]
    require([labels[i] for i in out.tolist()] == [r[0] for r in theirs], "labels match torchfit predict")
    theirs_p = torch.tensor([[float(v) for v in r[1:]] for r in theirs])
    diff = (proba - theirs_p).abs().max().item()
    require(diff <= 1e-6, f"predict_proba_rows vs torchfit predict --proba: max abs diff {diff}")

    names = dict(m.named_parameters())
    embeddings = [n for n in names if n.startswith("embeddings.")]
    require(embeddings, f"embedding weights are parameters: {sorted(names)}")
    require(all(names[n].requires_grad for n in embeddings), "and trainable")
    finish("raw_rows: ")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
