"""Fused integer RNN loops alone: int8 ModularLSTM / ModularGRU stacks against fp32 nn.LSTM / nn.GRU.

A 2-layer stack (input = hidden = ``--hidden``), a [T, B] random sequence, calibrated on two other
random sequences with the ``int8_full`` settings (asymmetric_signed, per-channel weights, clip_acts
avg). Each round times fp32 PyTorch, the converted float modular stack and the int8 stack (fused
loop, C kernels when built) on the same input; ratios are taken inside a round and the medians over
rounds are printed. The int8 output is checked to equal the per-op emulation's (``integer_kernels: off``).

Run: ``python benchmarks/fused_rnn.py [--rounds 5] [--write]`` (``--write`` replaces the "## Fused RNN
loops" section of benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import torch  # noqa: E402
from torch import nn  # noqa: E402

import compress  # noqa: E402
from compress.quant.kernels import ckernels  # noqa: E402

SECTION = "## Fused RNN loops"
SETTINGS = {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg"}


class Stack(nn.Module):
    def __init__(self, cls: type[nn.Module], hidden: int) -> None:
        super().__init__()
        self.rnn = cls(hidden, hidden, num_layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def variants(cls: type[nn.Module], hidden: int, steps: int, batch: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    fp32 = Stack(cls, hidden).eval()
    modular, _ = compress.convert_rnns(copy.deepcopy(fp32))
    modular.eval()
    calibration = [torch.randn(steps, batch, hidden, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    stats = compress.collect_stats(modular, calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        int8 = compress.PostTrainLinearQuantizer(modular, stats, **SETTINGS).prepare_model().eval()
        emulated = compress.PostTrainLinearQuantizer(modular, stats, integer_kernels="off", **SETTINGS)
    return {"fp32 PyTorch": fp32, "compress fp32 modular": modular, "compress int8": int8, "_emulated": emulated}


def seconds(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        model(x)
    return time.perf_counter() - start


def measure(cls: type[nn.Module], hidden: int, steps: int, batch: int, rounds: int) -> list[str]:
    models = variants(cls, hidden, steps, batch)
    emulated = models.pop("_emulated").prepare_model().eval()
    x = torch.randn(steps, batch, hidden, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        same = torch.equal(models["compress int8"](x), emulated(x))
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        seconds(m, x)  # warm-up (tables, C kernels)
    for _ in range(rounds):
        for key, m in models.items():
            times[key].append(seconds(m, x))
    ref = times["fp32 PyTorch"]
    rows = [f"### {cls.__name__}, 2 × {hidden}, {steps} steps × batch {batch}", "",
            "| variant | ms (median) | × fp32 PyTorch |", "|---|---:|---:|"]  # fmt: skip
    for key, t in times.items():
        ratio = statistics.median(r / v for r, v in zip(ref, t, strict=True))
        rows.append(f"| {key} | {1e3 * statistics.median(t):.1f} | **{ratio:.2f}** |")
    return [*rows, "", f"int8 output equal to the per-op emulation (torch.equal): {same}.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from integer_path import machine, write_section

    lines = [SECTION, "", machine(), "",
             f"{args.threads} thread(s); C kernels: {'built' if ckernels.library() else 'not available'}; "
             f"medians of {args.rounds} interleaved rounds, ratios inside each round (> 1: faster).", ""]  # fmt: skip
    for cls in (nn.LSTM, nn.GRU):
        lines += measure(cls, args.hidden, args.steps, args.batch, args.rounds)
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    if args.write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
