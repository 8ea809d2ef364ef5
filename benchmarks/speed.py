"""Evaluation throughput of compress's models against PyTorch's, and the wall time of a whole study.

Throughput: the variants of :mod:`variants` are evaluated by compress's evaluator on the same batches,
one of each per round (interleaved), after one untimed warm-up batch each; each ratio to fp32
``nn.LSTM`` is taken inside a round and the median over rounds is reported.

Study wall time: ``python -m compress SCHEDULE`` in a subprocess, timed from outside (startup,
imports and report writing included), with the engine's own stage times from its ``report.json``.

Example:
    >>> # speed = measure_speed(case, rounds=3, max_batches=None)
    >>> # print(speed_section([speed]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchutil import interleaved, md_table, median, median_ratio, run_study
from variants import BF16, DYNAMIC, INT8, MODULAR, REFERENCE, Case, evaluate

SPEED_ROWS = (REFERENCE, MODULAR, INT8, DYNAMIC, BF16)
STAGES = ("build", "convert", "stats", "quantize", "evaluate", "layer_report")


@dataclass
class ModelSpeed:
    """Timed rounds of one model's variants."""

    title: str
    unit: str
    tokens: int
    batches: str
    rounds: list[dict[str, float]]
    notes: dict[str, str] = field(default_factory=dict)


def measure_speed(case: Case, rounds: int, max_batches: int | None) -> ModelSpeed:
    """Interleaved timed evaluations of the speed variants (bf16 autocast only where the CPU has bf16)."""
    names = [n for n in SPEED_ROWS if n in case.variants and not case.variants[n].note.startswith("emulated")]
    for name in names:
        evaluate(case, name, max_batches=1)  # warm-up: first-call allocations and kernel selection
    tokens = int(evaluate(case, REFERENCE, max_batches=max_batches)["metrics"]["tokens"])
    timed = interleaved({n: lambda n=n: evaluate(case, n, max_batches=max_batches) for n in names}, rounds)
    total = case.data.num_batches("evaluation")
    used = total if max_batches is None else min(total, max_batches)
    speed = ModelSpeed(case.title, case.unit, tokens, f"{used} of {total} evaluation batches", timed)
    speed.notes = _notes(case)
    return speed


def _notes(case: Case) -> dict[str, str]:
    notes = {
        REFERENCE: "PyTorch's fused LSTM kernel",
        MODULAR: "every gate op a module, one time step per call",
        INT8: "exact integer result of every op: int8 GEMMs, the fused integer LSTM loop (C kernels when built)",
        DYNAMIC: "int8 GEMMs, fp32 gate math",
        BF16: f"autocast, {case.variants[BF16].note} bf16" if BF16 in case.variants else "",
    }
    dynamic = case.variants[DYNAMIC].model
    vectorizable = getattr(dynamic, "_vectorizable", None)
    if callable(vectorizable) and not vectorizable():
        # Performance RNN reads every layer's state at every step: only a plain nn.LSTM core takes
        # its whole-sequence path, so a quantized core is stepped one time step per call.
        notes[DYNAMIC] += "; this model steps a non-`nn.LSTM` core one time step per call"
    return notes


def speed_rows(speed: ModelSpeed) -> list[list[str]]:
    """variant, median seconds, throughput, speed relative to fp32 nn.LSTM and to torch dynamic int8."""
    rows = []
    for name in speed.rounds[0]:
        t = median([r[name] for r in speed.rounds])
        vs_ref = 1.0 / median_ratio(speed.rounds, name, REFERENCE)
        vs_dyn = 1.0 / median_ratio(speed.rounds, name, DYNAMIC)
        rows.append(
            [
                name,
                f"{t:.3f}",
                f"{speed.tokens / t:,.0f}",
                f"**{vs_ref:.2f}x**",
                f"{vs_dyn:.2f}x",
                speed.notes.get(name, ""),
            ]
        )
    return rows


def speed_verdicts(speed: ModelSpeed) -> list[str]:
    """Plain sentences about where compress is faster or slower."""
    r = {n: 1.0 / median_ratio(speed.rounds, n, REFERENCE) for n in speed.rounds[0]}
    vs_dynamic = 1.0 / median_ratio(speed.rounds, INT8, DYNAMIC)
    lines = [
        f"compress's int8_full model runs at {r[INT8]:.2f}x the speed of fp32 `nn.LSTM` ({_pace(r[INT8])}) and "
        f"{vs_dynamic:.2f}x that of torch dynamic int8 ({_pace(vs_dynamic)}). It computes the exact integer result "
        "of every op, bit for bit the study's simulation: one int8 GEMM and a few table lookups per LSTM step "
        "(the fused integer loop), while PyTorch keeps the gate math in fp32.",
        f"The converted fp32 model alone runs at {r[MODULAR]:.2f}x: the price of observable gate ops "
        "(one module call per op per time step instead of a fused kernel).",
    ]
    fastest = max(r, key=lambda n: r[n])
    lines.append(f"Fastest variant measured: {fastest} ({r[fastest]:.2f}x fp32 `nn.LSTM`).")
    return lines


def _pace(ratio: float) -> str:
    return f"{ratio:.1f} times faster" if ratio >= 1 else f"{1 / ratio:.1f} times slower"


def headline(speed: ModelSpeed) -> str:
    """One line of speed ratios to fp32 nn.LSTM."""
    cells = ", ".join(
        f"{n} {1.0 / median_ratio(speed.rounds, n, REFERENCE):.2f}x" for n in speed.rounds[0] if n != REFERENCE
    )
    return f"{speed.title} evaluation speed vs fp32 nn.LSTM: {cells}."


def speed_section(speeds: list[ModelSpeed], rounds: int) -> str:
    """The '## Evaluation speed' section body."""
    parts = [
        f"Teacher-forced evaluation by compress's evaluator, same batches for every variant, median of {rounds} "
        "interleaved round(s) after a warm-up batch. *vs fp32 nn.LSTM* = speed relative to the unconverted "
        "model in the same round (above 1 = faster); *vs torch dynamic int8* likewise."
    ]
    for s in speeds:
        headers = ["variant", "median s", f"{s.unit}/s", "vs fp32 nn.LSTM", "vs torch dynamic int8", "notes"]
        table = md_table(headers, speed_rows(s), "lrrrrl")
        verdicts = "\n".join(f"- {line}" for line in speed_verdicts(s))
        parts.append(f"### {s.title}\n\n{s.tokens:,} {s.unit} ({s.batches}).\n\n{table}\n\n{verdicts}")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- study wall time


@dataclass
class StudyTiming:
    """Wall time and stage times of repeated runs of one schedule."""

    schedule: str
    walls: list[float]
    reports: list[dict[str, Any]]


def measure_study(schedule: Path, runs: int, threads: int, out_root: Path, label: str = "") -> StudyTiming:
    """Run the schedule ``runs`` times as a user would (fresh interpreter each time); ``label`` names it."""
    timing = StudyTiming(label or schedule.name, [], [])
    for i in range(runs):
        wall, report = run_study(schedule, out_root / f"{schedule.stem}-{i}", threads)
        timing.walls.append(wall)
        timing.reports.append(report)
    return timing


def _stage_rows(timing: StudyTiming) -> list[list[str]]:
    wall = median(timing.walls)
    rows = []
    for stage in STAGES:
        t = median([r["timings"].get(stage, 0.0) for r in timing.reports])
        rows.append([stage, f"{t:.2f}", f"{100 * t / wall:.0f}%"])
    # What the engine does not time: interpreter start, imports, schedule validation, report files.
    other = median([w - sum(r["timings"].values()) for w, r in zip(timing.walls, timing.reports, strict=True)])
    rows.append(["other (startup, imports, validation, report files)", f"{other:.2f}", f"{100 * other / wall:.0f}%"])
    rows.append(["**wall time**", f"**{wall:.2f}**", "100%"])
    return rows


def study_headline(timing: StudyTiming) -> str:
    """One line: median wall time and the two largest stages."""
    wall = median(timing.walls)
    stages = sorted(STAGES, key=lambda st: -median([r["timings"].get(st, 0.0) for r in timing.reports]))[:2]
    shares = ", ".join(
        f"{st} {100 * median([r['timings'].get(st, 0.0) for r in timing.reports]) / wall:.0f}%" for st in stages
    )
    return f"`python -m compress {timing.schedule.split(',')[0]}`: {wall:.1f} s wall ({shares})."


def study_section(timings: list[StudyTiming], threads: int) -> str:
    """The '## Study wall time' section body."""
    parts = [
        f"`python -m compress SCHEDULE --quiet` in a fresh subprocess (OMP_NUM_THREADS={threads}), wall time "
        'measured from outside; stage times are the engine\'s own (`report.json` "timings", summed over '
        "experiments). Median over the runs."
    ]
    for t in timings:
        table = md_table(["stage", "seconds", "share"], _stage_rows(t), "lrr")
        exps = t.reports[0]["experiments"]
        evals = ", ".join(
            f"{e['name']} {median([r['experiments'][i]['eval_seconds'] for r in t.reports]):.2f}"
            for i, e in enumerate(exps)
        )
        parts.append(
            f"### `{t.schedule}` ({len(t.walls)} run(s), {len(exps)} experiments)\n\n{table}\n\n"
            f"Evaluation seconds per experiment: {evals}."
        )
    return "\n\n".join(parts)
