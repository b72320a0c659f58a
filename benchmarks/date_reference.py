"""PyTorch copy of the textbook's date recipe (AttentionSeq2seq), to judge our `date` runs.

The recipe of "Deep Learning from Scratch 2", ch. 8, written out in plain PyTorch
tensors, none of this library's model code: date.txt split 45,000 / 5,000 after the
book's `RandomState(1984)` shuffle, questions reversed, embedding 16, hidden 256,
textbook init (embeddings randn/100, weights randn/sqrt(fan_in), zero biases), an
LSTM encoder, an LSTM decoder starting from the encoder's last h (c = 0),
dot-product attention whose context joins h into Affine(2H, V), cross-entropy
averaged over every answer step, global-norm clip 5.0 and the book's Adam
(lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), eps 1e-7 outside the square root),
batch 128, data_size // 128 full batches an epoch. It prints the exact-match
accuracy (greedy decoding, whole answer) on 1,000 training lines after each
epoch and on the test split at the end.

    python benchmarks/date_reference.py --seed 0 --epochs 3
    python benchmarks/date_reference.py --seed 0 --epochs 3 --embedding-std 1 \
        --clip-percentile 10 --min-padding 1  # with the departures of our `date` recipe

Needs torch (the CPU wheel `torch==2.13.0`); the library itself never imports it.
Only the data loader comes from tinygrad_rnn.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from tinygrad_rnn.data import load_seq2seq

EMBED, HIDDEN, BATCH, LR, CLIP = 16, 256, 128, 1e-3, 5.0


def gates_step(a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step from the pre-activations a (N, 4H), the book's gate order f, g, i, o."""
    H = HIDDEN
    f, g, i, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
    c = torch.sigmoid(f) * c + torch.tanh(g) * torch.sigmoid(i)
    return torch.sigmoid(o) * torch.tanh(c), c


class BookAttentionSeq2seq:
    """The parameters and the two passes (teacher-forced, greedy) of the book's model."""

    def __init__(self, vocab: int, rng: np.random.Generator, embedding_std: float = 0.01):
        def randn(*shape: int, scale: float) -> torch.Tensor:
            values = rng.standard_normal(shape) * scale
            return torch.tensor(values, dtype=torch.float32, requires_grad=True)

        def zeros(size: int) -> torch.Tensor:
            return torch.zeros(size, requires_grad=True)

        E, H = EMBED, HIDDEN
        # Drawn in this order, the matrices before the biases: the order also fixes how the
        # gradient norm is summed, so a run repeats to the last bit.
        self.p = {
            "enc_embed": randn(vocab, E, scale=embedding_std),
            "enc_wx": randn(E, 4 * H, scale=1 / math.sqrt(E)),
            "enc_wh": randn(H, 4 * H, scale=1 / math.sqrt(H)),
            "dec_embed": randn(vocab, E, scale=embedding_std),
            "dec_wx": randn(E, 4 * H, scale=1 / math.sqrt(E)),
            "dec_wh": randn(H, 4 * H, scale=1 / math.sqrt(H)),
            "affine_w": randn(2 * H, vocab, scale=1 / math.sqrt(2 * H)),
            "enc_b": zeros(4 * H),
            "dec_b": zeros(4 * H),
            "affine_b": zeros(vocab),
        }

    def lstm(self, x: torch.Tensor, prefix: str, h: torch.Tensor) -> torch.Tensor:
        """(N, T, E) -> every step's h, (N, T, H); c starts at zero."""
        p = self.p
        projected = x @ p[f"{prefix}_wx"] + p[f"{prefix}_b"]
        c = torch.zeros_like(h)
        outputs = []
        for t in range(x.shape[1]):
            h, c = gates_step(projected[:, t] + h @ p[f"{prefix}_wh"], c)
            outputs.append(h)
        return torch.stack(outputs, 1)

    def encode(self, questions: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(len(questions), HIDDEN)
        return self.lstm(self.p["enc_embed"][questions], "enc", zeros)

    def logits(self, questions: torch.Tensor, answers_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (N, Tq), (N, T) ids -> (N, T, V)."""
        encoded = self.encode(questions)
        decoded = self.lstm(self.p["dec_embed"][answers_in], "dec", encoded[:, -1])
        weights = torch.softmax(decoded @ encoded.transpose(1, 2), -1)  # (N, T, Tq)
        context = weights @ encoded
        return torch.cat([context, decoded], 2) @ self.p["affine_w"] + self.p["affine_b"]

    @torch.no_grad()
    def exact_match(self, questions: np.ndarray, answers: np.ndarray) -> float:
        """Greedy decoding from each answer's start token; whole-answer exact match."""
        p, correct = self.p, 0
        for start in range(0, len(questions), 1000):
            q = torch.tensor(questions[start : start + 1000])
            a = answers[start : start + 1000]
            encoded = self.encode(q)
            h, c = encoded[:, -1], torch.zeros(len(q), HIDDEN)
            token, decoded = torch.tensor(a[:, 0]), []
            for _ in range(a.shape[1] - 1):
                pre = p["dec_embed"][token] @ p["dec_wx"] + p["dec_b"] + h @ p["dec_wh"]
                h, c = gates_step(pre, c)
                weights = torch.softmax((encoded @ h[:, :, None])[:, :, 0], -1)
                context = (weights[:, :, None] * encoded).sum(1)
                token = (torch.cat([context, h], 1) @ p["affine_w"] + p["affine_b"]).argmax(-1)
                decoded.append(token)
            correct += int((torch.stack(decoded, 1).numpy() == a[:, 1:]).all(1).sum())
        return correct / len(questions)


def book_split(
    path: str, min_padding: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The book's 90/10 split after RandomState(1984).shuffle, questions reversed."""
    sets = load_seq2seq(path, reverse_input=True, test_fraction=0.0, min_padding=min_padding)
    order = np.arange(len(sets.x_train))
    np.random.RandomState(1984).shuffle(order)
    cut = len(order) - len(order) // 10
    x, t = sets.x_train[order], sets.t_train[order]
    return x[:cut], t[:cut], x[cut:], t[cut:], len(sets.vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="date", help="date.txt, or 'date' (the data folder)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=None, help="stop early (smoke tests)")
    parser.add_argument("--json", help="write the per-epoch accuracies and losses here")
    parser.add_argument("--embedding-std", type=float, default=0.01,
                        help="the embeddings' scale: the book's 0.01, or 1.0 as our date recipe")
    parser.add_argument("--min-padding", type=int, default=0,
                        help="spaces after every question: the book's 0, or 1 as our date recipe")
    parser.add_argument("--clip-percentile", type=float, default=None,
                        help="also clip each step to this percentile of the gradient norms so "
                             "far (AutoClip; our date recipe: 10); the book: off")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    x_train, t_train, x_test, t_test, vocab = book_split(args.data, args.min_padding)
    model = BookAttentionSeq2seq(vocab, np.random.default_rng(args.seed), args.embedding_std)
    params = list(model.p.values())
    first_moment = [torch.zeros_like(p) for p in params]
    second_moment = [torch.zeros_like(p) for p in params]
    order_rng = np.random.default_rng(args.seed + 1)
    step, history, norms = 0, [], []
    for epoch in range(1, args.epochs + 1):
        started, losses = time.time(), []
        order = order_rng.permutation(len(x_train))
        for it in range(len(x_train) // BATCH):
            rows = order[it * BATCH : (it + 1) * BATCH]
            questions, answers = torch.tensor(x_train[rows]), torch.tensor(t_train[rows])
            logits = model.logits(questions, answers[:, :-1])
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, vocab), answers[:, 1:].reshape(-1)
            )
            for p in params:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                norm = math.sqrt(sum(float((p.grad**2).sum()) for p in params))
                bound = CLIP
                if args.clip_percentile is not None:
                    norms.append(norm)
                    bound = min(bound, float(np.percentile(norms, args.clip_percentile)))
                rate = bound / (norm + 1e-6)
                if rate < 1:
                    for p in params:
                        p.grad *= rate
                step += 1
                lr_t = LR * math.sqrt(1 - 0.999**step) / (1 - 0.9**step)
                for p, m, v in zip(params, first_moment, second_moment):
                    m += 0.1 * (p.grad - m)
                    v += 0.001 * (p.grad**2 - v)
                    p -= lr_t * m / (v.sqrt() + 1e-7)
            losses.append(float(loss.detach()))
            if args.max_steps is not None and step >= args.max_steps:
                break
        seen = model.exact_match(x_train[:1000], t_train[:1000])
        history.append({"epoch": epoch, "train1k_accuracy": seen, "losses": losses})
        print(
            f"seed {args.seed} epoch {epoch}: train1k {seen * 100:.2f}% "
            f"({time.time() - started:.0f} s)",
            flush=True,
        )
        if args.max_steps is not None and step >= args.max_steps:
            break
    test = model.exact_match(x_test, t_test)
    print(f"seed {args.seed}: test {test * 100:.2f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": args.seed, "test_accuracy": test, "history": history}, f)


if __name__ == "__main__":
    main()
