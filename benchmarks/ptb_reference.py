"""PyTorch reference for the `ptb` recipe's small config, trained the same way.

Same data and batch order (tinygrad_rnn.data's PTB loader and StatefulBatcher),
same textbook initialisation (embedding randn/100, weights randn/sqrt(fan_in),
zero biases), same optimisation (SGD lr 20, gradient-norm clip 0.25, lr / 4
when validation perplexity stops improving), same stateful truncated BPTT
(batch 20, time 35, state carried and detached), and the same test measure:
one stateful pass over the test corpus at batch 10 and time 35.

    python benchmarks/ptb_reference.py --epochs 4 --json runs/ptb-torch.json

Needs torch (the CPU wheel `torch==2.13.0`); the library itself never imports it.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn

from tinygrad_rnn.data import StatefulBatcher, load_ptb


class WordLM(nn.Module):
    def __init__(self, vocab: int, embed: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)
        with torch.no_grad():
            self.embedding.weight.normal_(0, 0.01, generator=generator)
            for name, p in self.named_parameters():
                if name.startswith("embedding"):
                    continue
                if p.ndim >= 2:
                    p.normal_(0, 1 / math.sqrt(p.shape[-1]), generator=generator)
                else:
                    p.zero_()

    def forward(self, ids, state):
        out, state = self.lstm(self.embedding(ids), state)
        return self.head(out), state


def evaluate(model: WordLM, data: np.ndarray, batch_size: int, time_size: int) -> float:
    """Perplexity of one stateful pass over `data`."""
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for x, t in StatefulBatcher(data, batch_size, time_size):
            logits, state = model(torch.from_numpy(x), state)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), torch.from_numpy(t).reshape(-1)
            )
            total += float(loss) * t.size
            count += t.size
    model.train()
    return math.exp(total / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data", default=None, help="folder of ptb.*.txt (default: $TINYGRAD_RNN_DATA/ptb)"
    )
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    corpus = load_ptb(args.data)
    V = len(corpus.vocab)
    model = WordLM(V, 100, 100, torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)
    batcher = StatefulBatcher(corpus.train, 20, 35)
    history, best, step = [], None, 0
    started = time.perf_counter()
    for epoch in range(args.epochs):
        state, tokens, t0 = None, 0, time.perf_counter()
        for x, t in batcher:
            logits, state = model(torch.from_numpy(x), state)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, V), torch.from_numpy(t).reshape(-1)
            )
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
            state = tuple(s.detach() for s in state)
            tokens += t.size
            step += 1
            if args.max_steps and step >= args.max_steps:
                break
        valid = evaluate(model, corpus.valid, 10, 35)
        if best is not None and valid >= best:
            for group in optimizer.param_groups:
                group["lr"] /= 4.0
        best = valid if best is None else min(best, valid)
        rate = tokens / (time.perf_counter() - t0)
        history.append({"epoch": epoch + 1, "valid_perplexity": valid, "tokens_per_s": rate})
        print(f"epoch {epoch + 1}: valid perplexity {valid:.2f}, {rate:,.0f} tokens/s", flush=True)
        if args.max_steps and step >= args.max_steps:
            break
    test = evaluate(model, corpus.test, 10, 35)
    result = {
        "test_perplexity": test,
        "history": history,
        "steps": step,
        "seconds": time.perf_counter() - started,
        "torch": torch.__version__,
        "threads": args.threads,
    }
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
