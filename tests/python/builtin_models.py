"""PyTorch's side of the built-in model tests (tests/builtin_models.rs): `model.kind: resnet`
held to the reference package's network, `rtdl_revisiting_models.ResNet` (0.0.2).

usage: builtin_models.py prepare CASE DIR   x.npy, y.npy, init.safetensors (a seeded rtdl
                                            ResNet's state_dict) and config.yaml in DIR
       builtin_models.py check CASE DIR RUN trains the rtdl ResNet from DIR/init.safetensors in
                                            a plain PyTorch loop and compares RUN's per-epoch
                                            losses, weights.safetensors (buffers included),
                                            model.pt's logits, and RUN/predictions.csv
                                            (torchfit predict on x.npy, --proba when classifying)

       builtin_models.py check_init RUN     RUN (prepared as case init) started from the weights
                                            torch.manual_seed(seed) and rtdl's ResNet draw

CASEs: regression and classification (Adam), sgd (classification with SGD and momentum),
init (no init_from: torchfit's own initial weights).

The reference package is installed on first use with
`pip install --no-deps --target ~/.cache/torchfit/rtdl rtdl_revisiting_models==0.0.2` (it needs
only torch); when that fails, both commands exit 77 and the Rust side skips, saying why.

The reference loop is what a PyTorch user writes: rtdl's ResNet with the config's knobs and the
same initial weights, model.train(), rows in file order, batches of the config's size, the
loss's mean over the batch, torch.optim.Adam (or SGD), one thread. dropout1 is 0 here: the
masks of two programs come from different generators (tests/builtin_models.rs trains the
default dropout1 0.15 on its own).

Why the Adam cases freeze `input_projection.bias` and `blocks.*.linear2.bias` (in both
programs, with `model.freeze`): every path from these biases to the loss goes through a
train-mode BatchNorm (the next blocks' `normalization`, and `output.normalization`), which
subtracts the batch mean, so their gradient is 0 up to rounding (1e-8). Adam divides it by its
own root mean square and steps by about lr whatever its size, so the rounding of two programs
sends these biases (and, through them, the running means) apart. Measured: the regression
case trained unfrozen by torchfit's autograd engine (`model.kind: torchscript` on the scripted
rtdl ResNet) and by the loop here ends with these biases 8-18% of their size apart and the
eval-mode logits 4e-3 apart, while the losses agree to 1e-7; in PyTorch alone, scaling the
loss by (1 + 1e-7) moves them by 20-50% in three epochs. Frozen, they stay where they are in both, which changes nothing else the network computes. The
sgd case trains every parameter: SGD steps in proportion to the gradient, so rounding stays
rounding.
"""
import csv
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from checks import check, finish, pip_install_once, require
from fidelity import loss_per_sample, relative, yaml_value

TOLERANCE = 1e-5
SKIP = 77
PACKAGE = "rtdl_revisiting_models==0.0.2"
RTDL_DIR = os.path.expanduser("~/.cache/torchfit/rtdl")
ROWS, FEATURES = 480, 6
REDUNDANT_BIASES = ["input_projection.bias", "blocks.*.linear2.bias"]

# Each case: the ResNet's knobs (not the defaults, so that each key is seen to reach the
# network; 48 * 1.3 = 62.4 makes d_hidden int()'s 62), the task, loss and optimizer, written
# once here into both the torchfit config and the reference loop.
KNOBS = dict(n_blocks=3, d_block=48, d_hidden_multiplier=1.3, dropout1=0.0, dropout2=0.0)
CASES = {
    "regression": dict(task="regression", loss="mse", epochs=4, batch_size=64,
                       optimizer=dict(kind="adam", lr=0.01), freeze=REDUNDANT_BIASES),
    "classification": dict(task="classification", loss="cross_entropy", epochs=4, batch_size=64,
                           optimizer=dict(kind="adam", lr=0.01), freeze=REDUNDANT_BIASES),
    "sgd": dict(task="classification", loss="cross_entropy", epochs=4, batch_size=64,
                optimizer=dict(kind="sgd", lr=0.05, momentum=0.9), freeze=[]),
    # No init_from: torchfit draws the initial weights itself, from the config's seed. One
    # epoch with everything frozen but output.linear.bias (a run trains something) keeps them.
    "init": dict(task="regression", loss="mse", epochs=1, batch_size=64, optimizer=dict(kind="adam", lr=0.01),
                 freeze=["input_projection.*", "blocks.*", "output.normalization.*", "output.linear.weight"],
                 seeded=True),
}
SEED = 1
CLASSES = 3


def rtdl():
    """The reference package, installed into RTDL_DIR on first use (tests run at once share
    it: the folder appears whole or not at all)."""
    pip_install_once(RTDL_DIR, "rtdl_revisiting_models.py", [PACKAGE], f"{PACKAGE} (the reference ResNet)")
    sys.path.insert(0, RTDL_DIR)
    import rtdl_revisiting_models
    return rtdl_revisiting_models


def make_data(task):
    """x float32 [ROWS, FEATURES] on different scales; y a noisy nonlinear function of three
    features (float32 [ROWS, 1]) or its tercile as a class (int64 0..2)."""
    rng = np.random.default_rng(11)
    x = (rng.normal(size=(ROWS, FEATURES)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])).astype(np.float32)
    value = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] - 0.2 * x[:, 4] + 0.1 * rng.normal(size=ROWS)
    if task == "regression":
        return x, value.astype(np.float32)[:, None]
    return x, np.digitize(value, np.quantile(value, [1 / 3, 2 / 3])).astype(np.int64)


def network(case):
    spec = CASES[case]
    d_out = 1 if spec["task"] == "regression" else CLASSES
    return rtdl().ResNet(d_in=FEATURES, d_out=d_out, **KNOBS)


def prepare(case, out):
    spec = CASES[case]
    torch.manual_seed(3)
    save_file(network(case).state_dict(), os.path.join(out, "init.safetensors"))
    x, y = make_data(spec["task"])
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "y.npy"), y)
    model = dict(kind="resnet", **KNOBS)
    if not spec.get("seeded"):
        model["init_from"] = os.path.join(out, "init.safetensors")
    if spec["freeze"]:
        model["freeze"] = spec["freeze"]
    config = {
        "name": f"resnet_{case}", "seed": SEED, "device": "cpu", "task": spec["task"],
        "data": dict(kind="npy", x=os.path.join(out, "x.npy"), y=os.path.join(out, "y.npy"), standardize=False,
                     validation_split=0, test_split=0),
        "model": model,
        "training": dict(epochs=spec["epochs"], batch_size=spec["batch_size"], shuffle=False, loss=spec["loss"],
                         metrics=[], threads=1, optimizer=dict(spec["optimizer"], semantics="torch")),
    }
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.writelines(f"{k}: {yaml_value(v)}\n" for k, v in config.items())


def frozen(name, patterns):
    from fnmatch import fnmatchcase
    return any(fnmatchcase(name, p) for p in patterns)


def reference(case, folder):
    """The plain PyTorch loop: (per-epoch losses, the trained rtdl ResNet)."""
    spec = CASES[case]
    torch.set_num_threads(1)
    m = network(case)
    m.load_state_dict(load_file(os.path.join(folder, "init.safetensors")))
    for name, p in m.named_parameters():
        p.requires_grad_(not frozen(name, spec["freeze"]))
    params = [p for p in m.parameters() if p.requires_grad]
    o = spec["optimizer"]
    if o["kind"] == "adam":
        opt = torch.optim.Adam(params, lr=o["lr"])
    else:
        opt = torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"])
    x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")))
    y = torch.from_numpy(np.load(os.path.join(folder, "y.npy")))
    m.train()
    n, batch, losses = len(x), spec["batch_size"], []
    for _ in range(spec["epochs"]):
        total = 0.0
        for start in range(0, n, batch):
            per = loss_per_sample(spec["loss"], m(x[start:start + batch]), y[start:start + batch])
            opt.zero_grad()
            per.mean().backward()
            opt.step()
            total += per.detach().double().sum().item()
        losses.append(total / n)
    return losses, m


def check_run(case, folder, run):
    losses, m = reference(case, folder)
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    require(len(rows) == len(losses), f"{case}: {len(rows)} epochs in metrics.csv, PyTorch trained {len(losses)}")
    got = [float(r["loss"]) for r in rows]
    print(f"{case}: losses torchfit {got}, PyTorch {losses}; largest relative difference "
          f"{max(relative(a, b) for a, b in zip(got, losses)):.2e}")
    for epoch, (g, want) in enumerate(zip(got, losses), 1):
        check(f"{case} epoch {epoch} loss", relative(g, want) <= TOLERANCE, f"torchfit {g!r} vs PyTorch {want!r}")
    check(f"{case}: training lowers the loss", losses[-1] < 0.8 * losses[0], f"{losses}")

    # weights.safetensors: the rtdl ResNet's state_dict, parameters and buffers.
    mine = {k: v.detach() for k, v in m.state_dict().items()}
    stored = load_file(os.path.join(run, "weights.safetensors"))
    require(set(stored) == set(mine), f"{case}: weights.safetensors names {sorted(stored)} vs rtdl's {sorted(mine)}")
    start = load_file(os.path.join(folder, "init.safetensors"))
    worst = (0.0, "")
    for name, want in mine.items():
        got = stored[name]
        check(f"{case} {name} dtype and shape", got.dtype == want.dtype and got.shape == want.shape,
              f"{got.dtype}{list(got.shape)} vs {want.dtype}{list(want.shape)}")
        if got.dtype != want.dtype or got.shape != want.shape:
            continue
        if not want.is_floating_point():
            check(f"{case} {name}", torch.equal(got, want), f"{got} vs {want}")
            continue
        if frozen(name, CASES[case]["freeze"]):
            check(f"{case}: frozen {name} unchanged", torch.equal(got, start[name]), name)
            continue
        if not frozen(name, REDUNDANT_BIASES):  # SGD moves them by rounding only
            check(f"{case}: {name} trained", not torch.equal(want, start[name]), name)
        scale = max(want.abs().max().item(), 1e-12)
        diff = (got - want).abs().max().item() / scale
        worst = max(worst, (diff, name))
        check(f"{case} {name} within {TOLERANCE}", diff <= TOLERANCE, f"largest difference {diff:.2e} of {scale:.3g}")
    print(f"{case}: weights' largest difference {worst[0]:.2e} of their tensor's largest magnitude ({worst[1]})")

    # model.pt's logits are the rtdl ResNet's eval-mode outputs on the (unstandardised) table.
    exported = torch.jit.load(os.path.join(run, "model.pt"))
    x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")))
    m.eval()
    with torch.no_grad():
        want, got = m(x), exported.logits(x)
    diff = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
    print(f"{case}: model.pt's logits vs the rtdl ResNet's eval-mode outputs: largest difference {diff:.2e}")
    check(f"{case}: model.pt logits", got.shape == want.shape and diff <= TOLERANCE,
          f"{list(got.shape)} vs {list(want.shape)}, {diff:.2e}")
    check_predictions(case, run, exported, x)
    finish(f"{case}: ")


def check_predictions(case, run, exported, x):
    """model.pt's forward in PyTorch gives `torchfit predict`'s answers: labels and their
    probabilities (--proba), or values, within 1e-6."""
    with open(os.path.join(run, "predictions.csv")) as f:
        body = list(csv.reader(f))[1:]
    with torch.no_grad():
        out = exported(x)
    if CASES[case]["task"] == "classification":
        extra = {"labels.json": ""}
        torch.jit.load(os.path.join(run, "model.pt"), _extra_files=extra)
        labels = json.loads(extra["labels.json"])
        check(f"{case}: labels as torchfit predict's", [labels[i] for i in out.tolist()] == [r[0] for r in body])
        with torch.no_grad():
            values = exported.predict_proba(x)
        theirs = torch.tensor([[float(v) for v in r[1:]] for r in body])
    else:
        values, theirs = out, torch.tensor([[float(v) for v in r] for r in body])
    diff = (values.reshape(theirs.shape) - theirs).abs().max().item()
    check(f"{case}: model.pt's forward vs torchfit predict", diff <= 1e-6, f"largest difference {diff:.2e}")


def check_init(run):
    """RUN (case init) drew the parameters torch.manual_seed(SEED) and rtdl's constructor
    draw, bit for bit."""
    torch.manual_seed(SEED)
    m = network("init")
    stored = load_file(os.path.join(run, "weights.safetensors"))
    for name, want in m.named_parameters():
        if frozen(name, CASES["init"]["freeze"]):
            check(f"init: {name} as torch.manual_seed({SEED}) and rtdl's ResNet draw it",
                  name in stored and torch.equal(stored[name], want.detach()),
                  f"largest difference {(stored[name] - want).abs().max().item():.2e}" if name in stored else "absent")
    finish("init: ")


def main(args):
    if len(args) == 3 and args[0] == "prepare" and args[1] in CASES:
        prepare(args[1], args[2])
    elif len(args) == 4 and args[0] == "check" and args[1] in CASES:
        check_run(*args[1:])
    elif len(args) == 2 and args[0] == "check_init":
        check_init(args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
