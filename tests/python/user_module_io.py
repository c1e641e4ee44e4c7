"""User modules for tests/user_module_io.rs, and PyTorch's view of what torchfit made of them.

usage: user_module_io.py make DIR
           writes DIR/table_net.pt (5 features -> 1), DIR/penguin_net.pt (4 features -> 3
           classes), DIR/cnn_net.pt ([1, 8, 8] images -> 3 classes), DIR/token_net.pt (int64
           token ids [6] -> 1 value), and the arrays DIR/images_x.npy, images_y.npy,
           tokens_x.npy, tokens_y.npy; each module has an extra method `embed`.
       user_module_io.py check RUN_DIR INPUT.npy PREDICTIONS.csv [RUN_DIR INPUT.npy PREDICTIONS.csv ...]
           for each run: model.pt loads with torch.jit.load, its forward on INPUT equals
           `torchfit predict`'s CSV, `m.net` is the trained module (weights.safetensors is its
           state_dict, buffers included) and `m.net.embed` is callable. Prints 'N passed, 0 failed'.
"""
import csv
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from checks import check, finish, require


class TableNet(nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(inputs, 16), nn.LayerNorm(16), nn.ReLU())
        self.head = nn.Linear(16, outputs)

    def forward(self, x):
        return self.head(self.body(x))

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.embed(x))

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.norm(self.conv(x))), 2)
        return x.flatten(1)


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.embed(x))

    @torch.jit.export
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x).mean(1)


def make(out):
    torch.manual_seed(0)
    torch.jit.script(TableNet(5, 1)).save(f"{out}/table_net.pt")
    torch.jit.script(TableNet(4, 3)).save(f"{out}/penguin_net.pt")
    torch.jit.script(Cnn()).save(f"{out}/cnn_net.pt")
    torch.jit.script(TokenNet()).save(f"{out}/token_net.pt")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(120, 1, 8, 8)).astype(np.float32)
    labels = (images[:, 0, :4].mean((1, 2)) > 0).astype(np.int64) + (images[:, 0, 4:].mean((1, 2)) > 0)
    np.save(f"{out}/images_x.npy", images)
    np.save(f"{out}/images_y.npy", labels.astype(np.int64))
    tokens = rng.integers(0, 10, size=(150, 6)).astype(np.int64)
    np.save(f"{out}/tokens_x.npy", tokens)
    np.save(f"{out}/tokens_y.npy", tokens.mean(1, keepdims=True).astype(np.float32))


def predictions(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def check_run(run, x_path, csv_path):
    name = os.path.basename(run)
    m = torch.jit.load(f"{run}/model.pt")
    m.eval()
    x = torch.from_numpy(np.load(x_path))
    with torch.no_grad():
        got = m(x)
    header, rows = predictions(csv_path)
    if header[0] == "label":
        labels = json.loads(open_extra(run, "labels.json"))
        want = [labels.index(r[0]) for r in rows]
        check(f"{name}: forward = torchfit predict", got.tolist() == want, f"{got.tolist()[:8]} vs {want[:8]}")
        if len(header) > 1:
            p = torch.tensor([[float(v) for v in r[1:]] for r in rows])
            diff = (m.predict_proba(x) - p).abs().max().item()
            check(f"{name}: predict_proba = torchfit predict --proba", diff < 1e-6, diff)
    else:
        want = torch.tensor([[float(v) for v in r] for r in rows])
        diff = (got.reshape(want.shape) - want).abs().max().item()
        check(f"{name}: forward = torchfit predict", diff <= 1e-5 * (1 + want.abs().max().item()), diff)
    require(hasattr(m, "net"), f"{name}: model.pt has no child `net`")
    state = m.net.state_dict()
    saved = load_file(f"{run}/weights.safetensors")
    check(f"{name}: weights.safetensors = net's state_dict", sorted(saved) == sorted(state),
          f"{sorted(saved)} vs {sorted(state)}")
    for key, value in saved.items():
        if key in state:
            check(f"{name}: {key}", torch.equal(state[key], value), "differs")
    # The user's own method, still there (on the raw input, which has the module's shape).
    try:
        with torch.no_grad():
            embedded = m.net.embed(x if x.dtype == torch.int64 else x.float())
        check(f"{name}: net.embed callable", embedded.shape[0] == x.shape[0], embedded.shape)
    except Exception as e:  # a type or shape mismatch in the user's method
        check(f"{name}: net.embed callable", False, str(e).splitlines()[0])


def open_extra(run, name):
    files = {name: ""}
    torch.jit.load(f"{run}/model.pt", _extra_files=files)
    return files[name]


def main():
    if sys.argv[1] == "make":
        make(sys.argv[2])
        return
    args = sys.argv[2:]
    for i in range(0, len(args), 3):
        check_run(*args[i:i + 3])
    finish()


if __name__ == "__main__":
    main()
