"""Peak memory of calibration-statistics collection as the calibration data grows (must stay flat).

Each size runs in a fresh subprocess, so ``ru_maxrss`` (the process's peak resident set) measures
that size alone. The child builds a small word-LM-like model (embedding -> 2-layer LSTM -> decoder,
ModularLSTM by default so every gate op is hooked once per time step), runs one warm-up batch,
reads its peak RSS, collects statistics (both passes) over batches generated lazily from a seed,
and reads the peak RSS again. The difference is what collection added. Because transient peaks
vary a little from process to process, each child also notes its peak once pass 1 and the first
1x batches of pass 2 have run; what the peak gains after that point ("peak growth after 1x") is
what grew with the data, within one process. For scale, the table also shows what keeping the
observed activations (float64, as accumulated) would take.

Example:
    python benchmarks/stats_memory.py                       # 4, 16, 64 batches of [20, 8] tokens
    python benchmarks/stats_memory.py --base 2 --model plain
    python benchmarks/stats_memory.py --vocab 10000 --emb 256 --hidden 256 --seq 35 --batch 64 --base 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from compress.modules import ModularLSTM
from compress.stats import collect_stats

LAYERS = 2


class TinyLM(nn.Module):
    """Embedding -> LSTM -> decoder; ``modular`` swaps nn.LSTM for ModularLSTM (same weights)."""

    def __init__(self, modular: bool, vocab: int, emb: int, hidden: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.encoder = nn.Embedding(vocab, emb)
        rnn = nn.LSTM(emb, hidden, num_layers=LAYERS)
        self.decoder = nn.Linear(hidden, vocab)
        for p in [*self.parameters(), *rnn.parameters()]:
            nn.init.uniform_(p, -0.1, 0.1, generator=g)
        self.rnn = ModularLSTM.from_float(rnn) if modular else rnn

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.rnn(self.encoder(tokens))[0])


def token_batches(args: argparse.Namespace) -> Iterator[torch.Tensor]:
    """``args.batches`` seeded [seq, batch] token batches, generated one at a time (nothing kept)."""
    g = torch.Generator().manual_seed(1)
    for _ in range(args.batches):
        yield torch.randint(0, args.vocab, (args.seq, args.batch), generator=g)


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> dict[str, float]:
    """Measure one size in this process; returns the numbers as a dict."""
    torch.set_num_threads(1)
    model = TinyLM(args.model == "modular", args.vocab, args.emb, args.hidden).eval()
    with torch.no_grad():
        model(next(token_batches(args)))
    before, marks = peak_rss_mib(), []
    start = time.perf_counter()
    stats = collect_stats(model, lambda: token_batches(args), forward=_marking_forward(args, marks))
    seconds = time.perf_counter() - start
    forward_seconds = _plain_pass_seconds(model, args)
    observed = sum(rec["total_numel"] for e in stats.values() for rec in [*e.get("inputs", {}).values(), e["output"]])
    return {
        "batches": args.batches,
        "rss_before_mib": before,
        "rss_peak_mib": peak_rss_mib(),
        "added_mib": peak_rss_mib() - before,
        "growth_after_1x_mib": peak_rss_mib() - marks[0],
        "if_kept_mib": observed * 8 / 2**20,
        "seconds": seconds,
        "forward_seconds": forward_seconds,
    }


def _marking_forward(args: argparse.Namespace, marks: list[float]) -> Callable[[nn.Module, torch.Tensor], None]:
    # Peak RSS once all of pass 1 and the first 1x batches of pass 2 have run: anything the peak
    # gains after that point grew with the amount of data.
    calls = [0]

    def forward(model: nn.Module, batch: torch.Tensor) -> None:
        model(batch)
        calls[0] += 1
        if calls[0] == args.batches + args.base:
            marks.append(peak_rss_mib())

    return forward


def _plain_pass_seconds(model: nn.Module, args: argparse.Namespace) -> float:
    # One pass without hooks over the same batches: collection costs two of these plus the statistics.
    start = time.perf_counter()
    with torch.no_grad():
        for batch in token_batches(args):
            model(batch)
    return time.perf_counter() - start


def run_sizes(args: argparse.Namespace) -> list[dict[str, float]]:
    """Run the child once per size (1x, 4x, 16x the base) in fresh interpreters."""
    rows = []
    for factor in (1, 4, 16):
        cmd = [sys.executable, __file__, "--child", "--batches", str(args.base * factor)]
        for key in ("base", "model", "seq", "batch", "vocab", "emb", "hidden"):
            cmd += [f"--{key}", str(getattr(args, key))]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append({"factor": factor, **json.loads(out.strip().splitlines()[-1])})
    return rows


def table(rows: list[dict[str, float]], args: argparse.Namespace) -> str:
    """The results as a Markdown table."""
    lines = [
        f"model: {args.model} LSTM {args.emb}->{args.hidden} x{LAYERS}, vocab {args.vocab}; "
        f"batches of [{args.seq}, {args.batch}] tokens",
        "",
        "| data | batches | peak RSS before (MiB) | peak RSS after (MiB) | added (MiB) "
        "| peak growth after 1x (MiB) | activations if kept (MiB) | collection (s) | one plain pass (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['factor']}x | {r['batches']} | {r['rss_before_mib']:.1f} | {r['rss_peak_mib']:.1f} | "
            f"{r['added_mib']:.1f} | {r['growth_after_1x_mib']:.1f} | {r['if_kept_mib']:.1f} | "
            f"{r['seconds']:.2f} | {r['forward_seconds']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=4, help="batches at 1x (default 4)")
    parser.add_argument("--model", choices=("modular", "plain"), default="modular")
    parser.add_argument("--seq", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--emb", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batches", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
    else:
        print(table(run_sizes(args), args))


if __name__ == "__main__":
    main()
