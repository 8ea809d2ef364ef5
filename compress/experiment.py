"""One experiment of a study: quantize a copy, fine-tune it if asked, evaluate, render, export, report its layers.

The engine (compress/engine.py) decides the order of the stages and where each experiment runs; this module
runs one experiment entry on what the study shares (:class:`Study`). A search (compress/search) calls
:func:`run_experiment` once per trial with a subset of the evaluation data.

Example:
    >>> # er = run_experiment(study, schedule.data["experiments"][3], 3, placement)
    >>> # er.name, er.value, er.weight_bytes
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from compress.distributed import Placement, Team
from compress.fileio import output_file
from compress.render import render_if_listed
from compress.results import ExperimentResult, RunResult
from compress.schedule import Schedule
from compress.stages import (
    at_quantizer,
    at_schedule,
    evaluate,
    experiment_quantizer,
    first_batches,
    make_quantizer,
    stats_key,
    timed,
    uses_stats,
)
from compress.utils import weight_bytes

if TYPE_CHECKING:  # the quant stage is imported where it is used, as for save_quantized
    from compress.quant import FloatReference

__all__ = ["Study", "run_experiment", "search_experiment", "float_reference", "plan_rows", "experiment_stats_key"]


@dataclass
class Study:
    """What every experiment of one run shares: converted model, data, float reference, statistics cache, outputs."""

    schedule: Schedule
    model: torch.nn.Module
    data: Any
    device: torch.device
    calib_batch: Any
    result: RunResult
    progress: bool
    out_dir: Path
    reference: FloatReference  # the float model's per-module outputs on calib_batch, for every experiment's layer rows
    team: Team
    stats_cache: dict[str, Any] = field(default_factory=dict)
    search_trials: dict[str, Any] = field(default_factory=dict)  # trial results the study's searches share


def plan_rows(q: Any) -> list[dict[str, Any]]:
    """The quantizer's plan as plain rows (built-ins return dataclasses, plugins may return dicts)."""
    return [dict(p) if isinstance(p, dict) else dict(vars(p)) for p in q.resolve_plan()]


def stats_for_experiment(schedule: Schedule, exp: dict[str, Any], i: int) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The statistics spec experiment ``i`` uses (its own or the schedule's) and its YAML path."""
    if "stats" in exp:
        return exp["stats"], ("experiments", i, "stats")
    return schedule.data["stats"], ("stats",)


def experiment_stats_key(schedule: Schedule, exp: dict[str, Any], i: int) -> str:
    """The study's cache key of experiment ``i``'s statistics (its source, plus its own ``stats_edits``)."""
    key = stats_key(stats_for_experiment(schedule, exp, i)[0])
    extra = list(exp.get("stats_edits") or [])
    return key + json.dumps(extra, sort_keys=True) if extra else key


def search_experiment(ctx: Study, exp: dict[str, Any], i: int, where: Placement) -> ExperimentResult:
    """An experiment with ``search:``: compress.search tries entries through :func:`run_experiment`."""
    from compress.search import parse_search, run_search

    def trial(entry: dict[str, Any], batches: int | None, layers: bool) -> ExperimentResult:
        return run_experiment(ctx, entry, i, where, first_batches(ctx.data, batches), layers)

    with at_schedule(ctx.schedule, ("experiments", i, "search")):
        spec = parse_search(exp["search"])
    final = partial(run_experiment, ctx, i=i, where=where)
    qspec = experiment_quantizer(ctx.schedule, exp)
    return run_search(spec, exp, qspec, trial, final, ctx.out_dir, shared=ctx.search_trials)


def run_experiment(
    ctx: Study, exp: dict[str, Any], i: int, where: Placement, data: Any = None, layers: bool | None = None
) -> ExperimentResult:
    """Quantize, evaluate (on ``data``, default the study's), render, export and report one experiment entry.

    A search trial passes its subset as ``data``: then nothing is rendered or exported, ``also_evaluate``
    does not run, and the per-layer rows are made only when ``layers`` says so.
    """
    trial = data is not None
    qspec = experiment_quantizer(ctx.schedule, exp)
    er = ExperimentResult(exp["name"], {"quantizer": qspec})
    quantizer, qmodel = _quantized(ctx, exp, i, qspec, er) if qspec is not None else (None, ctx.model)
    _evaluated(ctx, qmodel, data if trial else ctx.data, trial, where, er)
    if not trial:
        _files(ctx, exp, i, qmodel, er)
    if quantizer is not None and where.reports(ctx.team.rank) and (layers if trial else True):  # rank 0 reports
        with timed(ctx.result.timings, "layer_report"):
            er.layers = _layer_records(ctx, quantizer)
    er.settings["stats"] = ctx.result.stats.get(er.stats_key or "", {}).get("spec")
    return er


def _quantized(ctx: Study, exp: dict[str, Any], i: int, qspec: Any, er: ExperimentResult) -> tuple[Any, Any]:
    """The experiment's quantizer and quantized model (fine-tuned when the entry has ``finetune:``)."""
    schedule, t, stats = ctx.schedule, ctx.result.timings, None
    if ("stats" in schedule.data or "stats" in exp) and uses_stats(qspec):
        with timed(t, "stats"):
            stats, er.stats_key = ctx.stats_cache[experiment_stats_key(schedule, exp, i)]
    with timed(t, "quantize"), at_quantizer(schedule, i):
        quantizer = make_quantizer(qspec, ctx.model, stats)
        er.plan = plan_rows(quantizer)
        qmodel = quantizer.prepare_model().eval()
        er.notes = list(getattr(quantizer, "log", []))
    if exp.get("finetune") is not None:
        with timed(t, "finetune"), at_schedule(schedule, ("experiments", i, "finetune")):
            quantizer, qmodel = _finetune(ctx, exp, qspec, stats, qmodel, er)
    return quantizer, qmodel


def _evaluated(ctx: Study, qmodel: Any, data: Any, trial: bool, where: Placement, er: ExperimentResult) -> None:
    """Evaluate ``qmodel`` into ``er`` (a search trial: its subset, no progress bar, no also_evaluate extras)."""
    shard_over = ctx.team if where.sharded else None
    with timed(ctx.result.timings, "evaluate"):
        ev, er.eval_seconds = evaluate(
            ctx.schedule, qmodel, data, ctx.progress and not trial, shard_over, reference=ctx.model, also=not trial
        )
    er.metric, er.value, er.metrics = ev["metric"], float(ev["value"]), dict(ev.get("metrics", {}))
    er.extra_metrics = list(ev.get("extra_metrics", []))
    er.higher_is_better = bool(ev.get("higher_is_better", False))
    er.unit = str(ev.get("unit", ""))  # "fraction": an accuracy-like metric in [0, 1], Δ also in points
    er.weight_bytes = weight_bytes(qmodel)


def _files(ctx: Study, exp: dict[str, Any], i: int, qmodel: Any, er: ExperimentResult) -> None:
    """The render block's generations of this experiment (if listed) and its artifact (``export: true``)."""
    t = ctx.result.timings
    with timed(t, "render"):  # experiments the render block lists run on the writer (the engine pins them)
        ctx.result.renders.update(render_if_listed(ctx.schedule.data, er.name, qmodel, ctx.out_dir))
    if exp.get("export"):
        from compress.quant import save_quantized  # the artifact format belongs to the quant stage

        with timed(t, "export"), at_schedule(ctx.schedule, ("experiments", i, "export")):
            er.artifact_bytes = save_quantized(qmodel, output_file(ctx.out_dir, f"{er.name}.qpt", "an artifact"))


def _finetune(ctx: Study, exp: dict[str, Any], qspec: Any, stats: Any, qmodel: torch.nn.Module, er: Any) -> Any:
    """Quantization-aware fine-tuning of the experiment's model, frozen back by its own quantizer."""
    from compress.finetune import finetune_experiment  # the training stage is imported where it is used

    tuned = finetune_experiment(
        exp["finetune"],
        float_model=ctx.model,
        qmodel=qmodel,
        requantize=lambda m: make_quantizer(qspec, m, stats),
        data=ctx.data,
        name=er.name,
        identity=[qspec, er.stats_key],
        out_dir=ctx.out_dir if ctx.team.writer else None,
        progress=ctx.progress,
        default_seed=int(ctx.schedule.data.get("seed", 0)),
    )
    er.notes += tuned.notes
    er.settings["finetune"] = tuned.summary
    return tuned.quantizer, tuned.model


def float_reference(model: torch.nn.Module, batch: Any) -> FloatReference:
    """The float model's outputs on ``batch``, captured lazily on the first layer report and then reused.

    Every experiment's SQNR compares against the same float outputs; capturing them once per study
    saves one float run (with a copy of every module's outputs) per quantized experiment.
    """
    from compress.quant import FloatReference  # the capture format belongs to the quant stage

    return FloatReference(model, lambda m: _run_batch(m, batch))


def _layer_records(ctx: Study, quantizer: Any) -> list[dict[str, Any]]:
    """The quantizer's per-layer rows on the calibration batch, against the study's shared float reference.

    Quantizers whose ``layer_records`` takes no ``reference`` (plugins written before it) run the float
    model themselves, as does a fine-tuned experiment (its quantizer's float model is its own).
    """
    records = quantizer.layer_records
    run = lambda m: _run_batch(m, ctx.calib_batch)  # noqa: E731
    if _accepts_reference(records) and getattr(quantizer, "model", ctx.model) is ctx.model:
        return list(records(run, reference=ctx.reference))
    return list(records(run))


def _accepts_reference(fn: Callable[..., Any]) -> bool:
    # By name only: a plugin's **kwargs may forward somewhere that does not expect a FloatReference.
    return "reference" in inspect.signature(fn).parameters


def _run_batch(model: torch.nn.Module, batch: Any) -> None:
    with torch.no_grad():
        model.score_batch(batch, None)
