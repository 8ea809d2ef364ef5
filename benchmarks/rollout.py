"""Long generations: the rollout metrics of the seed study on both Performance RNNs, and batch-1 step time.

For ``schedules/perf_rnn.yaml`` (LSTM) and ``schedules/perf_rnn_gru.yaml`` (GRU), the schedule runs as
shipped except that its evaluator is ``rollout`` (``--sequences`` x ``--steps``, default 16 x 1000, seed 0)
and nothing is rendered. The ``int8_full`` artifact it exports is then timed generating one sequence
(batch 1, ``--gen-steps`` events) against PyTorch's ``quantize_dynamic`` int8 (LSTM/GRU + Linear) and the
fp32 ``nn.LSTM``/``nn.GRU`` model, with the same sampling loop (compress/models/autoregressive.py),
interleaved over ``--rounds`` rounds, median ms per step.

Run: ``python benchmarks/rollout.py [--write]`` (``--write`` replaces the two sections of RESULTS.md);
``--steps-only`` exports the artifact from the ``int8_full`` experiment alone and measures only the step times;
``--quick`` runs the tiny test schedules with 4 x 60 steps (a smoke run, not a measurement).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import compress.components  # noqa: E402,F401
from benchmarks.benchutil import ROOT, interleaved, md_table, median, today, write_sections  # noqa: E402
from compress import engine  # noqa: E402
from compress.models.autoregressive import sample  # noqa: E402
from compress.quant import load_quantized  # noqa: E402
from compress.quant.kernels.dispatch import cpu_class, cpu_info  # noqa: E402
from compress.registry import MODELS  # noqa: E402
from compress.schedule import load_schedule  # noqa: E402

ROLLOUT_SECTION = "## Rollout error over long generations"
STEP_SECTION = "## Generation step time (batch 1)"
STUDIES = {"LSTM": "schedules/perf_rnn.yaml", "GRU": "schedules/perf_rnn_gru.yaml"}
QUICK = {"LSTM": "tests/schedules_tiny/perf_rnn_tiny.yaml", "GRU": "tests/schedules_tiny/perf_rnn_gru_tiny.yaml"}
COLUMNS = [
    ("rollout", "mean KL", 5),
    ("rollout_kl_first", "KL first window", 5),
    ("rollout_kl_last", "KL last window", 5),
    ("rollout_hidden_err", "hidden rel. err", 4),
    ("rollout_hidden_err_last", "hidden err last window", 4),
    ("rollout_first_diff", "median first diff", 0),
    ("rollout_never_diverged", "never diverged", 2),
    ("rollout_pitch_tv", "pitch-class TV", 3),
]


def run_study(path: str, args: argparse.Namespace, out: Path) -> list[Any]:
    """The schedule's experiments with the rollout evaluator; returns the ExperimentResults."""
    schedule = load_schedule(ROOT / path)
    if args.steps_only:  # only the exported artifact is needed: its experiment alone, evaluated as shipped
        schedule.data["experiments"] = [e for e in schedule.data["experiments"] if e["name"] == "int8_full"]
        return engine.run(schedule, out_dir=out, progress=False).experiments
    window = min(100, args.steps // 2)
    rollout = {"sequences": args.sequences, "steps": args.steps, "seed": 0, "window": window}
    schedule.data["evaluate"] = {"name": "rollout", "args": rollout}
    schedule.data.pop("render", None)
    return engine.run(schedule, out_dir=out, progress=False).experiments


def rollout_rows(core: str, experiments: list[Any]) -> list[list[Any]]:
    rows = []
    for e in experiments:
        cells = [core, f"`{e.name}`"]
        for key, _, digits in COLUMNS:
            value = e.metrics.get(key, float("nan"))
            cells.append(f"{value:.{digits}f}" if digits else f"{value:.0f}")
        rows.append(cells)
    return rows


def least_drift(experiments: list[Any], eight_bit: bool) -> Any:
    """The experiment whose KL over the last window is smallest: of the non-float ones, or of the 8-bit ones."""
    quantized = [e for e in experiments if e.settings.get("quantizer") is not None]
    if eight_bit:
        quantized = [e for e in quantized if e.settings["quantizer"]["name"] != "cast"]
    return min(quantized, key=lambda e: e.metrics["rollout_kl_last"])


def step_times(path: str, artifact: Path, steps: int, rounds: int) -> dict[str, float]:
    """Median ms/step of one batch-1 generation: artifact (integer kernels), quantize_dynamic, fp32."""
    schedule = load_schedule(ROOT / path)
    ckpt = schedule.resolve_path(schedule.data["model"]["checkpoint"])
    fp32 = MODELS.get("performance_rnn").obj(checkpoint=ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_dynamic's deprecation warning
        dynamic = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(fp32), {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8
        )
    variants = {"compress int8_full artifact": load_quantized(artifact), "torch dynamic int8": dynamic, "fp32": fp32}
    runs = interleaved({k: (lambda m=m: sample(m, 1, steps, seed=0)) for k, m in variants.items()}, rounds)
    return {k: 1e3 * median([r[k] for r in runs]) / steps for k in variants}


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", type=int, default=16)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--gen-steps", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny schedules, 4 x 60 steps: a smoke run")
    p.add_argument("--write", action="store_true", help="replace the two sections of benchmarks/RESULTS.md")
    p.add_argument("--steps-only", action="store_true", help="only the step times (no rollouts; --write: that section)")
    args = p.parse_args(argv)
    if args.quick:
        args.sequences, args.steps, args.gen_steps, args.rounds = 4, 60, 60, 1
    torch.set_num_threads(1)
    studies = QUICK if args.quick else STUDIES
    rows, steps, drift, raw = [], [], [], {}
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        for core, path in studies.items():
            out = Path(tmp) / core
            experiments = run_study(path, args, out)
            rows += rollout_rows(core, experiments)
            for eight_bit in () if args.steps_only else (False, True):
                best = least_drift(experiments, eight_bit)
                what = "of the 8-bit experiments" if eight_bit else "of all non-float experiments"
                drift.append(f"- {core}, {what}: `{best.name}` drifts least (KL over the last window "
                             f"{best.metrics['rollout_kl_last']:.5f} nats, first-window "
                             f"{best.metrics['rollout_kl_first']:.5f}).")  # fmt: skip
            times = step_times(path, out / "int8_full.qpt", args.gen_steps, args.rounds)
            steps.append(
                [
                    core,
                    *(f"{times[k]:.2f}" for k in times),
                    f"{times['torch dynamic int8'] / times['compress int8_full artifact']:.2f}",
                ]
            )
            raw[core] = {"rollout": {e.name: e.metrics for e in experiments}, "ms_per_step": times}
    where = (f"{today()}: {cpu_info()['model']} ({cpu_class()}), {os.cpu_count()} cores shared with other jobs, "
             f"torch {torch.__version__}, 1 thread; load average before / after: {load_before} / {load_average()}. "
             "Timings are upper bounds (the machine is shared).")  # fmt: skip
    heads = ["core", "experiment", *(title for _, title, _ in COLUMNS)]
    rollout_md = "\n\n".join([
        where,
        f"`python benchmarks/rollout.py`: each seed-study schedule with `evaluate: rollout` ({args.sequences} "
        f"sequences x {args.steps} steps, seed 0, temperature 1, window {min(100, args.steps // 2)} steps). "
        "KL in nats per step; first diff in steps (higher is better); the float model first.",
        md_table(heads, rows, "ll" + "r" * len(COLUMNS)),
        "\n".join(drift),
    ])  # fmt: skip
    step_heads = ["core", "compress int8_full artifact ms/step", "torch dynamic int8 ms/step", "fp32 ms/step",
                  "dynamic / artifact"]  # fmt: skip
    step_md = "\n\n".join([
        where,
        f"One sequence of {args.gen_steps} events at batch 1 (`python -m compress generate`'s loop), median of "
        f"{args.rounds} interleaved rounds.",
        md_table(step_heads, steps, "lrrrr"),
    ])  # fmt: skip
    print(rollout_md + "\n\n" + step_md)
    print(json.dumps(raw, default=float))  # every metric, for the README's table
    if args.write and not args.quick:
        sections = {STEP_SECTION: step_md} if args.steps_only else {ROLLOUT_SECTION: rollout_md, STEP_SECTION: step_md}
        write_sections(ROOT / "benchmarks" / "RESULTS.md", sections)
    return raw


if __name__ == "__main__":
    main()
