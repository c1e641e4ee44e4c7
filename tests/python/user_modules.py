"""PyTorch's side of the user-module tests (tests/user_modules.rs): the modules, their data,
the torchfit config that trains them, and the plain PyTorch loop they are held to.

usage: user_modules.py prepare CASE DIR     net.pt, x.npy, y.npy and config.yaml in DIR
       user_modules.py check CASE DIR RUN [KEY=N ...]
                                            trains DIR/net.pt in PyTorch on the same data and
                                            compares RUN's per-epoch losses and weights, and
                                            model.pt with RUN/predictions.csv (torchfit predict
                                            on x.npy, --proba when classifying); KEY (epochs, batch_size) as the
                                            run's --set changed it
       user_modules.py check_bf16 CASE DIR RUN
                                            RUN trained with precision bf16: its losses are
                                            torch.autocast's (bfloat16) loop's
       user_modules.py bad DIR              modules torchfit must refuse before epoch 1

CASEs: cnn (a CNN with BatchNorm on scikit-learn's digits), frozen and frozen_adam (the same
CNN with frozen layers and param groups, on SGD and on Adam), lstm and transformer (sequence
tasks generated here).

The reference loop is what a PyTorch user writes: torch.jit.load of the same net.pt,
model.train(), rows in file order, batches of the config's size, the loss's mean over the
batch, torch.optim's Adam or SGD with the config's param groups and frozen parameters left
out. Its epoch loss is the mean of the per-sample losses of the training-mode outputs, which
is what torchfit's metrics.csv `loss` holds. `prepare` exits 77 when the digits cannot be
downloaded (the Rust side then skips, saying why). `check` prints 'N passed, 0 failed'.
"""
import csv
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from fnmatch import fnmatchcase
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from checks import check, finish, require
from fidelity import loss_per_sample, relative, yaml_value

# Per-epoch losses and final weights agree within this, relative (weights: to their tensor's
# largest magnitude, since a weight near 0 carries the rounding of the larger ones).
TOLERANCE = 1e-5
# bf16 rounds to 8 bits of mantissa: two programs taking the same autocast steps agree to
# rounding, which training then carries on.
BF16_TOLERANCE = 1e-3
SKIP = 77
DIGITS_CACHE = os.path.expanduser("~/.cache/torchfit/digits/digits.csv")


class DigitsCnn(nn.Module):
    """Conv2d, BatchNorm2d, ReLU, MaxPool2d twice, then a Linear head; the table's 64 pixel
    columns are the 8x8 image. The convolutions have no bias, as usual before a BatchNorm,
    which subtracts it: its gradient would be rounding noise (1e-7 of the weights'), which
    Adam scales up to steps of lr, so no two programs would agree on it."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 2 * 2, classes)

    def forward(self, x):
        return self.head(self.features(x.view(-1, 1, 8, 8)).flatten(1))


STEPS, CHANNELS = 12, 3


class SequenceLstm(nn.Module):
    """An LSTM over [batch, steps, channels] (the table's columns step by step), its last
    hidden state through a LayerNorm to one output."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(CHANNELS, 16, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 1)
        self.steps, self.channels = STEPS, CHANNELS

    def forward(self, x):
        out, _ = self.lstm(x.view(x.size(0), self.steps, self.channels))
        return self.head(self.norm(out[:, -1]))


class SequenceTransformer(nn.Module):
    """A TransformerEncoder over projected steps, mean-pooled to two class logits. No
    dropout: torchfit's and PyTorch's masks come from different generators. Trained with
    SGD: attention's key bias adds the same to every score of a query, which the softmax
    cancels, so its gradient is rounding noise (1e-10), which Adam would scale up to steps
    of lr (and scripting refuses bias=False)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(CHANNELS, 16)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 2)
        self.steps, self.channels = STEPS, CHANNELS

    def forward(self, x):
        h = self.encoder(self.embed(x.view(x.size(0), self.steps, self.channels)))
        return self.head(h.mean(1))


# Each case: its module, data, loss and the optimizer and fine-tuning settings, written once
# here into both the torchfit config and the reference loop.
CASES = {
    "cnn": dict(module=DigitsCnn, data="digits", task="classification", loss="cross_entropy", epochs=3,
                batch_size=64, optimizer=dict(kind="adam", lr=0.01)),
    "frozen": dict(module=DigitsCnn, data="digits", task="classification", loss="cross_entropy", epochs=3,
                   batch_size=64, optimizer=dict(kind="sgd", lr=0.05, momentum=0.9),
                   freeze=["features.0.*", "features.4.weight"],
                   param_groups=[dict(params="head.*", lr=0.2, weight_decay=0.001),
                                 dict(params=["features.1.*", "features.5.*"], lr=0.01)]),
    "frozen_adam": dict(module=DigitsCnn, data="digits", task="classification", loss="cross_entropy", epochs=3,
                        batch_size=64, optimizer=dict(kind="adam", lr=0.01), freeze=["features.4.*"],
                        param_groups=[dict(params="head.*", lr=0.003, weight_decay=0.01)]),
    "lstm": dict(module=SequenceLstm, data="sum", task="regression", loss="mse", epochs=4, batch_size=32,
                 optimizer=dict(kind="adam", lr=0.01)),
    "transformer": dict(module=SequenceTransformer, data="sign", task="classification", loss="cross_entropy",
                        epochs=3, batch_size=32, optimizer=dict(kind="sgd", lr=0.02, momentum=0.9)),
}


def digits_csv():
    """scikit-learn's digits.csv (1797 rows: 64 pixels 0..16, then the digit), read out of
    the scikit-learn wheel (downloaded without its dependencies) and cached once."""
    if os.path.isfile(DIGITS_CACHE):
        return DIGITS_CACHE
    os.makedirs(os.path.dirname(DIGITS_CACHE), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
             "scikit-learn", "-d", tmp], capture_output=True, text=True)
        wheels = glob.glob(os.path.join(tmp, "scikit_learn-*.whl"))
        if got.returncode != 0 or not wheels:
            why = (got.stderr.strip().splitlines() or ["no wheel"])[-1]
            print(f"skipping: cannot download scikit-learn's wheel for its digits data: {why}")
            sys.exit(SKIP)
        with zipfile.ZipFile(wheels[0]) as wheel:
            text = gzip.decompress(wheel.read("sklearn/datasets/data/digits.csv.gz"))
        # Tests run at once share the cache: the file appears whole or not at all.
        partial = f"{DIGITS_CACHE}.{os.getpid()}"
        with open(partial, "wb") as f:
            f.write(text)
        os.replace(partial, DIGITS_CACHE)
    return DIGITS_CACHE


def make_data(kind):
    """(x float32 [N, features], y) of a case: digits' pixels scaled to [0, 1] with the digit
    as an int64 label; or seeded sequences of STEPS x CHANNELS with a regression target (a
    noisy sum of channel 0) or a class (the sign of channel 1's sum)."""
    if kind == "digits":
        with open(digits_csv()) as f:
            rows = np.array([[float(v) for v in r] for r in csv.reader(f)])
        return (rows[:, :64] / 16).astype(np.float32), rows[:, 64].astype(np.int64)
    rng = np.random.default_rng(7)
    n = 480
    x = rng.normal(size=(n, STEPS, CHANNELS)).astype(np.float32)
    if kind == "sum":
        y = (0.3 * x[:, :, 0].sum(1) + 0.1 * rng.normal(size=n)).astype(np.float32)[:, None]
    else:
        y = (x[:, :, 1].sum(1) > 0).astype(np.int64)
    return x.reshape(n, STEPS * CHANNELS), y


def prepare(case, out):
    spec = CASES[case]
    torch.manual_seed(3)
    torch.jit.script(spec["module"]()).save(os.path.join(out, "net.pt"))
    x, y = make_data(spec["data"])
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "y.npy"), y)
    model = dict(kind="torchscript", path=os.path.join(out, "net.pt"))
    if "freeze" in spec:
        model["freeze"] = spec["freeze"]
    optimizer = dict(spec["optimizer"], semantics="torch")
    if "param_groups" in spec:
        optimizer["param_groups"] = spec["param_groups"]
    config = {
        "name": case, "seed": 1, "device": "cpu", "task": spec["task"],
        "data": dict(kind="npy", x=os.path.join(out, "x.npy"), y=os.path.join(out, "y.npy"), standardize=False,
                     validation_split=0, test_split=0),
        "model": model,
        "training": dict(epochs=spec["epochs"], batch_size=spec["batch_size"], shuffle=False, loss=spec["loss"],
                         metrics=[], threads=1, optimizer=optimizer),
    }
    with open(os.path.join(out, "config.yaml"), "w") as f:
        f.writelines(f"{k}: {yaml_value(v)}\n" for k, v in config.items())


def matches(name, patterns):
    patterns = [patterns] if isinstance(patterns, str) else patterns
    return any(fnmatchcase(name, p) for p in patterns)


def make_optimizer(spec, m):
    """torch.optim with the case's param groups; frozen parameters need no gradient and are
    in no group; parameters in no group take the optimizer's own settings."""
    params = dict(m.named_parameters())
    for name, p in params.items():
        if matches(name, spec.get("freeze", [])):
            p.requires_grad_(False)
    trainable = [n for n, p in params.items() if p.requires_grad]
    groups, taken = [], set()
    for group in spec.get("param_groups", []):
        names = [n for n in trainable if n not in taken and matches(n, group["params"])]
        taken.update(names)
        groups.append(dict({k: v for k, v in group.items() if k != "params"}, params=[params[n] for n in names]))
    groups.append(dict(params=[params[n] for n in trainable if n not in taken]))
    o = spec["optimizer"]
    if o["kind"] == "adam":
        return torch.optim.Adam(groups, lr=o["lr"], eps=1e-8)
    return torch.optim.SGD(groups, lr=o["lr"], momentum=o.get("momentum", 0.0))


def reference(case, folder, overrides=(), bf16=False):
    """The plain PyTorch loop on DIR/net.pt: (per-epoch losses, the trained module). With
    bf16, each forward pass runs under torch.autocast("cpu", dtype=torch.bfloat16)."""
    spec = dict(CASES[case])
    for override in overrides:
        key, value = override.split("=")
        require(key in ("epochs", "batch_size"), f"override {override}: only epochs and batch_size")
        spec[key] = int(value)
    torch.set_num_threads(1)
    m = torch.jit.load(os.path.join(folder, "net.pt"))
    x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")))
    y = torch.from_numpy(np.load(os.path.join(folder, "y.npy")))
    opt = make_optimizer(spec, m)
    m.train()
    n, batch, losses = len(x), spec["batch_size"], []
    for _ in range(spec["epochs"]):
        total = 0.0
        for start in range(0, n, batch):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = m(x[start:start + batch])
            per = loss_per_sample(spec["loss"], out.float(), y[start:start + batch])
            opt.zero_grad()
            per.mean().backward()
            opt.step()
            total += per.detach().double().sum().item()
        losses.append(total / n)
    return losses, m


def check_run(case, folder, run, *overrides):
    losses, m = reference(case, folder, overrides)
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    require(len(rows) == len(losses), f"{case}: {len(rows)} epochs in metrics.csv, PyTorch trained {len(losses)}")
    worst = max(relative(float(r["loss"]), l) for r, l in zip(rows, losses))
    print(f"{case}: losses torchfit {[float(r['loss']) for r in rows]}, PyTorch {losses}; "
          f"largest relative difference {worst:.2e}")
    for epoch, (r, l) in enumerate(zip(rows, losses), 1):
        check(f"{case} epoch {epoch} loss", relative(float(r["loss"]), l) <= TOLERANCE,
              f"torchfit {r['loss']} vs PyTorch {l!r}")
    check(f"{case}: training lowers the loss", losses[-1] < losses[0], f"{losses}")

    # weights.safetensors: the module's state_dict, parameters and buffers.
    mine = {k: v.detach() for k, v in m.state_dict().items()}
    stored = load_file(os.path.join(run, "weights.safetensors"))
    require(set(stored) == set(mine), f"{case}: weights.safetensors names {sorted(stored)} vs state_dict {sorted(mine)}")
    worst = 0.0
    for name, want in mine.items():
        got = stored[name]
        check(f"{case} {name} dtype and shape", got.dtype == want.dtype and got.shape == want.shape,
              f"{got.dtype}{list(got.shape)} vs {want.dtype}{list(want.shape)}")
        if got.dtype != want.dtype or got.shape != want.shape:
            continue
        if not want.is_floating_point():
            check(f"{case} {name}", torch.equal(got, want), f"{got} vs {want}")
            continue
        scale = max(want.abs().max().item(), 1e-12)
        diff = (got - want).abs().max().item() / scale
        worst = max(worst, diff)
        check(f"{case} {name} within {TOLERANCE}", diff <= TOLERANCE, f"largest difference {diff:.2e} of {scale:.3g}")
    print(f"{case}: weights' largest difference {worst:.2e} of their tensor's largest magnitude")
    for name in spec_frozen(case, m):
        check(f"{case}: frozen {name} unchanged", torch.equal(stored[name], initial(folder)[name]), name)

    # model.pt carries the trained module as `net`; its logits are the module's eval-mode
    # outputs on the (unstandardised) table.
    exported = torch.jit.load(os.path.join(run, "model.pt"))
    x = torch.from_numpy(np.load(os.path.join(folder, "x.npy")))
    m.eval()
    with torch.no_grad():
        want, got = m(x), exported.logits(x)
    diff = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
    print(f"{case}: model.pt's logits vs PyTorch's eval-mode outputs: largest difference {diff:.2e}")
    check(f"{case}: model.pt logits", diff <= TOLERANCE, f"{diff:.2e}")
    check_predictions(case, exported, x, os.path.join(run, "predictions.csv"))
    check_summary(case, x, os.path.join(run, "model_summary.txt"))
    finish(f"{case}: ")


def check_summary(case, x, path):
    """model_summary.txt's layer rows against the eager module's: each top-level child's
    class, its output's shape as a forward hook sees it on a few rows (the batch dimension as
    Keras's None; no shape where the output is not a tensor, as an LSTM's tuple), and its
    parameters, frozen ones counted apart."""
    spec = CASES[case]
    m = spec["module"]().eval()
    shapes = {}
    for name, child in m.named_children():
        def hook(_, __, out, name=name):
            if isinstance(out, torch.Tensor):
                shapes[name] = "(" + ", ".join(["None"] + [str(d) for d in out.shape[1:]]) + ")"
        child.register_forward_hook(hook)
    with torch.no_grad():
        m(x[:3])
    want = []
    for name, child in m.named_children():
        params = [(f"{name}.{n}", p.numel()) for n, p in child.named_parameters()]
        frozen = sum(k for n, k in params if matches(n, spec.get("freeze", [])))
        total = sum(k for _, k in params)
        count = str(total) if frozen == 0 else f"{total} ({frozen} frozen)"
        want.append(f"{name} ({type(child).__name__})|{shapes.get(name, '?')}|{count}")
    with open(path) as f:
        lines = f.read().splitlines()
    start = lines.index(next(line for line in lines if line.strip().startswith("Layer (type)"))) + 1
    got = ["|".join(part.strip() for part in split_columns(line)) for line in lines[start:start + len(want)]]
    check(f"{case}: model_summary.txt's layers", got == want, f"{got} vs {want}")
    total = sum(p.numel() for p in m.parameters())
    check(f"{case}: model_summary.txt's total", any(line.startswith(f"Parameters: {total} (") for line in lines),
          f"{lines}")


def split_columns(line):
    """A table row's three columns, which are separated by two spaces or more."""
    import re
    return re.split(r"\s{2,}", line.strip())


def check_predictions(case, exported, x, path):
    """model.pt's forward in PyTorch gives `torchfit predict`'s answers: labels and their
    probabilities (--proba), or values, within 1e-6."""
    with open(path) as f:
        rows = list(csv.reader(f))
    body = rows[1:]
    with torch.no_grad():
        out = exported(x)
    if CASES[case]["task"] == "classification":
        extra = {"labels.json": ""}
        torch.jit.load(os.path.join(os.path.dirname(path), "model.pt"), _extra_files=extra)
        labels = json.loads(extra["labels.json"])
        check(f"{case}: labels as torchfit predict's", [labels[i] for i in out.tolist()] == [r[0] for r in body])
        with torch.no_grad():
            proba = exported.predict_proba(x)
        theirs = torch.tensor([[float(v) for v in r[1:]] for r in body])
    else:
        proba, theirs = out, torch.tensor([[float(v) for v in r] for r in body])
    diff = (proba.reshape(theirs.shape) - theirs).abs().max().item()
    check(f"{case}: model.pt's forward vs torchfit predict", diff <= 1e-6, f"largest difference {diff:.2e}")


def check_bf16(case, folder, run):
    """RUN trained with training.precision: bf16: its per-epoch losses are autocast's
    (within BF16_TOLERANCE), and further from the float32 loop's than that."""
    losses, _ = reference(case, folder, bf16=True)
    fp32, _ = reference(case, folder)
    with open(os.path.join(run, "metrics.csv")) as f:
        got = [float(r["loss"]) for r in csv.DictReader(f)]
    print(f"{case} bf16: torchfit {got}, torch.autocast {losses}, float32 {fp32}")
    for epoch, (g, w) in enumerate(zip(got, losses), 1):
        check(f"{case} bf16 epoch {epoch}", relative(g, w) <= BF16_TOLERANCE, f"torchfit {g} vs autocast {w}")
    check(f"{case}: bf16 is not float32", max(relative(a, b) for a, b in zip(losses, fp32)) > BF16_TOLERANCE / 10,
          f"autocast {losses} vs float32 {fp32}")
    finish(f"{case} bf16: ")


def spec_frozen(case, m):
    return [n for n, _ in m.named_parameters() if matches(n, CASES[case].get("freeze", []))]


def initial(folder):
    return {k: v.detach() for k, v in torch.jit.load(os.path.join(folder, "net.pt")).state_dict().items()}


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x, mask):
        return self.head(x * mask)


def bad(out):
    """The modules torchfit must refuse, each for the digits table (64 features, 10 classes):
    an eager torch.save file, a forward taking two tensors, 7 outputs, and a module whose
    head needs no gradient."""
    torch.manual_seed(3)
    torch.save(DigitsCnn().state_dict(), os.path.join(out, "eager.pt"))
    torch.jit.script(TwoInputs()).save(os.path.join(out, "two_inputs.pt"))
    torch.jit.script(DigitsCnn(classes=7)).save(os.path.join(out, "seven.pt"))
    m = DigitsCnn()
    m.head.weight.requires_grad_(False)
    torch.jit.script(m).save(os.path.join(out, "no_grad.pt"))
    loaded = dict(torch.jit.load(os.path.join(out, "no_grad.pt")).named_parameters())
    require(not loaded["head.weight"].requires_grad, "requires_grad=False survives torch.jit.save")
    prepare("cnn", out)


def main(args):
    if len(args) == 3 and args[0] == "prepare":
        prepare(args[1], args[2])
    elif len(args) >= 4 and args[0] == "check":
        check_run(*args[1:])
    elif len(args) == 4 and args[0] == "check_bf16":
        check_bf16(*args[1:])
    elif len(args) == 2 and args[0] == "bad":
        bad(args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
