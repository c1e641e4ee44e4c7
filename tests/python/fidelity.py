"""What the fidelity scripts (user_modules.py, builtin_models.py) share: the config values they
write, the per-sample losses their PyTorch loops take the mean of, and the relative difference
they compare torchfit with PyTorch by."""
from torch import nn


def yaml_value(v):
    """A config value in YAML flow style (strings quoted: globs hold `*`)."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(yaml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return str(v).lower()
    return repr(v)


def loss_per_sample(kind, out, y):
    """Each sample's loss (regression: the mean over targets), as torchfit's epoch loss counts
    them."""
    if kind == "cross_entropy":
        return nn.functional.cross_entropy(out, y, reduction="none")
    return nn.functional.mse_loss(out, y, reduction="none").mean(1)


def relative(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-12)
