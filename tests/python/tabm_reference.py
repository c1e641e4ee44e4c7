"""PyTorch's side of tests/tabm.rs: `model.kind: tabm` held to the reference package,
`tabm.TabM` (0.0.3), on a table with numeric and categorical (text) columns.

usage: tabm_reference.py prepare CASE DIR   t.csv, x.csv (t.csv without y), init.safetensors
                                            (a seeded TabM.make's state_dict) and config.yaml
       tabm_reference.py check CASE DIR RUN trains TabM from DIR/init.safetensors in a plain
                                            PyTorch loop and compares RUN's per-epoch losses,
                                            weights.safetensors, model.pt's predictions and
                                            RUN/predictions.csv (torchfit predict on x.csv)
       tabm_reference.py check_init CASE RUN RUN (no init_from) started from the parameters
                                            torch.manual_seed(seed) and TabM.make draw

The reference loop is the package's example's (shared batches): TabM.make with the config's
knobs and the same initial weights, model.train(), rows in file order, every member sees the
batch, the loss is the mean of the k members' losses (the [batch * k] member outputs against
the targets repeated k times, class weights included), torch.optim.Adam, one thread, dropout 0
(the masks of two programs come from different generators). The epoch loss torchfit records is
that of the combined prediction (the members' mean; for classifiers the mean probability) in
training mode, as each step computed it; prediction is the mean of the members' outputs.

The inputs are torchfit's own encoding, taken from model.pt: `encode` turns the text columns
into level codes (categorical.json's order; the cardinality is the number of levels, "(other)"
included), and the numeric features are standardised by model.pt's input_mean and input_std.

The reference packages are installed on first use with `pip install --no-deps --target
~/.cache/torchfit/tabm tabm==0.0.3 rtdl_num_embeddings==0.0.12` (they need only torch and
typing_extensions, which the torch folder has); when that fails, every command exits 77 and the
Rust side skips, saying why.
"""
import csv
import json
import os
import sys

import numpy as np
import torch
from torch import nn
from safetensors.torch import load_file, save_file

from checks import check, finish, pip_install_once, require
from fidelity import relative, yaml_value

TOLERANCE = 1e-5
SKIP = 77
PACKAGES = ["tabm==0.0.3", "rtdl_num_embeddings==0.0.12"]
TABM_DIR = os.path.expanduser("~/.cache/torchfit/tabm")
ROWS = 300
SEED = 5

SMALL = dict(k=4, n_blocks=2, d_block=32, dropout=0.0)
CASES = {
    "regression": dict(task="regression", loss="mse", knobs=dict(SMALL, arch_type="tabm")),
    "classification": dict(task="classification", loss="cross_entropy", knobs=dict(SMALL, arch_type="tabm"),
                           class_weight="balanced"),
    "binary": dict(task="classification", loss="bce", knobs=dict(SMALL, arch_type="tabm-mini")),
    # No init_from: torchfit draws the initial weights from the config's seed. One epoch with
    # everything frozen but output.bias (a run trains something) keeps them.
    "init": dict(task="classification", loss="cross_entropy", knobs=dict(k=6, n_blocks=3, d_block=24, arch_type="tabm"),
                 seeded=True),
    "init_mini": dict(task="regression", loss="mse", knobs=dict(k=6, n_blocks=2, d_block=24, arch_type="tabm-mini"),
                      seeded=True),
}
EPOCHS, BATCH, LR = 4, 64, 0.01


def tabm():
    """The reference package, installed into TABM_DIR on first use (tests run at once share it:
    the folder appears whole or not at all)."""
    pip_install_once(TABM_DIR, "tabm.py", PACKAGES, f"{' '.join(PACKAGES)} (the reference TabM)")
    sys.path.insert(0, TABM_DIR)
    import tabm as package
    return package


COLOURS, SIZES = ["red", "green", "blue"], ["s", "m", "l", "xl"]


def make_rows(task, loss):
    """x0, colour, x1, size, y: y follows all four (a number, or a class label)."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(ROWS):
        colour, size = COLOURS[i % 3], SIZES[(i * 7) % 4]
        x0, x1 = rng.normal() * 2.0, rng.normal() * 10.0 + 5.0
        value = np.sin(x0) + 0.05 * x1 + (colour == "red") - 0.5 * SIZES.index(size) / 3 + 0.1 * rng.normal()
        rows.append([f"{x0:.4f}", colour, f"{x1:.3f}", size, value])
    if task == "regression":
        for r in rows:
            r[4] = f"{r[4]:.4f}"
    else:
        cuts = [0.5] if loss == "bce" else [0.5, 0.8]  # unbalanced: class weights matter
        edges = np.quantile([r[4] for r in rows], cuts)
        names = ["low", "mid", "high"] if len(cuts) == 2 else ["no", "yes"]
        for r in rows:
            r[4] = names[int(np.digitize(r[4], edges))]
    return rows


def cardinalities():
    """The levels torchfit makes of each text column: those seen, plus "(other)"."""
    return [len(COLOURS) + 1, len(SIZES) + 1]


def d_out(spec):
    if spec["task"] == "regression" or spec["loss"] == "bce":
        return 1
    return 3


def network(spec):
    return tabm().TabM.make(n_num_features=2, cat_cardinalities=cardinalities(), d_out=d_out(spec), **spec["knobs"])


def prepare(case, out):
    spec = CASES[case]
    rows = make_rows(spec["task"], spec["loss"])
    with open(os.path.join(out, "t.csv"), "w", newline="") as f:
        csv.writer(f).writerows([["x0", "colour", "x1", "size", "y"], *rows])
    with open(os.path.join(out, "x.csv"), "w", newline="") as f:
        csv.writer(f).writerows([["x0", "colour", "x1", "size"], *[r[:4] for r in rows]])
    torch.manual_seed(3)
    save_file(network(spec).state_dict(), os.path.join(out, "init.safetensors"))
    model = dict(kind="tabm", **spec["knobs"])
    if spec.get("seeded"):
        model["freeze"] = ["backbone.*", "output.weight"]
    else:
        model["init_from"] = os.path.join(out, "init.safetensors")
    training = dict(epochs=1 if spec.get("seeded") else EPOCHS, batch_size=BATCH, shuffle=False, loss=spec["loss"],
                    metrics=[], threads=1, optimizer=dict(kind="adam", lr=LR, semantics="torch"))
    if spec.get("class_weight"):
        training["class_weight"] = spec["class_weight"]
    config = {
        "name": f"tabm_{case}", "seed": SEED, "device": "cpu", "task": spec["task"],
        "data": dict(kind="csv", path=os.path.join(out, "t.csv"), target="y", validation_split=0, test_split=0),
        "model": model,
        "training": training,
    }
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.writelines(f"{k}: {yaml_value(v)}\n" for k, v in config.items())


def inputs(run, folder, spec):
    """torchfit's encoding of t.csv, from model.pt: (model.pt, raw x for its methods, x_num,
    x_cat, y as the loss sees it, labels)."""
    extra = {"features.json": "", "categorical.json": "", "labels.json": ""}
    m = torch.jit.load(os.path.join(run, "model.pt"), _extra_files=extra)
    features, categorical = json.loads(extra["features.json"]), json.loads(extra["categorical.json"])
    require(features == ["x0", "x1"], f"numeric features {features}")
    require([c["name"] for c in categorical] == ["colour", "size"], f"categorical features {categorical}")
    require([len(c["levels"]) for c in categorical] == cardinalities(), f"levels {categorical}")
    with open(os.path.join(folder, "t.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    numeric = torch.tensor([[float(r[n]) for n in features] for r in rows])
    text = {c["name"]: [r[c["name"]] for r in rows] for c in categorical}
    with torch.no_grad():
        raw = m.encode(numeric, text)
    x_num = (raw[:, :2] - m.input_mean) / m.input_std
    x_cat = raw[:, 2:].long()
    labels = None
    if spec["task"] == "regression":
        y = (torch.tensor([[float(r["y"])] for r in rows]) - m.target_mean) / m.target_std
    else:
        labels = json.loads(extra["labels.json"])
        y = torch.tensor([labels.index(r["y"]) for r in rows])
    return m, raw, x_num, x_cat, y, labels


def members_loss(spec, out, y, weight):
    """Each member's per-sample loss `[batch, k]` (class-weighted)."""
    b, k = out.shape[:2]
    flat, rep = out.flatten(0, 1), y.repeat_interleave(k, 0)
    if spec["loss"] == "mse":
        per = nn.functional.mse_loss(flat, rep, reduction="none").mean(1)
    elif spec["loss"] == "cross_entropy":
        per = nn.functional.cross_entropy(flat, rep, reduction="none")
    else:
        per = nn.functional.binary_cross_entropy_with_logits(flat.squeeze(1), rep.float(), reduction="none")
    if weight is not None:
        per = per * weight[rep]
    return per.view(b, k)


def combined(spec, out):
    """The prediction of the members' outputs `[batch, k, outputs]`: the mean, or the mean
    probability (bce: of class 1)."""
    if spec["loss"] == "mse":
        return out.mean(1)
    if spec["loss"] == "cross_entropy":
        return out.softmax(-1).mean(1)
    return out.sigmoid().mean(1)


def combined_loss(spec, out, y, weight):
    """The per-sample loss of the combined prediction (class-weighted)."""
    p = combined(spec, out)
    if spec["loss"] == "mse":
        per = ((p - y) ** 2).mean(1)
    elif spec["loss"] == "cross_entropy":
        per = -p.gather(1, y[:, None]).squeeze(1).log()
    else:
        p, t = p.squeeze(1), y.float()
        per = -(t * p.log() + (1 - t) * (1 - p).log())
    return per if weight is None else per * weight[y]


def class_weights(spec, y):
    """scikit-learn's balanced class weights, as torchfit's class_weight: balanced."""
    if not spec.get("class_weight"):
        return None
    counts = torch.bincount(y).double()
    return (len(y) / (len(counts) * counts)).float()


def reference(spec, folder, x_num, x_cat, y):
    torch.set_num_threads(1)
    m = network(spec)
    m.load_state_dict(load_file(os.path.join(folder, "init.safetensors")))
    opt = torch.optim.Adam(m.parameters(), lr=LR)
    weight = class_weights(spec, y)
    m.train()
    losses = []
    for _ in range(EPOCHS):
        total = 0.0
        for start in range(0, len(y), BATCH):
            sl = slice(start, start + BATCH)
            out = m(x_num[sl], x_cat[sl])
            loss = members_loss(spec, out, y[sl], weight).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                total += combined_loss(spec, out, y[sl], weight).double().sum().item()
        losses.append(total / len(y))
    return losses, m


def check_run(case, folder, run):
    spec = CASES[case]
    exported, raw, x_num, x_cat, y, labels = inputs(run, folder, spec)
    losses, m = reference(spec, folder, x_num, x_cat, y)
    with open(os.path.join(run, "metrics.csv")) as f:
        got = [float(r["loss"]) for r in csv.DictReader(f)]
    require(len(got) == len(losses), f"{case}: {len(got)} epochs in metrics.csv, PyTorch trained {len(losses)}")
    print(f"{case}: losses torchfit {got}, PyTorch {losses}; largest relative difference "
          f"{max(relative(a, b) for a, b in zip(got, losses)):.2e}")
    for epoch, (g, want) in enumerate(zip(got, losses), 1):
        check(f"{case} epoch {epoch} loss", relative(g, want) <= TOLERANCE, f"torchfit {g!r} vs PyTorch {want!r}")
    check(f"{case}: training lowers the loss", losses[-1] < 0.9 * losses[0], f"{losses}")

    mine = {k: v.detach() for k, v in m.state_dict().items()}
    stored = load_file(os.path.join(run, "weights.safetensors"))
    require(set(stored) == set(mine), f"{case}: weights.safetensors {sorted(stored)} vs TabM's {sorted(mine)}")
    start, worst = load_file(os.path.join(folder, "init.safetensors")), (0.0, "")
    for name, want in mine.items():
        got = stored[name]
        require(got.shape == want.shape, f"{case} {name}: {list(got.shape)} vs {list(want.shape)}")
        check(f"{case}: {name} trained", not torch.equal(want, start[name]), name)
        diff = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
        worst = max(worst, (diff, name))
        check(f"{case} {name} within {TOLERANCE}", diff <= TOLERANCE, f"largest difference {diff:.2e}")
    print(f"{case}: weights' largest difference {worst[0]:.2e} of their tensor's largest magnitude ({worst[1]})")

    # The same (trained) weights in TabM, evaluation mode: model.pt's combined prediction.
    m.load_state_dict(stored)
    m.eval()
    with torch.no_grad():
        want = combined(spec, m(x_num, x_cat))
        logits = exported.logits(raw)
    got = {"mse": lambda z: z, "cross_entropy": lambda z: z.softmax(1), "bce": lambda z: z.sigmoid()}[spec["loss"]](logits)
    diff = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
    print(f"{case}: model.pt vs TabM's mean prediction with the same weights: largest difference {diff:.2e}")
    check(f"{case}: model.pt's prediction", got.shape == want.shape and diff <= TOLERANCE,
          f"{list(got.shape)} vs {list(want.shape)}, {diff:.2e}")
    check_predictions(case, spec, run, want, exported, labels)
    finish(f"{case}: ")


def check_predictions(case, spec, run, want, exported, labels):
    """torchfit predict (--proba for classifiers) on x.csv gives TabM's mean prediction."""
    with open(os.path.join(run, "predictions.csv")) as f:
        body = list(csv.reader(f))[1:]
    if spec["task"] == "regression":
        theirs = torch.tensor([[float(v) for v in r] for r in body])
        want = want * exported.target_std + exported.target_mean
    else:
        theirs = torch.tensor([[float(v) for v in r[1:]] for r in body])
        if spec["loss"] == "bce":
            want = torch.cat([1 - want, want], 1)
        check(f"{case}: labels", [labels[i] for i in want.argmax(1).tolist()] == [r[0] for r in body])
    diff = (theirs - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
    print(f"{case}: torchfit predict vs TabM: largest difference {diff:.2e}")
    check(f"{case}: torchfit predict", theirs.shape == want.shape and diff <= TOLERANCE, f"{diff:.2e}")


def check_init(case, run):
    """RUN drew the parameters torch.manual_seed(SEED) and TabM.make draw, bit for bit."""
    torch.manual_seed(SEED)
    m = network(CASES[case])
    stored = load_file(os.path.join(run, "weights.safetensors"))
    require(set(stored) == set(m.state_dict()), f"{case}: names {sorted(stored)} vs {sorted(m.state_dict())}")
    for name, want in m.named_parameters():
        if name != "output.bias":
            check(f"{case}: {name} as torch.manual_seed({SEED}) and TabM.make draw it",
                  torch.equal(stored[name], want.detach()),
                  f"largest difference {(stored[name] - want).abs().max().item():.2e}")
    finish(f"{case}: ")


def main(args):
    if len(args) == 3 and args[0] == "prepare" and args[1] in CASES:
        tabm()
        prepare(args[1], args[2])
    elif len(args) == 4 and args[0] == "check" and args[1] in CASES:
        check_run(*args[1:])
    elif len(args) == 3 and args[0] == "check_init" and args[1] in CASES:
        check_init(*args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
