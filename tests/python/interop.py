"""PyTorch's view of torchfit's exports, run by tests/python_interop.rs.

usage: interop.py RUN_DIR INPUT.npy PREDICTIONS.csv [RUN_DIR INPUT.npy PREDICTIONS.csv ...]

For each run: model.pt loads with torch.jit.load, has the `training` flag of a scripted
module (so eval() works, and it saves and loads again), matches `torchfit predict` on the
same input, carries its config and feature names (and labels) as extra files, exposes the
weights as trainable parameters under torch.nn.Sequential's names, loads into a plain
nn.Sequential, fine-tunes, and weights.safetensors holds the same tensors; the run's
config.yaml loads with PyYAML with its numbers as numbers. Prints 'N passed, 0 failed'.
"""
import csv
import json
import os
import re
import sys
import tempfile

import numpy as np
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from checks import finish, require

ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "silu": nn.SiLU, "linear": nn.Identity,
}
def config_value(config, key):
    """The first `key: value` line of the resolved config (no YAML library needed)."""
    for line in config.splitlines():
        stripped = line.strip()
        if stripped.startswith(key + ":"):
            return stripped.split(":", 1)[1].strip()
    raise KeyError(key)


# What a YAML number looks like; a string of this shape in a loaded config is a number that
# the writer spelled so that YAML 1.1 (PyYAML) reads it as text, such as `1e-7` (1.1 wants
# `1.0e-7`).
NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def strings_that_are_numbers(node, path=""):
    """(dotted key, value) for every string in a loaded YAML tree that spells a number."""
    if isinstance(node, dict):
        return [hit for k, v in node.items() for hit in strings_that_are_numbers(v, f"{path}{k}.")]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in strings_that_are_numbers(v, f"{path}{i}.")]
    return [(path.rstrip("."), node)] if isinstance(node, str) and NUMBER.fullmatch(node) else []


def check_config_yaml(run):
    """The run's config.yaml is YAML that Python reads as written: floats are floats."""
    with open(f"{run}/config.yaml") as f:
        config = yaml.safe_load(f)
    optimizer = config["training"]["optimizer"]
    for key in ("lr", "eps", "beta1", "beta2", "weight_decay"):
        value = optimizer[key]
        require(type(value) is float, f"{run}: config.yaml training.optimizer.{key} is a float in PyYAML, got {value!r}")
    misread = strings_that_are_numbers(config)
    require(misread == [], f"{run}: config.yaml numbers that PyYAML reads as strings: {misread}")


def check_training_flag(run, m, x):
    """model.pt has the bool `training` of a scripted module, eval() works and changes no
    output, and the module saves and loads again."""
    require(type(m.training) is bool and m.training, f"{run}: model.pt has training, True when loaded: {m.training!r}")
    with torch.no_grad():
        before = m(x)
    m.eval()
    require(not m.training and not any(c.training for c in m.modules()), f"{run}: eval() clears training everywhere")
    with torch.no_grad():
        require(torch.equal(m(x), before), f"{run}: eval() changes no output")
    with tempfile.TemporaryDirectory() as tmp:
        torch.jit.save(m, os.path.join(tmp, "again.pt"))
        again = torch.jit.load(os.path.join(tmp, "again.pt"))
    require(again.training is False, f"{run}: training survives a save and load")
    with torch.no_grad():
        require(torch.equal(again(x), before), f"{run}: the saved module computes the same")
    m.train()
    require(m.training, f"{run}: train() sets training again")


def check_run(run, input_path, predictions_path):
    extra = {"config.yaml": "", "features.json": "", "labels.json": ""}
    m = torch.jit.load(f"{run}/model.pt", _extra_files=extra)
    config = extra["config.yaml"].decode()
    features = json.loads(extra["features.json"])
    labels = json.loads(extra["labels.json"]) if extra["labels.json"] else None
    require(config_value(config, "name") != "", f"{run}: extra/config.yaml holds the resolved config")

    x = torch.from_numpy(np.load(input_path)).float()
    require(x.shape[1] == len(features), f"{run}: features.json names every input column")
    check_training_flag(run, m, x)
    check_config_yaml(run)

    # Parameters: trainable, named and shaped as nn.Sequential's.
    params = dict(m.named_parameters())
    names = sorted(params, key=lambda n: (int(n.split(".")[0]), n.split(".")[1] != "weight"))
    linear_ids = sorted({int(n.split(".")[0]) for n in names})
    require(linear_ids == list(range(0, 2 * len(linear_ids), 2)), f"{run}: layers at even indices: {names}")
    require(all(p.requires_grad for p in params.values()), f"{run}: parameters require grad")
    require(params["0.weight"].shape[1] == len(features), f"{run}: 0.weight is [out, in]")
    buffers = dict(m.named_buffers())
    require({"input_mean", "input_std"} <= set(buffers), f"{run}: standardisation buffers: {list(buffers)}")
    state = m.state_dict()
    require(set(names) <= set(state), f"{run}: state_dict holds the parameters")

    # Same outputs as `torchfit predict` on the same input.
    with open(predictions_path) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    with torch.no_grad():
        out = m(x)
    if labels is None:
        theirs = torch.tensor([[float(v) for v in r] for r in body])
        diff = (out.reshape(theirs.shape) - theirs).abs().max().item()
        require(diff <= 1e-6, f"{run}: model.pt vs torchfit predict: max abs diff {diff}")
    else:
        predicted = [labels[i] for i in out.tolist()]
        require(predicted == [r[0] for r in body], f"{run}: labels match torchfit predict")
        with torch.no_grad():
            proba = m.predict_proba(x)
        require(torch.allclose(proba.sum(1), torch.ones(len(x)), atol=1e-5), f"{run}: probabilities sum to 1")
        require(torch.equal(proba.argmax(1), out), f"{run}: the label is the most probable class")
        theirs = torch.tensor([[float(v) for v in r[1:]] for r in body])
        require((proba - theirs).abs().max().item() <= 1e-6, f"{run}: predict_proba vs torchfit predict --proba")

    # A plain nn.Sequential takes the state_dict; with the buffers applied by hand it
    # computes what model.pt's logits do.
    activation = ACTIVATIONS[config_value(config, "activation")]
    layers = []
    for i, idx in enumerate(linear_ids):
        w = params[f"{idx}.weight"]
        layers.append(nn.Linear(w.shape[1], w.shape[0]))
        if i < len(linear_ids) - 1:
            layers.append(activation())
    seq = nn.Sequential(*layers)
    result = seq.load_state_dict(state, strict=False)
    require(result.missing_keys == [], f"{run}: nothing missing: {result.missing_keys}")
    require(set(result.unexpected_keys) <= set(buffers), f"{run}: only buffers left over: {result.unexpected_keys}")
    with torch.no_grad():
        filled = torch.where(torch.isnan(x), buffers["input_fill"], x) if "input_fill" in buffers else x
        mine = seq((filled - buffers["input_mean"]) / buffers["input_std"])
        require(torch.allclose(mine, m.logits(x), atol=1e-5), f"{run}: nn.Sequential matches model.pt")

    # weights.safetensors holds the same tensors.
    stored = load_file(f"{run}/weights.safetensors")
    require(set(stored) == set(params), f"{run}: safetensors names")
    require(all(torch.equal(stored[n], params[n].detach()) for n in params), f"{run}: safetensors values")

    # Fine-tuning the loaded module itself: one optimizer step moves the weights.
    before = params["0.weight"].detach().clone()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    loss = m.logits(x).pow(2).mean()
    loss.backward()
    opt.step()
    require(not torch.equal(before, dict(m.named_parameters())["0.weight"].detach()), f"{run}: a step changed 0.weight")

    if torch.cuda.is_available():
        with torch.no_grad():
            on_gpu = m.to("cuda")(x.cuda()).cpu()
        require(on_gpu.shape[0] == len(x), f"{run}: runs on CUDA")


def main(args):
    if len(args) == 0 or len(args) % 3 != 0:
        sys.exit(__doc__)
    for i in range(0, len(args), 3):
        check_run(*args[i:i + 3])
    finish("interop: ")


if __name__ == "__main__":
    main(sys.argv[1:])
