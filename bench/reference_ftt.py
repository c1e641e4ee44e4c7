"""The plain PyTorch loop that bench's FT-Transformer section sets `torchfit train` with
`model: {kind: ft_transformer}` against: `rtdl_revisiting_models.FTTransformer` with
`get_default_kwargs()` (3 blocks, d_block 192, 8 heads) and its `make_default_optimizer()`
(AdamW, lr 1e-4, weight decay 1e-5, none on embeddings, norms and biases), on a seeded synthetic
regression table of numeric features, one epoch, timed in-process (the loop only).

    python3 bench/reference_ftt.py --samples 100000 --features 16 --batch-size 256 --threads 1

Prints one JSON line: {"train_seconds": ..., "final_loss": ..., "steps": ..., "samples": ...}.
The package is installed on first use into ~/.cache/torchfit/bench-tabular (bench/refpkgs.py).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refpkgs  # noqa: E402  (bench/refpkgs.py)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    refpkgs.ensure()
    import rtdl_revisiting_models as rtdl

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.samples
    x = torch.randn(n, args.features)
    y = x @ torch.randn(args.features) / args.features ** 0.5 + 0.1 * torch.randn(n)
    model = rtdl.FTTransformer(n_cont_features=args.features, cat_cardinalities=[], d_out=1,
                               **rtdl.FTTransformer.get_default_kwargs())
    model.train()
    opt = model.make_default_optimizer()
    steps = 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        total = torch.zeros(())
        for idx in torch.randperm(n).split(args.batch_size):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[idx], None).squeeze(-1), y[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
            steps += 1
        epoch_loss = (total / n).item()
    seconds = time.perf_counter() - start
    print(json.dumps({"train_seconds": seconds, "final_loss": epoch_loss, "steps": steps, "samples": n * args.epochs}))


if __name__ == "__main__":
    main()
