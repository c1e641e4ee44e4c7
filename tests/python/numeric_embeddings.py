"""PyTorch's side of tests/numeric_embeddings.rs: `model.numeric_embedding` held to the
reference package, `rtdl_num_embeddings` (0.0.12).

usage: numeric_embeddings.py prepare CASE DIR     t.csv (numeric and text columns) and config.yaml
       numeric_embeddings.py check CASE DIR RUN   RUN's bins against compute_bins on the training
                                                  part as the model sees it (standardised); the
                                                  package's module with RUN's bins and trained
                                                  weights, followed by the same MLP, against
                                                  model.pt's logits and RUN/predictions.csv
                                                  (`torchfit predict RUN t.csv`)

CASEs: piecewise_linear (PiecewiseLinearEmbeddings version B, ReLU on), periodic
(PeriodicEmbeddings), periodic_lite (lite=True), constant (piecewise_linear on a table that also
has a constant column and a 0/1 column: compute_bins refuses the first; torchfit gives it the
single bin [v - 1, v + 1]); tabm_piecewise_linear and tabm_periodic (model.kind: tabm: TabM.make(...,
num_embeddings=the package's module), whose mean over members model.pt and predict must give;
tabm is installed as tests/python/tabm_reference.py installs it), tabm_init (seeded: the initial
weights are those torch.manual_seed, the embedding and TabM.make draw, bit for bit).

The package is installed on first use with `pip install --no-deps --target
~/.cache/torchfit/rtdl_num_embeddings rtdl_num_embeddings==0.0.12` (it needs only torch); when
that fails, both commands exit 77 and the Rust side skips, saying why.
"""
import csv
import json
import os
import sys

import numpy as np
import torch
from torch import nn
from safetensors.torch import load_file

from checks import check, finish, pip_install_once, require
from fidelity import yaml_value

TOLERANCE = 1e-5
SKIP = 77
PACKAGE = "rtdl_num_embeddings==0.0.12"
PACKAGE_DIR = os.path.expanduser("~/.cache/torchfit/rtdl_num_embeddings")
ROWS = 400
CITIES = 60  # more levels than torchfit one-hot encodes by default: `city` is embedded
SEED = 3
TABM_KNOBS = dict(k=4, d_block=32, dropout=0.0)  # n_blocks: TabM.make's 2 with embeddings

# Each case: the embedding's knobs (not the defaults, so that each is seen to reach the
# network) and the MLP's.
CASES = {
    "piecewise_linear": dict(embedding=dict(kind="piecewise_linear", n_bins=12, d_embedding=8, activation=True),
                             hidden=[24, 16], activation="relu"),
    "periodic": dict(embedding=dict(kind="periodic", n_frequencies=10, frequency_init_scale=0.2, d_embedding=6,
                                    activation=True, lite=False), hidden=[20], activation="tanh"),
    "periodic_lite": dict(embedding=dict(kind="periodic", n_frequencies=7, frequency_init_scale=0.5, d_embedding=5,
                                         lite=True), hidden=[16], activation="gelu"),
    "constant": dict(embedding=dict(kind="piecewise_linear"), hidden=[16], activation="relu", constant=True),
    # model.kind: tabm (TabM.make(..., num_embeddings=...)), the embedding's defaults. TabM
    # one-hot encodes every categorical feature: no `city` column.
    "tabm_piecewise_linear": dict(embedding=dict(kind="piecewise_linear"), tabm=TABM_KNOBS),
    "tabm_periodic": dict(embedding=dict(kind="periodic", frequency_init_scale=0.1), tabm=TABM_KNOBS),
    # No training to speak of: one epoch with all but output.bias frozen keeps the initial
    # weights, which the seed draws as torch.manual_seed, the embedding and TabM.make do.
    "tabm_init": dict(embedding=dict(kind="piecewise_linear"), tabm=TABM_KNOBS, seeded=True),
}
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def package():
    """rtdl_num_embeddings, installed into PACKAGE_DIR on first use (the folder appears whole or
    not at all, so tests run at once can share it)."""
    pip_install_once(PACKAGE_DIR, "rtdl_num_embeddings.py", [PACKAGE], f"{PACKAGE} (the reference embeddings)")
    sys.path.insert(0, PACKAGE_DIR)
    import rtdl_num_embeddings
    return rtdl_num_embeddings


def prepare(case, out):
    package()
    spec = CASES[case]
    rng = np.random.default_rng(5)
    columns = {
        "x0": rng.normal(size=ROWS).astype(np.float32),
        "x1": rng.uniform(0, 50, size=ROWS).astype(np.float32),
        # few distinct values: the quantiles repeat, and the feature gets fewer bins
        "x2": rng.integers(0, 5, size=ROWS).astype(np.float32),
        "x3": rng.exponential(3.0, size=ROWS).astype(np.float32),
    }
    if spec.get("constant"):
        columns["const"] = np.full(ROWS, 2.5, dtype=np.float32)
        columns["flag"] = (rng.uniform(size=ROWS) < 0.2).astype(np.float32)
    colour = rng.choice(["red", "green", "blue"], size=ROWS)
    city = [f"c{i}" for i in rng.integers(0, CITIES, size=ROWS)]
    city = None if "tabm" in spec else city
    y = (np.sin(columns["x0"] * 2) + 0.05 * columns["x1"] + (columns["x2"] == 3) + (colour == "red")
         + 0.1 * rng.normal(size=ROWS))
    with open(os.path.join(out, "t.csv"), "w") as f:
        names = list(columns)
        f.write(",".join(names[:2] + ["colour"] + names[2:] + (["city"] if city else []) + ["y"]) + "\n")
        for i in range(ROWS):
            values = [str(columns[n][i]) for n in names]
            f.write(",".join(values[:2] + [colour[i]] + values[2:] + ([city[i]] if city else []) + [f"{y[i]:.6f}"])
                    + "\n")
    training = dict(epochs=4, batch_size=32, loss="mse", metrics=[], threads=1, optimizer=dict(kind="adam", lr=0.01))
    if "tabm" in spec:
        model = dict(kind="tabm", **spec["tabm"], numeric_embedding=spec["embedding"])
    else:
        model = dict(hidden=spec["hidden"], activation=spec["activation"], init="torch", dropout=0.1,
                     numeric_embedding=spec["embedding"])
    if spec.get("seeded"):
        model["freeze"] = ["num_module.*", "backbone.*", "output.weight"]
        training["epochs"] = 1
    config = {
        "name": f"numemb_{case}", "seed": SEED, "device": "cpu", "task": "regression",
        "data": dict(kind="csv", path=os.path.join(out, "t.csv"), target="y", validation_split=0.25, test_split=0),
        "model": model,
        "training": training,
    }
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.writelines(f"{k}: {yaml_value(v)}\n" for k, v in config.items())


def read_table(folder, pre):
    """The table's numeric features (float32, in preprocessing order) and categorical codes."""
    with open(os.path.join(folder, "t.csv")) as f:
        rows = list(csv.DictReader(f))
    x = torch.tensor([[float(r[n]) for n in pre["feature_names"]] for r in rows], dtype=torch.float32)
    codes = []
    for c in pre["categorical"]:
        index = {level: i for i, level in enumerate(c["levels"])}
        codes.append([index.get(r[c["name"]], c["other"]) for r in rows])
    return x, torch.tensor(codes, dtype=torch.int64).T


class Reference(nn.Module):
    """The package's embedding module, flattened, then the categorical features as torchfit
    encodes them (one-hot, or embedding tables named `embeddings.<j>`), then the MLP as an
    nn.Sequential (`0`, `2`, ...), in evaluation mode."""

    def __init__(self, num_module, pre, hidden, activation, d_in, outputs):
        super().__init__()
        self.num_module = num_module
        self.levels = [len(c["levels"]) for c in pre["categorical"]]
        self.embedded = [c["embedding"] for c in pre["categorical"]]
        self.embeddings = nn.ModuleDict({str(j): nn.Embedding(len(c["levels"]), c["embedding"])
                                         for j, c in enumerate(pre["categorical"]) if c["embedding"]})
        widths = [d_in] + hidden + [outputs]
        layers = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i + 2 < len(widths):
                # torchfit's names are nn.Sequential(Linear, act, Linear, ...)'s; the dropout
                # after each act is the identity in evaluation mode, which is all compared here.
                layers.append(ACTIVATIONS[activation]())
        self.mlp = nn.Sequential(*layers)

    def forward(self, x, codes):
        parts = [self.num_module(x).flatten(1, -1)]
        for j, levels in enumerate(self.levels):
            if self.embedded[j]:
                parts.append(self.embeddings[str(j)](codes[:, j]))
            else:
                parts.append(nn.functional.one_hot(codes[:, j], levels).float())
        return self.mlp(torch.cat(parts, 1))


def num_module(rne, spec, bins, n):
    e = dict(spec["embedding"])
    kind = e.pop("kind")
    if kind == "piecewise_linear":
        return rne.PiecewiseLinearEmbeddings(bins, e.get("d_embedding", 16), activation=e.get("activation", False),
                                             version="B")
    return rne.PeriodicEmbeddings(n, e.get("d_embedding", 24), n_frequencies=e.get("n_frequencies", 48),
                                  frequency_init_scale=e.get("frequency_init_scale", 0.01),
                                  activation=e.get("activation", True), lite=e.get("lite", False))


def check_bins(case, rne, pre, x, run):
    """preprocessing.json's bins are compute_bins of the training part as the model sees it."""
    stored = pre.get("numeric_bins")
    require(stored is not None, f"{case}: preprocessing.json has no numeric_bins")
    with open(os.path.join(run, "split.json")) as f:
        split = json.load(f)
    held = set(split["validation"]) | set(split["test"])
    train = torch.tensor([i for i in range(len(x)) if i not in held])
    require(len(train) == split["train"], f"{case}: {len(train)} training rows vs split.json's {split['train']}")
    standardised = (x[train] - torch.tensor(pre["input_mean"])) / torch.tensor(pre["input_std"])
    names = pre["feature_names"]
    constant = [j for j in range(len(names)) if bool((standardised[:, j] == standardised[0, j]).all())]
    varying = [j for j in range(len(names)) if j not in constant]
    n_bins = CASES[case]["embedding"].get("n_bins", 48)
    want = rne.compute_bins(standardised[:, varying], n_bins)
    for j, w in zip(varying, want):
        got = torch.tensor(stored[j])
        same = got.shape == w.shape and (got - w).abs().max().item() <= 1e-6
        check(f"{case}: bins of {names[j]} as compute_bins'", same, f"{got.tolist()} vs {w.tolist()}")
    for j in constant:
        v = standardised[0, j].item()
        check(f"{case}: constant {names[j]} gets [v - 1, v + 1]", stored[j] == [v - 1, v + 1], f"{stored[j]} (v {v})")
    check(f"{case}: the constant column is seen", bool(constant) == bool(CASES[case].get("constant")), f"{constant}")
    check(f"{case}: some feature has fewer bins (x2 has 5 values)", any(len(b) < n_bins + 1 for b in stored))
    return [torch.tensor(b) for b in stored]


def check_run(case, folder, run):
    rne = package()
    spec = CASES[case]
    with open(os.path.join(run, "preprocessing.json")) as f:
        pre = json.load(f)
    x, codes = read_table(folder, pre)
    bins = check_bins(case, rne, pre, x, run) if spec["embedding"]["kind"] == "piecewise_linear" else None

    if "tabm" in spec:
        return check_tabm(case, rne, pre, bins, x, codes, run)
    torch.manual_seed(0)
    emb = num_module(rne, spec, bins, x.shape[1])
    stored = load_file(os.path.join(run, "weights.safetensors"))
    ours = {k[len("num_module."):]: v for k, v in stored.items() if k.startswith("num_module.")}
    theirs = emb.state_dict()
    require(set(ours) == set(theirs), f"{case}: num_module names {sorted(ours)} vs the package's {sorted(theirs)}")
    for name, want in theirs.items():
        got = ours[name]
        require(got.shape == want.shape and got.dtype == want.dtype,
                f"{case}: num_module.{name} {got.dtype}{list(got.shape)} vs {want.dtype}{list(want.shape)}")
        if name.startswith("impl."):  # the encoding the package derives from the same bins
            check(f"{case}: num_module.{name} as the package computes it from the bins", torch.equal(got, want),
                  f"largest difference {(got.float() - want.float()).abs().max().item():.2e}")
    n, d = emb.get_output_shape()
    d_in = n * d + sum(c["embedding"] or len(c["levels"]) for c in pre["categorical"])
    m = Reference(emb, pre, spec["hidden"], spec["activation"], d_in, 1)
    state = {("mlp." + k if k[0].isdigit() else k): v for k, v in stored.items()}
    m.load_state_dict(state, strict=True)
    if spec["embedding"]["kind"] == "piecewise_linear":
        # Version B starts linear.weight at 0; with the ReLU on, its output is 0 where ReLU's
        # gradient is 0, so it never moves (in the package too); without, it trains.
        moved = not torch.equal(ours["linear.weight"], torch.zeros_like(ours["linear.weight"]))
        relu = spec["embedding"].get("activation", False)
        check(f"{case}: linear.weight {'stays 0 under the ReLU' if relu else 'trained'}", moved != relu)
    m.eval()
    standardised = (x - torch.tensor(pre["input_mean"])) / torch.tensor(pre["input_std"])
    with torch.no_grad():
        want = m(standardised, codes)
        exported = torch.jit.load(os.path.join(run, "model.pt"))
        got = exported.logits(torch.cat([x, codes.float()], 1))
    compare_outputs(case, pre, run, got, want, "the package's module and the MLP")


def tabm_package():
    """tabm (0.0.3), installed as tests/python/tabm_reference.py installs it."""
    from tabm_reference import tabm
    return tabm()


def check_tabm(case, rne, pre, bins, x, codes, run):
    """TabM.make(..., num_embeddings=the package's module) with RUN's weights gives model.pt's
    and predict's values (the members' mean); seeded, RUN's weights are its initial ones."""
    spec = CASES[case]
    tabm = tabm_package()
    torch.manual_seed(SEED)
    emb = num_module(rne, spec, bins, x.shape[1])
    m = tabm.TabM.make(n_num_features=x.shape[1], cat_cardinalities=[len(c["levels"]) for c in pre["categorical"]],
                       d_out=1, num_embeddings=emb, **spec["tabm"])
    stored = load_file(os.path.join(run, "weights.safetensors"))
    theirs = m.state_dict()
    require(set(stored) == set(theirs), f"{case}: names {sorted(stored)} vs TabM's {sorted(theirs)}")
    check(f"{case}: TabM.make's 2 blocks with num_embeddings", "backbone.blocks.1.0.weight" in stored
          and "backbone.blocks.2.0.weight" not in stored)
    if spec.get("seeded"):
        for name, want in theirs.items():
            if name != "output.bias":
                check(f"{case}: {name} as torch.manual_seed({SEED}), the embedding and TabM.make draw it",
                      torch.equal(stored[name], want), f"{(stored[name].float() - want.float()).abs().max():.2e}")
        finish(f"{case}: ")
    m.load_state_dict(stored, strict=True)
    m.eval()
    standardised = (x - torch.tensor(pre["input_mean"])) / torch.tensor(pre["input_std"])
    with torch.no_grad():
        want = m(standardised, codes).mean(1)
        got = torch.jit.load(os.path.join(run, "model.pt")).logits(torch.cat([x, codes.float()], 1))
    compare_outputs(case, pre, run, got, want, "TabM")


def compare_outputs(case, pre, run, got, want, what):
    """model.pt's logits `got` and RUN/predictions.csv against the reference's `want`."""
    diff = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
    print(f"{case}: model.pt's logits vs {what}: largest difference {diff:.2e}")
    check(f"{case}: model.pt logits", got.shape == want.shape and diff <= TOLERANCE, f"{diff:.2e}")
    with open(os.path.join(run, "predictions.csv")) as f:
        predicted = torch.tensor([float(r[0]) for r in list(csv.reader(f))[1:]])
    values = want[:, 0] * pre["target_std"][0] + pre["target_mean"][0]
    diff = (predicted - values).abs().max().item() / max(values.abs().max().item(), 1e-12)
    print(f"{case}: torchfit predict vs {what}: largest difference {diff:.2e}")
    check(f"{case}: torchfit predict", predicted.shape == values.shape and diff <= TOLERANCE, f"{diff:.2e}")
    finish(f"{case}: ")


def main(args):
    if len(args) == 3 and args[0] == "prepare" and args[1] in CASES:
        prepare(args[1], args[2])
    elif len(args) == 4 and args[0] == "check" and args[1] in CASES:
        check_run(*args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
