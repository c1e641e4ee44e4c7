"""The Optuna reference for the sweep benchmark: GridSampler over the PyTorch eager twin of a
torchfit trial (friedman1, 1,000 training rows and 250 validation rows, 10 features, an MLP of
two equal hidden layers, Adam at a constant rate, batch 32, 100 epochs, MSE, the validation
loss after every epoch), 4 learning rates x 4 widths, study.optimize(n_jobs=N).

Prints one JSON line: {"wall_seconds": ..., "trials": ..., "best_value": ..., "best_params": ...}.
"""
import argparse
import json
import math
import time

import optuna
import torch
from torch import nn

LRS = [0.0003, 0.001, 0.003, 0.01]
WIDTHS = [16, 32, 64, 128]


def friedman1(rows, features=10, noise=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, features, generator=g)
    y = (10 * torch.sin(math.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + 10 * x[:, 3] + 5 * x[:, 4]
         + noise * torch.randn(rows, generator=g))
    x = (x - x.mean(0)) / x.std(0)
    y = ((y - y.mean()) / y.std()).unsqueeze(1)
    return x[:1000], y[:1000], x[1000:], y[1000:]


def objective(trial, data, epochs, batch):
    lr = trial.suggest_categorical("lr", LRS)
    width = trial.suggest_categorical("width", WIDTHS)
    x, y, vx, vy = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)
    loss_fn = nn.MSELoss()
    val = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = loss_fn(model(vx), vy).item()
    return val


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    data = friedman1(1250)
    sampler = optuna.samplers.GridSampler({"lr": LRS, "width": WIDTHS}, seed=0)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    study.optimize(lambda t: objective(t, data, args.epochs, args.batch_size), n_trials=len(LRS) * len(WIDTHS), n_jobs=args.jobs)
    wall = time.perf_counter() - start
    print(json.dumps({"wall_seconds": wall, "trials": len(study.trials), "best_value": study.best_value,
                      "best_params": study.best_params}))


if __name__ == "__main__":
    main()
