"""Train a Performance RNN on the Bach chorales for a fixed number of steps (not wall time).

The shipped checkpoint and the tiny test fixture are both made by this script; their
model cards (``compress/checkpoints/perf_rnn_lstm.md``) record the exact commands.
Training follows the reference recipe: Adam (lr 1e-3), gradient-norm clipping at 1.0,
random windows (stride 10) of the train split, a fresh z ~ N(0, I) per batch, controls
fed with probability ``--control-ratio``, mean cross-entropy over every event.

Example:
    python examples/train_perf_rnn.py --steps 400 --hidden-dim 256 --num-layers 2 \\
        --out compress/checkpoints/perf_rnn_lstm.pt --metrics compress/checkpoints/perf_rnn_lstm.json
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from compress.data.chorales import bach_chorales
from compress.data.windows import WindowedEvents, make_batch
from compress.fileio import atomic_write_json
from compress.models.performance_rnn import PerformanceRNN, save_checkpoint

TRAIN_STRIDE = 10  # window starts every 10 events, as in the reference training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, required=True, help="optimizer steps")
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    p.add_argument("--control-ratio", type=float, default=1.0, help="probability a batch gets controls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--max-files", type=int, default=None, help="first N chorales only (tiny runs)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--eval-window", type=int, default=200, help="evaluation window (the dataset default)")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--out", required=True, help="checkpoint path (.pt)")
    p.add_argument("--metrics", default=None, help="also write the recorded metrics as JSON here")
    return p.parse_args(argv)


def evaluate(model: PerformanceRNN, data: WindowedEvents) -> dict[str, float]:
    """Mean NLL (nats/event) per group over the evaluation split, plus perplexity and timing."""
    model.eval()
    sums: dict[str, list[float]] = {}
    start = time.perf_counter()
    for batch in data.batches("evaluation"):
        groups, _ = model.score_batch(batch)
        for name, (nll, count) in groups.items():
            acc = sums.setdefault(name, [0.0, 0])
            acc[0] += nll
            acc[1] += count
    out = {f"nll_{k}" if k != "all" else "nll": s / c for k, (s, c) in sums.items()}
    out["perplexity"] = math.exp(out["nll"])
    out["events"] = int(sums["all"][1])
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


def training_windows(data: WindowedEvents, window: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every window of the train split starting at a multiple of the stride."""
    windows = []
    for events, density, hist in data.streams("train"):
        for s in range(0, len(events) - window + 1, TRAIN_STRIDE):
            windows.append((events[s : s + window], density[s : s + window], hist[s : s + window]))
    return windows


def train(model: PerformanceRNN, windows: list, args: argparse.Namespace) -> list[dict[str, float]]:
    """Run ``args.steps`` Adam steps on random windows; returns the logged losses."""
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    log, start = [], time.perf_counter()
    model.train()
    for step in range(1, args.steps + 1):
        chosen = [windows[k] for k in rng.choice(len(windows), size=args.batch_size, replace=False)]
        z = torch.randn(args.batch_size, model.init_dim, generator=gen)
        with_controls = bool(rng.random() < args.control_ratio)
        events, controls, z = make_batch(chosen, z, with_controls)
        logits, _ = model.forward_batch((events, controls, z))
        loss = F.cross_entropy(logits.reshape(-1, model.event_dim), events.reshape(-1))
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        if step % args.log_every == 0 or step == args.steps:
            elapsed = time.perf_counter() - start
            log.append({"step": step, "loss": round(loss.item(), 4), "grad_norm": round(float(norm), 3), "s": elapsed})
            print(f"step {step:5d}  loss {loss.item():.4f}  |g| {float(norm):.2f}  {elapsed:7.1f}s", flush=True)
        opt.step()
    return log


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # parameter init
    common = {"max_files": args.max_files, "window": args.eval_window, "batch_size": args.eval_batch_size, "seed": 0}
    t0 = time.perf_counter()
    valid = bach_chorales(**common, evaluation_split="validation")
    test = bach_chorales(**common, evaluation_split="test")
    corpus_s = time.perf_counter() - t0
    print(valid.describe(), flush=True)
    model = PerformanceRNN(hidden_dim=args.hidden_dim, num_layers=args.num_layers, cell=args.cell, dropout=args.dropout)
    untrained = {"validation": evaluate(model, valid), "test": evaluate(model, test)}
    print("untrained", untrained, flush=True)
    windows = training_windows(valid, args.window)
    t1 = time.perf_counter()
    log = train(model, windows, args)
    train_s = time.perf_counter() - t1
    metrics = {"validation": evaluate(model, valid), "test": evaluate(model, test)}
    print("trained", metrics, flush=True)
    card = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "data": valid.describe(),
        "train_windows": len(windows),
        "args": vars(args),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_seconds": round(corpus_s, 1),
        "train_seconds": round(train_s, 1),
        "metrics_fp32": metrics,
        "metrics_untrained": untrained,
        "evaluation": f"bach_chorales window={args.eval_window} batch_size={args.eval_batch_size} seed=0 controls=on",
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "final_train_loss": log[-1]["loss"] if log else None,
    }
    save_checkpoint(model.eval(), args.out, card)
    if args.metrics:
        atomic_write_json(args.metrics, {k: v for k, v in card.items() if k != "args"} | {"log": log})
    return card


if __name__ == "__main__":
    main()
