"""The plain PyTorch loop that bench's text section sets `torchfit train` with `model.text:
{encoder: bag}` against (issue 22's goal: samples/s >= 1.3x this loop), and the synthetic
table both sides train on.

    python3 bench/reference_text.py synth OUT.csv --rows 100000 [--targets OUT.npy]
        a seeded text classification table: `text` (5 to 30 words) and `label` (CLASSES
        classes, each with a few words of its own among common ones); --targets: the labels as
        class indices (int64), in the order of sorted label names
    python3 bench/reference_text.py train IDS.npy TARGETS.npy --tokenizer RUN/tokenizer.json \\
        --classes 4 [--columns 1 --d-embedding 64 --hidden 128 64 --batch-size 64 --epochs 3 --threads 1]
        IDS.npy: int64 [rows, columns * max_length], padded with the pad id (what `torchfit
        tokenize RUN FILE.csv --output IDS.npy` writes); vocabulary size and pad id from the
        tokenizer.json (or --vocab-size and --pad-id)

`train` is what a PyTorch user writes: per text column `nn.EmbeddingBag(vocab, d_embedding,
mode="mean", padding_idx=pad)` drawn U(-1/d, 1/d) as torchfit draws it, on the 2-D ids (the
mean over the tokens that are not padding),
the columns' means concatenated, then Linear/ReLU(/Dropout) per hidden layer and a Linear to
the classes; AdamW, cross-entropy (the mean over the batch), each epoch a new shuffle of all
rows in batches of --batch-size (the last one smaller, none dropped), --threads torch threads.
It prints one JSON line: {"samples_per_second": over all epochs, the loop only (not loading or
building), "epoch_seconds": [...], "final_loss": the last epoch's mean loss, "samples",
"parameters"}.

`train` needs torch (PYTHONPATH=~/.cache/torchfit/torch-*); `synth` only numpy.
"""
import argparse
import csv
import json
import sys
import time

import numpy as np

CLASSES = 4
# Word lengths and counts of the synthetic vocabulary: pseudo-words of 2 to 4 syllables, so
# that a BPE or WordPiece tokenizer finds subwords in them as in a real language.
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
COMMON_WORDS, CLASS_WORDS = 3000, 12


def vocabulary(seed):
    """(common words, per-class words): distinct pseudo-words drawn from the seed."""
    rng = np.random.default_rng(seed)
    words = set()
    while len(words) < COMMON_WORDS + CLASSES * CLASS_WORDS:
        words.add("".join(rng.choice(SYLLABLES, size=rng.integers(2, 5))))
    words = sorted(words)
    rng.shuffle(words)
    common, rest = words[:COMMON_WORDS], words[COMMON_WORDS:]
    return common, [rest[i * CLASS_WORDS:(i + 1) * CLASS_WORDS] for i in range(CLASSES)]


def synthetic_texts(rows, min_words, max_words, seed=0, class_word_rate=0.15):
    """rows texts of min_words to max_words words (common words Zipf-distributed, about one in
    1 / class_word_rate a word of the row's class) and their labels `c0`..`c3`; with a
    sentence's punctuation and capital now and then, so that normalisation has work to do."""
    rng = np.random.default_rng(seed)
    common, by_class = vocabulary(seed)
    zipf = 1.0 / np.arange(1, len(common) + 1)
    labels = rng.integers(0, CLASSES, size=rows)
    lengths = rng.integers(min_words, max_words + 1, size=rows)
    words = np.array(common, dtype=object)[rng.choice(len(common), size=lengths.sum(), p=zipf / zipf.sum())]
    own = rng.random(lengths.sum()) < class_word_rate
    row_of = np.repeat(np.arange(rows), lengths)
    picks = rng.integers(0, CLASS_WORDS, size=lengths.sum())
    words[own] = [by_class[labels[r]][p] for r, p in zip(row_of[own], picks[own])]
    sentence = rng.random(rows) < 0.3
    ends = np.cumsum(lengths)
    texts = []
    for start, end, as_sentence in zip(ends - lengths, ends, sentence):
        text = " ".join(words[start:end])
        texts.append(text[0].upper() + text[1:] + "." if as_sentence else text)
    return texts, [f"c{label}" for label in labels]


def write_synthetic(path, rows, seed=0, targets=None):
    """The synth table (text of 5 to 30 words, label) as CSV; targets: the labels as int64
    class indices (sorted label names) into that .npy."""
    texts, labels = synthetic_texts(rows, 5, 30, seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    if targets:
        index = {name: i for i, name in enumerate(sorted(set(labels)))}
        np.save(targets, np.array([index[label] for label in labels], dtype=np.int64))


def vocab_and_pad(tokenizer_json):
    """(vocabulary size, pad id) of a tokenizer.json: one more than its largest id (the model's
    vocabulary and the added tokens), and its padding's pad_id."""
    spec = json.loads(open(tokenizer_json).read())
    vocab = spec["model"]["vocab"]
    ids = list(vocab.values()) if isinstance(vocab, dict) else range(len(vocab))  # Unigram: a list
    size = max(list(ids) + [t["id"] for t in spec.get("added_tokens", [])]) + 1
    if not spec.get("padding"):
        sys.exit(f"bench/reference_text.py: {tokenizer_json} has no padding: give --pad-id")
    return size, spec["padding"]["pad_id"]


def bag_model(vocab_size, pad_id, columns, d_embedding, hidden, classes, dropout):
    import torch
    from torch import nn

    class BagClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.bags = nn.ModuleList(nn.EmbeddingBag(vocab_size, d_embedding, mode="mean", padding_idx=pad_id)
                                      for _ in range(columns))
            for bag in self.bags:  # torchfit's bag draws its table as fastText does: U(-1/d, 1/d)
                nn.init.uniform_(bag.weight, -1 / d_embedding, 1 / d_embedding)
                with torch.no_grad():
                    bag.weight[pad_id].zero_()
            layers, width = [], columns * d_embedding
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
                width = h
            self.body = nn.Sequential(*layers, nn.Linear(width, classes))

        def forward(self, ids):  # [batch, columns * max_length]
            chunks = ids.chunk(len(self.bags), dim=1)
            return self.body(torch.cat([bag(c) for bag, c in zip(self.bags, chunks)], dim=1))

    return BagClassifier()


def train(ids, targets, model, epochs, batch_size, lr, weight_decay, threads, seed=0):
    """The loop; returns its JSON line's fields."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x, y = torch.from_numpy(ids), torch.from_numpy(targets)
    n = len(x)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    epoch_seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        total = torch.zeros(())
        for idx in torch.randperm(n).split(batch_size):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        final_loss = (total / n).item()
        epoch_seconds.append(time.perf_counter() - start)
    return {"samples_per_second": n * epochs / sum(epoch_seconds), "epoch_seconds": epoch_seconds,
            "final_loss": final_loss, "samples": n * epochs,
            "parameters": sum(p.numel() for p in model.parameters())}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="write the synthetic text table")
    s.add_argument("output")
    s.add_argument("--rows", type=int, default=100_000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--targets", help="also write the labels as int64 class indices into this .npy")
    t = sub.add_parser("train", help="train the embedding-bag model in a plain PyTorch loop")
    t.add_argument("ids")
    t.add_argument("targets")
    t.add_argument("--tokenizer", help="tokenizer.json: the vocabulary size and pad id")
    t.add_argument("--vocab-size", type=int)
    t.add_argument("--pad-id", type=int)
    t.add_argument("--classes", type=int, required=True)
    t.add_argument("--columns", type=int, default=1, help="text columns the ids hold side by side")
    t.add_argument("--d-embedding", type=int, default=64)
    t.add_argument("--hidden", type=int, nargs="*", default=[128, 64])
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.command == "synth":
        return write_synthetic(args.output, args.rows, args.seed, args.targets)
    vocab_size, pad_id = vocab_and_pad(args.tokenizer) if args.tokenizer else (args.vocab_size, args.pad_id)
    vocab_size, pad_id = args.vocab_size or vocab_size, args.pad_id if args.pad_id is not None else pad_id
    if vocab_size is None or pad_id is None:
        sys.exit("bench/reference_text.py: give --tokenizer, or --vocab-size and --pad-id")
    ids, targets = np.load(args.ids), np.load(args.targets)
    if ids.dtype != np.int64 or ids.ndim != 2 or ids.shape[1] % args.columns:
        sys.exit(f"bench/reference_text.py: {args.ids} is {ids.dtype} {list(ids.shape)}; want int64 "
                 f"[rows, {args.columns} * max_length]")
    if len(targets) != len(ids):
        sys.exit(f"bench/reference_text.py: {len(ids)} rows of ids, {len(targets)} targets")
    model = bag_model(vocab_size, pad_id, args.columns, args.d_embedding, args.hidden, args.classes, args.dropout)
    result = train(ids, targets.astype(np.int64), model, args.epochs, args.batch_size, args.lr, args.weight_decay,
                   args.threads)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
