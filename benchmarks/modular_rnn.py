"""Forward time of ModularLSTM/ModularGRU against nn.LSTM/nn.GRU with the same weights.

CPU, eval mode, ``torch.no_grad()``. Two workloads: a whole sequence (default seq 200, batch 64,
hidden 256, 3 layers) and one time step per call (how Performance RNN runs its GRU). For each it
prints the median of several runs of the PyTorch module and of the modular copy, their ratio, and
the "matmul floor": the time of only the ``nn.Linear`` calls the modular layer makes, which shows
how much of the gap is GEMM and how much is element-wise ops and Python, and PyTorch's time with
its oneDNN kernels switched off.

Times are process CPU time by default: on a shared machine, wall time also measures the
neighbours. With one thread CPU time equals wall time on an idle machine.

Example:
    python benchmarks/modular_rnn.py
    python benchmarks/modular_rnn.py --repeats 9 --write-results   # also update benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from compress.fileio import atomic_write_text
from compress.modules import ModularGRU, ModularLSTM
from compress.quant.kernels import dispatch

SECTION = "## Modular RNN forward vs PyTorch"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PAIRS = {"LSTM": (nn.LSTM, ModularLSTM), "GRU": (nn.GRU, ModularGRU)}
NOTES = """\
Reading the table: *ratio* is modular / PyTorch; *matmul floor* is the time of only the `nn.Linear`
calls the modular layer makes (`fc_gate_x` once per layer on all time steps, `fc_gate_h` once per step),
so modular minus floor is the cost of the element-wise modules and the Python loop.

- The modular layers stay close to their matmul floor; the rest is mostly `tanh`, which in this
  build costs several times a `sigmoid` of the same size (op timings above).
- `nn.LSTM` on CPU runs oneDNN's fused LSTM, whose GEMM is faster than the MKL `sgemm` that every
  `nn.Linear` (hence `fc_gate_h`) uses on this CPU; that, not Python overhead, is most of the LSTM gap:
  with oneDNN switched off (column "oneDNN off") `nn.LSTM` is about as fast as the modular LSTM.
  `nn.GRU` does not take that path, so the GRU ratio is near 1. Routing `fc_gate_h` around its module
  would be faster but hooks and quantizer wrappers would no longer see it, so it is not done.
- The modular forward's outputs are a contract (statistics, reports and the quantizers are built on them), and
  a faster GEMM changes them: oneDNN's linear differs from `F.linear` (MKL) by up to 2.4e-6 on the GEMM above
  (measured on the Zen 4, 2026-12-02), and `torch.addmm` on a contiguous transposed weight gives the same bits
  but is not faster. With the GEMM and `tanh` fixed, what is left to remove is the Python loop, a few percent.
- `torch.jit.script` is not used: Python forward hooks (statistics) and wrapper modules swapped in by
  the quantizer need the eager modules.
- On a shared 2-core machine repeated invocations differ by up to ~30% (other jobs compete for cache
  and memory bandwidth even in CPU time); compare ratios from one invocation, not absolute ms.
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared machine)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-results", action="store_true", help=f"replace '{SECTION}' in {RESULTS.name}")
    return parser.parse_args()


def median_ms(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.process_time) -> float:
    """Median time of ``fn()`` in milliseconds over ``repeats`` runs, after one untimed warm-up run.

    Example:
        >>> median_ms(lambda: sum(range(10)), 3) >= 0
        True
    """
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1e3


def matmul_floor(modular: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """A function making exactly the ``nn.Linear`` calls ``modular(x)`` makes, and nothing else.

    Example:
        >>> floor = matmul_floor(ModularGRU(4, 8, num_layers=2), torch.randn(5, 2, 4))
        >>> floor()
    """
    steps, batch = x.shape[:2]
    width = modular.hidden_size * modular.num_directions
    inputs = [x.reshape(steps * batch, -1)] + [x.new_zeros(steps * batch, width)] * (modular.num_layers - 1)
    h = x.new_zeros(batch, modular.hidden_size)

    def run() -> None:
        for cells in modular.directions():
            for cell, layer_input in zip(cells, inputs, strict=True):
                cell.fc_gate_x(layer_input)
                for _ in range(steps):
                    cell.fc_gate_h(h)

    return run


def measure(kind: str, x: torch.Tensor, args: argparse.Namespace, calls: int) -> dict[str, float]:
    """Medians (ms per ``calls`` forward calls) of PyTorch, modular and the matmul floor, and the max error.

    Example:
        >>> ns = argparse.Namespace(hidden=8, layers=2, repeats=1, clock="cpu")
        >>> measure("GRU", torch.randn(3, 2, 8), ns, calls=1)["err"] < 1e-5
        True
    """
    float_cls, modular_cls = PAIRS[kind]
    ref = float_cls(args.hidden, args.hidden, num_layers=args.layers).eval()
    modular = modular_cls.from_float(ref).eval()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    floor = matmul_floor(modular, x)

    def repeat(fn: Callable[..., object]) -> Callable[[], None]:
        return lambda: [fn() for _ in range(calls)]

    with torch.no_grad():
        err = (modular(x)[0] - ref(x)[0]).abs().max().item()
        row = {name: median_ms(repeat(fn), args.repeats, clock) for name, fn in
               (("pytorch", lambda: ref(x)), ("modular", lambda: modular(x)), ("floor", floor))}  # fmt: skip
        with onednn_disabled():
            row["pytorch_no_onednn"] = median_ms(repeat(lambda: ref(x)), args.repeats, clock)
    return {**row, "ratio": row["modular"] / row["pytorch"], "err": err}


@contextlib.contextmanager
def onednn_disabled() -> Iterator[None]:
    """Turn off PyTorch's oneDNN (MKL-DNN) kernels, e.g. its fused CPU LSTM, inside the block.

    Example:
        >>> with onednn_disabled():
        ...     torch.backends.mkldnn.enabled
        False
    """
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def machine() -> str:
    """One line: CPU model, core count, OS, Python, torch version and threads.

    Example:
        >>> "torch" in machine()
        True
    """
    info = dispatch.cpu_info()  # the model name, family/model numbers and ISA flags, as every benchmark writes them
    cpu = ", ".join(p for p in (info["model"], info["family"], " ".join(info["flags"])) if p)
    return (
        f"{cpu}, {os.cpu_count()} cores (shared), {platform.system()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    lines = [
        "| workload | PyTorch ms | modular ms | ratio | matmul floor ms | PyTorch, oneDNN off ms | max abs err |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['pytorch']:.1f} | {r['modular']:.1f} | **{r['ratio']:.2f}** | {r['floor']:.1f} "
            f"| {r['pytorch_no_onednn']:.1f} | {r['err']:.1e} |"
        )
    return "\n".join(lines)


def op_timings(batch: int, hidden: int, repeats: int) -> str:
    """One line of per-call op costs behind the notes: the step GEMM (MKL vs oneDNN), tanh, sigmoid.

    Example:
        >>> "tanh" in op_timings(2, 4, 1)
        True
    """
    h, w, b = torch.randn(batch, hidden), torch.randn(4 * hidden, hidden), torch.randn(4 * hidden)
    ops = {"`F.linear` (MKL)": lambda: torch.nn.functional.linear(h, w, b)}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):  # private op; only a yardstick here
        ops["oneDNN linear"] = lambda: torch.ops.mkldnn._linear_pointwise(h, w, b, "none", [], "")
    ops.update({"tanh": lambda: torch.tanh(h), "sigmoid": lambda: torch.sigmoid(h)})
    with torch.no_grad():
        costs = {name: median_ms(lambda fn=fn: [fn() for _ in range(100)], repeats) * 10 for name, fn in ops.items()}
    shape = f"[{batch}, {hidden}] x [{hidden}, {4 * hidden}]"
    return f"Op timings (µs per call; GEMM {shape}, activations [{batch}, {hidden}]): " + ", ".join(
        f"{name} {us:.0f}" for name, us in costs.items()
    )


def write_section(body: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, leaving the other sections alone."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("" if end < 0 else text[end:])
    atomic_write_text(RESULTS, text.rstrip("\n") + "\n")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    seq = torch.randn(args.seq, args.batch, args.hidden)
    one = torch.randn(1, args.batch, args.hidden)
    rows = []
    for kind in PAIRS:
        rows.append((f"{kind}, seq {args.seq}", measure(kind, seq, args, calls=1)))
        rows.append((f"{kind}, {args.seq} calls of 1 step", measure(kind, one, args, calls=args.seq)))
    header = (
        f"batch {args.batch}, input = hidden = {args.hidden}, {args.layers} layers, unidirectional, eval, "
        f"`torch.no_grad()`, median of {args.repeats} runs, {args.clock} time"
    )
    ops = op_timings(args.batch, args.hidden, args.repeats)
    print(machine())
    print(header)
    print(table(rows))
    print(ops)
    if args.write_results:
        today = datetime.date.today().isoformat()
        write_section(f"{SECTION}\n\n{today}: {machine()}.\n\n{header}.\n\n{table(rows)}\n\n{ops}.\n\n{NOTES}")


if __name__ == "__main__":
    main()
