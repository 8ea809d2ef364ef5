"""How the cost of calibration and evaluation grows with the data and with the model.

Data: the Performance RNN of a schedule (converted), calibrated with ``compress.stats.collect_stats``
and evaluated on 1x, 2x, 4x the base number of batches (windows of the training split, so even the
shipped model has enough). Model: randomly initialized Performance RNNs (seed 0) over a grid of
hidden sizes and layer counts, calibrated and evaluated on one batch of the same data. Each round
runs every size once (interleaved); growth factors are ratios inside a round, median over rounds.

Example:
    >>> # data = measure_data_scaling(Path("schedules/perf_rnn.yaml"), (1, 2, 4), base=1, rounds=3)
    >>> # model = measure_model_scaling(Path("schedules/perf_rnn.yaml"), [(128, 2), (256, 2)], rounds=3)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from benchutil import md_table, median, median_ratio, seconds
from torch import nn

INT8_ARGS = {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg"}
# What is timed for every size: calibration, then evaluation of three variants of the same model.
MEASURES = ("calibration", "eval nn.LSTM", "eval modular", "eval int8")


@dataclass
class Scaling:
    """Timed rounds for a list of sizes; keys of a round are ``f"{measure}@{size}"``."""

    sizes: list[str]
    rounds: list[dict[str, float]]
    extra: dict[str, str]
    description: str

    def seconds(self, measure: str, size: str) -> float:
        """Median seconds of one measure at one size."""
        return median([r[f"{measure}@{size}"] for r in self.rounds])

    def growth(self, measure: str, size: str) -> float:
        """Median over rounds of time(size) / time(first size), inside each round."""
        return median_ratio(self.rounds, f"{measure}@{size}", f"{measure}@{self.sizes[0]}")


def _load(schedule_path: Path) -> tuple[Any, dict[str, Any]]:
    import compress.components  # noqa: F401  (registers the built-ins)
    from compress.schedule import load_schedule

    schedule = load_schedule(schedule_path)
    return schedule, dict(schedule.data["data"].get("args") or {})


def _dataset(schedule: Any, args: dict[str, Any], batches: int, **extra: Any) -> Any:
    from compress.api import build_dataset

    # Windows of the training split for both roles: enough of them for the largest size.
    full = {**args, **extra, "calibration_batches": batches, "evaluation_split": "train", "evaluation_batches": batches}
    return build_dataset(schedule.data["data"]["name"], **full)


@dataclass
class Models:
    """The unconverted model, its converted copy and the int8 model quantized from one calibration."""

    plain: nn.Module
    converted: nn.Module
    int8: nn.Module


def _models(model: nn.Module, calibration_data: Any) -> Models:
    from compress.modules import convert_rnns
    from compress.quant import PostTrainLinearQuantizer

    converted, _ = convert_rnns(copy.deepcopy(model))  # converts in place: keep the nn.LSTM model intact
    converted.eval()
    stats = _calibrate(converted, calibration_data)
    int8 = PostTrainLinearQuantizer(converted, stats=stats, **INT8_ARGS).prepare_model().eval()
    return Models(model.eval(), converted, int8)


def _calibrate(model: nn.Module, data: Any) -> Any:
    from compress.stats import collect_stats

    return collect_stats(model, lambda: data.batches("calibration"))


def _timers(models: Models, data: Any) -> dict[str, Callable[[], Any]]:
    """One timed callable per measure on ``data``."""
    from compress.evaluate import evaluate_perplexity

    return {
        "calibration": lambda: _calibrate(models.converted, data),
        "eval nn.LSTM": lambda: evaluate_perplexity(models.plain, data),
        "eval modular": lambda: evaluate_perplexity(models.converted, data),
        "eval int8": lambda: evaluate_perplexity(models.int8, data),
    }


def _run_rounds(timers: dict[str, dict[str, Callable[[], Any]]], rounds: int) -> list[dict[str, float]]:
    out = []
    for _ in range(rounds):
        row = {}
        for size, fns in timers.items():
            for measure, fn in fns.items():
                row[f"{measure}@{size}"] = seconds(fn)[0]
        out.append(row)
    return out


def measure_data_scaling(schedule_path: Path, factors: Sequence[int], base: int, rounds: int) -> Scaling:
    """Calibration and evaluation time of the schedule's model over ``base * factor`` batches."""
    from compress import engine

    schedule, args = _load(schedule_path)
    model = engine.build_model(schedule, torch.device("cpu"))
    models = _models(model, _dataset(schedule, args, base * factors[0]))  # one int8 model for every size
    timers, extra = {}, {}
    for k in factors:
        data = _dataset(schedule, args, base * k)
        timers[f"{k}x"] = _timers(models, data)
        extra[f"{k}x"] = f"{base * k} batches, {data.num_tokens('evaluation'):,} events"
    for fns in timers.values():
        fns["eval nn.LSTM"]()  # warm-up
    desc = f"`{schedule_path.name}` model, batches of {args.get('batch_size', 64)} windows x {args.get('window', 200)}"
    return Scaling([f"{k}x" for k in factors], _run_rounds(timers, rounds), extra, desc)


def measure_model_scaling(schedule_path: Path, configs: Sequence[tuple[int, int]], rounds: int) -> Scaling:
    """Calibration and evaluation time of random Performance RNNs of each (hidden, layers) on one batch."""
    from compress.api import build_model

    schedule, args = _load(schedule_path)
    data = _dataset(schedule, args, 1)
    timers, extra = {}, {}
    for hidden, layers in configs:
        torch.manual_seed(0)
        model = build_model("performance_rnn", hidden_dim=hidden, num_layers=layers)
        size = f"{hidden}x{layers}"
        timers[size] = _timers(_models(model, data), data)
        extra[size] = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M"
    desc = f"random Performance RNNs (seed 0), one batch: {data.num_tokens('evaluation'):,} events"
    return Scaling([f"{h}x{n}" for h, n in configs], _run_rounds(timers, rounds), extra, desc)


def _table(s: Scaling, size_header: str, extra_header: str) -> str:
    headers = [size_header, extra_header]
    for m in MEASURES:
        headers += [f"{m} s", "x"]
    rows = []
    for size in s.sizes:
        row = [size, s.extra[size]]
        for m in MEASURES:
            row += [f"{s.seconds(m, size):.3f}", f"{s.growth(m, size):.2f}"]
        rows.append(row)
    return md_table(headers, rows, "ll" + "rr" * len(MEASURES))


def _exponent(s: Scaling, measure: str, small: str, large: str, ratio: float) -> float:
    """``a`` in time ~ size^a between two sizes whose size ratio is ``ratio``."""
    grow = median_ratio(s.rounds, f"{measure}@{large}", f"{measure}@{small}")
    return math.log(grow) / math.log(ratio)


def _linearity(s: Scaling) -> str:
    """Whether time grew in proportion to the data (within 25%), said plainly."""
    factors = [float(k.rstrip("x")) for k in s.sizes]
    worst = max(
        abs(s.growth(m, k) / (f / factors[0]) - 1) for m in MEASURES for k, f in zip(s.sizes, factors, strict=True)
    )
    if worst <= 0.25:
        return "Every measure grows in proportion to the data: time = (seconds at 1x) x (batches / base batches)."
    return f"Not proportional everywhere (worst deviation from linear {100 * worst:.0f}%): see the table."


def model_summary(s: Scaling, configs: Sequence[tuple[int, int]]) -> list[str]:
    """Sentences with the fitted exponents in hidden size and the cost of one more layer."""
    lines = []
    hiddens = sorted({h for h, _ in configs})
    layers = sorted({n for _, n in configs})
    for n in layers:
        lo, hi = f"{hiddens[0]}x{n}", f"{hiddens[-1]}x{n}"
        if lo == hi:
            continue
        ratio = hiddens[-1] / hiddens[0]
        fits = ", ".join(f"{m} ~ hidden^{_exponent(s, m, lo, hi, ratio):.2f}" for m in MEASURES)
        lines.append(f"{n} layers, hidden {hiddens[0]} -> {hiddens[-1]}: {fits}.")
    if len(layers) > 1:
        for h in hiddens:
            a, b = f"{h}x{layers[0]}", f"{h}x{layers[-1]}"
            grows = ", ".join(f"{m} x{median_ratio(s.rounds, f'{m}@{b}', f'{m}@{a}'):.2f}" for m in MEASURES)
            lines.append(f"hidden {h}, {layers[0]} -> {layers[-1]} layers: {grows}.")
    return lines


def headline(data: Scaling, model: Scaling) -> str:
    """One line: growth of calibration and int8 evaluation with 4x the data and the largest model."""
    big_d, big_m = data.sizes[-1], model.sizes[-1]
    return (
        f"Scaling: {big_d} data -> calibration x{data.growth('calibration', big_d):.2f}, int8 evaluation "
        f"x{data.growth('eval int8', big_d):.2f}; model {model.sizes[0]} -> {big_m} (hidden x layers) -> "
        f"calibration x{model.growth('calibration', big_m):.2f}, "
        f"int8 evaluation x{model.growth('eval int8', big_m):.2f}."
    )


def scaling_section(data: Scaling, model: Scaling, configs: Sequence[tuple[int, int]], rounds: int) -> str:
    """The '## Scaling' section body."""
    grow = {k: data.growth("calibration", k) for k in data.sizes}
    grow_eval = {k: data.growth("eval int8", k) for k in data.sizes}
    data_line = ", ".join(f"{k}: calibration x{grow[k]:.2f}, int8 evaluation x{grow_eval[k]:.2f}" for k in data.sizes)
    return "\n\n".join(
        [
            f"Median of {rounds} interleaved round(s); *x* = time relative to the first row, taken inside a round. "
            "Calibration = `compress.stats.collect_stats` (two passes, hooks on every op); evaluation = "
            "`evaluate_perplexity` of the unconverted model, the converted model and simulated int8 "
            "(int8_full settings).",
            f"### Data size\n\n{data.description}.\n\n{_table(data, 'data', 'size')}",
            f"Growth with the data: {data_line}. {_linearity(data)}",
            f"### Model size\n\n{model.description}.\n\n{_table(model, 'hidden x layers', 'parameters')}",
            "\n".join(f"- {line}" for line in model_summary(model, configs)),
        ]
    )
