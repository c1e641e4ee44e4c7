"""The user modules of bench's model section and their seeded data, shared by bench/run.py
(which scripts and saves them for `model: {kind: torchscript}`) and bench/reference_module.py
(the plain PyTorch loops they are measured against).

Both take rows of a 2-D float table, as torchfit hands a table to a user module, and reshape
them inside forward: 64 pixels -> [batch, 1, 8, 8], 80 numbers -> [batch, 20, 4].
"""
import numpy as np
import torch
from torch import nn

IMAGE_CLASSES = 10
STEPS, STEP_FEATURES = 20, 4


class DigitsCnn(nn.Module):
    """Conv2d, BatchNorm2d, ReLU, MaxPool2d twice, then Linear: a small CNN for 8x8 images."""

    def __init__(self, classes: int = IMAGE_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(32 * 2 * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1, 8, 8)
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))  # [batch, 16, 4, 4]
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))  # [batch, 32, 2, 2]
        return self.head(x.flatten(1))


class SequenceLstm(nn.Module):
    """One LSTM layer over [batch, steps, features], its last hidden state into Linear."""

    def __init__(self, steps: int = STEPS, features: int = STEP_FEATURES, hidden: int = 32):
        super().__init__()
        self.steps = steps
        self.features = features
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.reshape(-1, self.steps, self.features))
        return self.head(out[:, -1])


MODULES = {"cnn": DigitsCnn, "lstm": SequenceLstm}


def images(samples, seed=0):
    """8x8 one-channel images, flattened to 64 columns: each class is a fixed random smooth
    pattern, scaled by a random brightness, plus pixel noise. Labels are int64 0-9."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((IMAGE_CLASSES, 4, 4))
    templates = coarse.repeat(2, axis=1).repeat(2, axis=2).reshape(IMAGE_CLASSES, 64)
    y = rng.integers(0, IMAGE_CLASSES, samples)
    scale = rng.uniform(0.5, 1.5, (samples, 1))
    x = templates[y] * scale + 0.8 * rng.standard_normal((samples, 64))
    return x.astype(np.float32), y.astype(np.int64)


def sequences(samples, seed=1):
    """Sequences of STEPS steps of STEP_FEATURES normal numbers, flattened to 80 columns; the
    target is a decaying sum of feature 0 over the steps where feature 1 is positive."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, STEPS, STEP_FEATURES))
    decay = 0.8 ** np.arange(STEPS - 1, -1, -1)
    y = (x[:, :, 0] * (x[:, :, 1] > 0) * decay).sum(axis=1)
    return x.reshape(samples, STEPS * STEP_FEATURES).astype(np.float32), y.astype(np.float32)


DATA = {"cnn": images, "lstm": sequences}


def save(kind, folder, samples):
    """Writes x.npy, y.npy and the scripted module net.pt (seeded initial weights) of `kind`
    into `folder`; returns the three paths."""
    from pathlib import Path

    x, y = DATA[kind](samples)
    paths = [Path(folder, f"{kind}-{name}") for name in ("x.npy", "y.npy", "net.pt")]
    np.save(paths[0], x)
    np.save(paths[1], y)
    torch.manual_seed(0)
    torch.jit.script(MODULES[kind]()).save(str(paths[2]))
    return paths
