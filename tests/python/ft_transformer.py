"""PyTorch's side of tests/ft_transformer.rs: `model.kind: ft_transformer` held to the reference
package's network, `rtdl_revisiting_models.FTTransformer` (0.0.2), on a table with numeric
columns (one with missing cells) and text columns (one with missing cells).

usage: ft_transformer.py prepare CASE DIR    t.csv (features and target), x.csv (features),
                                             init.safetensors (a seeded FTTransformer's
                                             state_dict) and config.yaml in DIR
       ft_transformer.py check CASE DIR RUN  trains the FTTransformer from DIR/init.safetensors
                                             in a plain PyTorch loop and compares RUN's
                                             per-epoch losses, weights.safetensors, model.pt's
                                             logits and RUN/predictions.csv (torchfit predict
                                             on x.csv)
       ft_transformer.py check_init DIR RUN  RUN (case init) started from the weights that
                                             torch.manual_seed(seed) and FTTransformer draw

CASEs: regression and classification (Adam), init (no init_from: torchfit's own weights).

The package's inputs are torchfit's: the numeric columns filled with the training mean and
standardised with preprocessing.json's statistics, and each text column's level codes, the
levels being the values seen in training (sorted), `(other)`, then `(missing)` when the
training part has empty cells. prepare computes those levels for the cardinalities of the
network it saves; check confirms preprocessing.json has them. The loop: model.train(), rows in
file order, batches of the config's size, torch.optim.Adam, one thread, every dropout 0 (two
programs draw their masks from different generators; tests/ft_transformer.rs trains the
default dropouts on their own).
"""
import csv
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from builtin_models import check_predictions, rtdl
from checks import check, finish, require
from fidelity import loss_per_sample, relative, yaml_value

TOLERANCE = 1e-5
ROWS = 400
NUMERIC = ["x0", "x1", "x2"]
TEXT = {"colour": ["red", "green", "blue", "teal"], "size": ["s", "m", "l", ""]}
CLASSES = ["hi", "lo", "mid"]  # sorted: torchfit's label order
# Not the defaults, so that each key is seen to reach the network (24 * 1.5 = 36 hidden, two
# heads of 12).
KNOBS = dict(n_blocks=2, d_block=24, attention_n_heads=2, attention_dropout=0.0, ffn_d_hidden_multiplier=1.5,
             ffn_dropout=0.0, residual_dropout=0.0)
# W_k's bias adds q.b_k to every key's logit alike, which softmax takes away: its gradient is 0
# up to rounding (1e-9), which Adam scales up to steps of about lr, so two programs send it
# apart (measured: 0.8-1.0 of its size after 3 epochs, everything else within 1e-6). Both
# programs freeze it (`model.freeze`), which changes nothing else the network computes.
REDUNDANT_BIASES = ["backbone.blocks.*.attention.W_k.bias"]
CASES = {
    "regression": dict(task="regression", loss="mse", epochs=3, batch_size=64,
                       freeze=REDUNDANT_BIASES),
    "classification": dict(task="classification", loss="cross_entropy", epochs=3, batch_size=64,
                       freeze=REDUNDANT_BIASES),
    # No init_from: torchfit draws the initial weights itself, from the config's seed. One
    # epoch with everything frozen but the output bias (a run trains something) keeps them.
    "init": dict(task="classification", loss="cross_entropy", epochs=1, batch_size=64,
                 freeze=["cls_embedding.*", "cont_embeddings.*", "cat_embeddings.*", "backbone.blocks.*",
                         "backbone.output.normalization.*", "backbone.output.linear.weight"], seeded=True),
}
SEED = 5
# docs/models.md's training.optimizer.param_groups[0].params (weight_decay 0).
NO_DECAY = ["cls_embedding.*", "cont_embeddings.*", "cat_embeddings.*", "*_normalization.*", "*.bias"]
LR = 0.003


def table():
    """Rows of t.csv: x0..x2 on different scales (x1 with empty cells), colour and size
    (size with empty cells), and a target that follows them."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(ROWS):
        x = rng.normal(size=3) * np.array([1.0, 3.0, 0.5]) + np.array([0.0, 10.0, -1.0])
        colour, size = TEXT["colour"][i % 4], TEXT["size"][(i * 7 // 3) % 4]
        value = np.sin(x[0]) + 0.3 * (x[1] - 10) * (colour == "red") - 0.8 * (size == "l") + 0.1 * rng.normal()
        x1 = "" if i % 17 == 3 else f"{x[1]:.5f}"
        rows.append(dict(x0=f"{x[0]:.5f}", colour=colour, x1=x1, size=size, x2=f"{x[2]:.5f}", value=value))
    cut = np.quantile([r["value"] for r in rows], [1 / 3, 2 / 3])
    for r in rows:
        r["class"] = ["lo", "mid", "hi"][int(np.digitize(r["value"], cut))]
        r["value"] = f"{r['value']:.5f}"
    return rows


def levels(rows, column):
    """torchfit's levels of a text column whose every row trains."""
    seen = sorted({r[column] for r in rows if r[column] != ""})
    missing = ["(missing)"] if any(r[column] == "" for r in rows) else []
    return seen + ["(other)"] + missing


def network(case, rows):
    d_out = 1 if CASES[case]["task"] == "regression" else len(CLASSES)
    cards = [len(levels(rows, c)) for c in TEXT]
    return rtdl().FTTransformer(n_cont_features=len(NUMERIC), cat_cardinalities=cards, d_out=d_out, **KNOBS)


def write_csv(path, rows, columns):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def prepare(case, out):
    spec = CASES[case]
    rows = table()
    features = ["x0", "colour", "x1", "size", "x2"]
    target = "value" if spec["task"] == "regression" else "class"
    write_csv(os.path.join(out, "t.csv"), rows, features + [target])
    write_csv(os.path.join(out, "x.csv"), rows, features)
    torch.manual_seed(3)
    save_file(network(case, rows).state_dict(), os.path.join(out, "init.safetensors"))
    model = dict(kind="ft_transformer", **KNOBS)
    if not spec.get("seeded"):
        model["init_from"] = os.path.join(out, "init.safetensors")
    if spec["freeze"]:
        model["freeze"] = spec["freeze"]
    config = {
        "name": f"ftt_{case}", "seed": SEED, "device": "cpu", "task": spec["task"],
        "data": dict(kind="csv", path=os.path.join(out, "t.csv"), target=target, missing="mean",
                     validation_split=0, test_split=0),
        "model": model,
        "training": dict(epochs=spec["epochs"], batch_size=spec["batch_size"], shuffle=False, loss=spec["loss"],
                         metrics=[], threads=1, optimizer=dict(kind="adam", lr=LR, semantics="torch")),
    }
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.writelines(f"{k}: {yaml_value(v)}\n" for k, v in config.items())


def inputs(rows, run):
    """(raw, x_cont, x_cat): model.pt's input (numeric columns with NaN for empty cells, then
    the level codes, as floats) and the package's (filled and standardised as the run's
    preprocessing.json says; int64 codes)."""
    with open(os.path.join(run, "preprocessing.json")) as f:
        pre = json.load(f)
    require(pre["feature_names"] == NUMERIC, f"numeric features {pre['feature_names']}")
    got = {c["name"]: c["levels"] for c in pre["categorical"]}
    require(got == {c: levels(rows, c) for c in TEXT}, f"torchfit's levels {got} are those prepare assumed")
    numbers = torch.tensor([[float(r[c]) if r[c] else float("nan") for c in NUMERIC] for r in rows])
    codes = torch.tensor([[levels(rows, c).index(r[c] if r[c] else "(missing)") for c in TEXT] for r in rows])
    fill = torch.tensor(pre["input_fill"], dtype=torch.float32)
    x = torch.where(torch.isnan(numbers), fill, numbers)
    x = (x - torch.tensor(pre["input_mean"])) / torch.tensor(pre["input_std"])
    return torch.cat([numbers, codes.float()], 1), x, codes


def targets(case, rows):
    if CASES[case]["task"] == "regression":
        return torch.tensor([[float(r["value"])] for r in rows])
    return torch.tensor([CLASSES.index(r["class"]) for r in rows])


def frozen(name, patterns):
    from fnmatch import fnmatchcase
    return any(fnmatchcase(name, p) for p in patterns)


def reference(case, folder, rows, x, codes):
    """The plain PyTorch loop: (per-epoch losses, the trained FTTransformer)."""
    spec = CASES[case]
    torch.set_num_threads(1)
    m = network(case, rows)
    m.load_state_dict(load_file(os.path.join(folder, "init.safetensors")))
    for name, p in m.named_parameters():
        p.requires_grad_(not frozen(name, spec["freeze"]))
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=LR)
    y = targets(case, rows)
    m.train()
    n, batch, losses = len(x), spec["batch_size"], []
    for _ in range(spec["epochs"]):
        total = 0.0
        for s in range(0, n, batch):
            per = loss_per_sample(spec["loss"], m(x[s:s + batch], codes[s:s + batch]), y[s:s + batch])
            opt.zero_grad()
            per.mean().backward()
            opt.step()
            total += per.detach().double().sum().item()
        losses.append(total / n)
    return losses, m


def check_run(case, folder, run):
    rows = table()
    raw, x, codes = inputs(rows, run)
    losses, m = reference(case, folder, rows, x, codes)
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
    require(set(stored) == set(mine), f"{case}: weights.safetensors names {sorted(stored)} vs rtdl's {sorted(mine)}")
    start = load_file(os.path.join(folder, "init.safetensors"))
    worst = (0.0, "")
    for name, want in mine.items():
        got_t = stored[name]
        require(got_t.dtype == want.dtype and got_t.shape == want.shape, f"{case} {name}: {got_t.shape}")
        if frozen(name, CASES[case]["freeze"]):
            check(f"{case}: frozen {name} unchanged", torch.equal(got_t, start[name]), name)
            continue
        check(f"{case}: {name} trained", not torch.equal(want, start[name]), name)
        scale = max(want.abs().max().item(), 1e-12)
        diff = (got_t - want).abs().max().item() / scale
        worst = max(worst, (diff, name))
        check(f"{case} {name} within {TOLERANCE}", diff <= TOLERANCE, f"largest difference {diff:.2e} of {scale:.3g}")
    print(f"{case}: weights' largest difference {worst[0]:.2e} of their tensor's largest magnitude ({worst[1]})")

    # model.pt's logits on raw rows are the FTTransformer's eval-mode outputs.
    exported = torch.jit.load(os.path.join(run, "model.pt"))
    m.eval()
    with torch.no_grad():
        want, got_l = m(x, codes), exported.logits(raw)
    diff = (got_l - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
    print(f"{case}: model.pt's logits vs the FTTransformer's eval-mode outputs: largest difference {diff:.2e}")
    check(f"{case}: model.pt logits", got_l.shape == want.shape and diff <= TOLERANCE,
          f"{list(got_l.shape)} vs {list(want.shape)}, {diff:.2e}")
    check_predictions(case_kind(case), run, exported, raw)
    # docs/models.md's param group for the paper's optimizer names exactly the tensors that
    # the package's make_parameter_groups() exempts from weight decay.
    exempt = {id(p) for p in m.make_parameter_groups()[1]["params"]}
    named = {n for n, p in m.named_parameters() if frozen(n, NO_DECAY) != (id(p) in exempt)}
    check(f"{case}: docs' no-weight-decay group is the package's", not named, f"{sorted(named)}")
    finish(f"{case}: ")


def case_kind(case):
    """builtin_models.check_predictions' case of the same task."""
    return "regression" if CASES[case]["task"] == "regression" else "classification"


def check_init(folder, run):
    """RUN (case init) drew the parameters torch.manual_seed(SEED) and FTTransformer draw,
    bit for bit."""
    rows = table()
    inputs(rows, run)  # torchfit's levels are the network's cardinalities
    torch.manual_seed(SEED)
    m = network("init", rows)
    stored = load_file(os.path.join(run, "weights.safetensors"))
    require(set(stored) == set(m.state_dict()), f"names {sorted(stored)}")
    for name, want in m.named_parameters():
        if frozen(name, CASES["init"]["freeze"]):
            same = torch.equal(stored[name], want.detach())
            check(f"init: {name} as torch.manual_seed({SEED}) and FTTransformer draw it", same,
                  f"largest difference {(stored[name] - want).abs().max().item():.2e}")
    finish("init: ")


def main(args):
    if len(args) == 3 and args[0] == "prepare" and args[1] in CASES:
        prepare(args[1], args[2])
    elif len(args) == 4 and args[0] == "check" and args[1] in CASES:
        check_run(*args[1:])
    elif len(args) == 3 and args[0] == "check_init":
        check_init(*args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
