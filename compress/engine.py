"""The engine: the only module that knows the order of the stages.

    schedule -> build model -> load checkpoint -> convert (+ check) -> statistics
             -> for each experiment: quantize a copy -> evaluate -> report

Every component is looked up in its registry by the name the schedule gives; stages never
import each other.

Example:
    >>> # from compress.schedule import load_schedule
    >>> # result = run(load_schedule("schedules/perf_rnn.yaml"), out_dir=Path("runs/perf_rnn"))
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

from compress.distributed import Placement, Team, Work, join, place
from compress.distributed.shards import (
    StatsShards,
    batches_independent,
    can_shard_evaluator,
    gather,
    share,
)
from compress.fileio import output_file, prepare_output_dir
from compress.registry import EVALUATORS, STATS_SOURCES
from compress.render import render_if_listed, rendered
from compress.results import ExperimentResult, RunResult
from compress.schedule import Schedule
from compress.stages import (  # noqa: F401  (build_model, ... stay importable from compress.engine)
    DEFAULT_CONVERSION_TOLERANCE,
    at_quantizer,
    at_schedule,
    build_data,
    build_model,
    check_data,
    collect_stats,
    convert,
    edit_stats,
    evaluate,
    experiment_quantizer,
    first_batch,
    first_batches,
    make_quantizer,
    schedule_device,
    select_device,
    stats_key,
    timed,
    uses_stats,
)
from compress.utils import weight_bytes

if TYPE_CHECKING:  # the quant stage is imported where it is used, as for save_quantized
    from compress.quant import FloatReference

__all__ = ["ExperimentResult", "RunResult", "run", "plan", "select_device", "DEFAULT_CONVERSION_TOLERANCE"]


# ----------------------------------------------------------------------------- orchestration


def _seed(schedule: Schedule) -> None:
    torch.manual_seed(int(schedule.data.get("seed", 0)))


def _plan_rows(q: Any) -> list[dict[str, Any]]:
    """The quantizer's plan as plain rows (built-ins return dataclasses, plugins may return dicts)."""
    return [dict(p) if isinstance(p, dict) else dict(vars(p)) for p in q.resolve_plan()]


def plan(schedule: Schedule, *, progress: bool = False) -> RunResult:
    """Resolve everything (model, conversion, per-experiment layer plan) without calibrating or evaluating."""
    _seed(schedule)
    device = schedule_device(schedule)
    result = RunResult(schedule, str(device))
    model = build_model(schedule, device)
    data = build_data(schedule)
    check_data(schedule, model, data)
    model, result.conversions = convert(schedule, model, data)
    for i, exp in enumerate(schedule.data["experiments"]):
        qspec = experiment_quantizer(schedule, exp)
        er = ExperimentResult(exp["name"], {"quantizer": qspec})
        if qspec is not None:
            with at_quantizer(schedule, i):
                er.plan = _plan_rows(make_quantizer(qspec, model, None))
        result.experiments.append(er)
    return result


def _stats_for_experiment(schedule: Schedule, exp: dict[str, Any], i: int) -> tuple[dict[str, Any], tuple[Any, ...]]:
    if "stats" in exp:
        return exp["stats"], ("experiments", i, "stats")
    return schedule.data["stats"], ("stats",)


def run(
    schedule: Schedule,
    *,
    out_dir: Path,
    progress: bool = True,
    on_experiment: Callable[[ExperimentResult], None] | None = None,
    team: Team | None = None,
) -> RunResult:
    """Run every stage of ``schedule`` and return the results (the report stage writes them).

    ``team`` (default: :func:`compress.distributed.join`, one process unless torchrun started this one)
    says where each statistics source and experiment runs; on every rank the returned result holds every
    experiment, but only ``team.writer`` has written files.
    """
    own = team is None
    team = team or join()
    try:
        return team.guard(lambda: _run(schedule, team, out_dir, progress and team.writer, on_experiment))
    finally:
        if own:
            team.close()


def _run(
    schedule: Schedule,
    team: Team,
    out_dir: Path,
    progress: bool,
    on_experiment: Callable[[ExperimentResult], None] | None,
) -> RunResult:
    _seed(schedule)
    device = schedule_device(schedule)
    prepare_output_dir(out_dir)  # before any work: an --out that cannot be a folder fails at once
    result = RunResult(schedule, str(device), distribution=team.describe())
    t = result.timings
    with timed(t, "build"):
        float_model = build_model(schedule, device)
        data = build_data(schedule)
        check_data(schedule, float_model, data)
    tensors = {v.data_ptr(): v for v in float_model.state_dict().values()}  # tied weights count once
    result.checkpoint_bytes = sum(v.numel() * v.element_size() for v in tensors.values())
    with timed(t, "convert"):
        model, result.conversions = convert(schedule, float_model, data)
    _warm_up(data)
    calib_batch = first_batch(data, "calibration")
    ctx = _Study(
        schedule,
        model,
        data,
        device,
        calib_batch,
        result,
        progress,
        out_dir,
        _float_reference(model, calib_batch),
        team,
    )
    with timed(t, "stats"):
        _statistics(ctx)
    with timed(t, "render"):  # the float model's generations, when the schedule has a render block
        result.renders = render_if_listed(schedule.data, None, model, out_dir) if team.writer else {}
    experiments = schedule.data["experiments"]
    where = place([_experiment_work(ctx, exp) for exp in experiments], team.size, team.placement)
    finished: dict[int, ExperimentResult] = {}
    for i, exp in enumerate(experiments):
        if where[i].here(team.rank):
            finished[i] = er = (_search if "search" in exp else _run_experiment)(ctx, exp, i, where[i])
            if on_experiment and team.writer:
                on_experiment(er)
    result.experiments, result.distribution["timings_by_rank"] = gather(team, finished, len(experiments), t)
    if on_experiment and team.writer:  # rows that other ranks ran, in schedule order
        for i, er in enumerate(result.experiments):
            if i not in finished:
                on_experiment(er)
    result.distribution["experiments"] = {p.name: p.how() for p in where}
    return result


@dataclass
class _Study:
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


def _search(ctx: _Study, exp: dict[str, Any], i: int, where: Placement) -> ExperimentResult:
    """An experiment with ``search:``: compress.search tries entries through this module's experiment path."""
    from compress.search import parse_search, run_search

    def trial(entry: dict[str, Any], batches: int | None, layers: bool) -> ExperimentResult:
        return _run_experiment(ctx, entry, i, where, first_batches(ctx.data, batches), layers)

    with at_schedule(ctx.schedule, ("experiments", i, "search")):
        spec = parse_search(exp["search"])
    final = partial(_run_experiment, ctx, i=i, where=where)
    qspec = experiment_quantizer(ctx.schedule, exp)
    return run_search(spec, exp, qspec, trial, final, ctx.out_dir, shared=ctx.search_trials)


def _run_experiment(
    ctx: _Study, exp: dict[str, Any], i: int, where: Placement, data: Any = None, layers: bool | None = None
) -> ExperimentResult:
    """Quantize, evaluate (on ``data``, default the study's), export and report one experiment entry.

    A search trial passes its subset as ``data``: then nothing is exported and the per-layer rows are
    made only when ``layers`` says so.
    """
    trial, schedule, model, result = data is not None, ctx.schedule, ctx.model, ctx.result
    t = result.timings
    qspec = experiment_quantizer(schedule, exp)
    er = ExperimentResult(exp["name"], {"quantizer": qspec})
    qmodel, quantizer = model, None
    if qspec is not None:
        stats = None
        if ("stats" in schedule.data or "stats" in exp) and uses_stats(qspec):
            with timed(t, "stats"):
                stats, er.stats_key = ctx.stats_cache[_experiment_stats_key(ctx.schedule, exp, i)]
        with timed(t, "quantize"), at_quantizer(schedule, i):
            quantizer = make_quantizer(qspec, model, stats)
            er.plan = _plan_rows(quantizer)
            qmodel = quantizer.prepare_model().eval()
            er.notes = list(getattr(quantizer, "log", []))
        if exp.get("finetune") is not None:
            with timed(t, "finetune"), at_schedule(schedule, ("experiments", i, "finetune")):
                quantizer, qmodel = _finetune(ctx, exp, qspec, stats, qmodel, er)
    shard_over = ctx.team if where.sharded else None
    with timed(t, "evaluate"):  # a search trial: its subset, no progress bar, no also_evaluate extras
        ev, er.eval_seconds = evaluate(
            schedule, qmodel, data if trial else ctx.data, ctx.progress and not trial, shard_over, reference=model,
            also=not trial,
        )  # fmt: skip
    er.metric, er.value, er.metrics = ev["metric"], float(ev["value"]), dict(ev.get("metrics", {}))
    er.extra_metrics = list(ev.get("extra_metrics", []))
    er.higher_is_better = bool(ev.get("higher_is_better", False))
    er.unit = str(ev.get("unit", ""))  # "fraction": an accuracy-like metric in [0, 1], Δ also in points
    er.weight_bytes = weight_bytes(qmodel)
    if not trial:
        with timed(t, "render"):  # experiments the render block lists run on the writer (see _experiment_work)
            result.renders.update(render_if_listed(schedule.data, er.name, qmodel, ctx.out_dir))
    if exp.get("export") and not trial:
        from compress.quant import save_quantized  # the artifact format belongs to the quant stage

        with timed(t, "export"), at_schedule(schedule, ("experiments", i, "export")):
            er.artifact_bytes = save_quantized(qmodel, output_file(ctx.out_dir, f"{er.name}.qpt", "an artifact"))
    if quantizer is not None and where.reports(ctx.team.rank) and (layers if trial else True):  # rank 0 reports
        with timed(t, "layer_report"):
            er.layers = _layer_records(ctx, quantizer)
    er.settings["stats"] = result.stats.get(er.stats_key or "", {}).get("spec")
    return er


def _finetune(ctx: _Study, exp: dict[str, Any], qspec: Any, stats: Any, qmodel: torch.nn.Module, er: Any) -> Any:
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


def _float_reference(model: torch.nn.Module, batch: Any) -> FloatReference:
    """The float model's outputs on ``batch``, captured lazily on the first layer report and then reused.

    Every experiment's SQNR compares against the same float outputs; capturing them once per study
    saves one float run (with a copy of every module's outputs) per quantized experiment.
    """
    from compress.quant import FloatReference  # the capture format belongs to the quant stage

    return FloatReference(model, lambda m: _run_batch(m, batch))


def _layer_records(ctx: _Study, quantizer: Any) -> list[dict[str, Any]]:
    """The quantizer's per-layer rows on the calibration batch, against the study's shared float reference.

    Quantizers whose ``layer_records`` takes no ``reference`` (plugins written before it) run the float
    model themselves.
    """
    records = quantizer.layer_records
    run = lambda m: _run_batch(m, ctx.calib_batch)  # noqa: E731
    if _accepts_reference(records) and getattr(quantizer, "model", ctx.model) is ctx.model:  # fine-tuned: own float
        return list(records(run, reference=ctx.reference))
    return list(records(run))


def _accepts_reference(fn: Callable[..., Any]) -> bool:
    # By name only: a plugin's **kwargs may forward somewhere that does not expect a FloatReference.
    return "reference" in inspect.signature(fn).parameters


def _warm_up(data: Any) -> None:
    """Read the evaluation split once, so the first experiment's time does not include building it."""
    for _ in data.batches("evaluation"):
        pass


def _run_batch(model: torch.nn.Module, batch: Any) -> None:
    with torch.no_grad():
        model.score_batch(batch, None)


def _stats_needed(schedule: Schedule) -> dict[str, tuple[dict[str, Any], tuple[Any, ...]]]:
    """Key -> (spec, YAML path) of every distinct statistics source an experiment uses, in schedule order."""
    needed: dict[str, tuple[dict[str, Any], tuple[Any, ...]]] = {}
    for i, exp in enumerate(schedule.data["experiments"]):
        if experiment_quantizer(schedule, exp) is not None and ("stats" in schedule.data or "stats" in exp):
            spec, path = _stats_for_experiment(schedule, exp, i)
            needed.setdefault(stats_key(spec), (spec, path))
    return needed


def _statistics(ctx: _Study) -> None:
    """Collect each distinct source once (where the team places it), then give every rank all of them."""
    schedule, team = ctx.schedule, ctx.team
    needed = _stats_needed(schedule)
    units = [Work(key, shardable=lambda spec=spec: _stats_shardable(ctx, spec)) for key, (spec, _) in needed.items()]
    where = place(units, team.size, team.placement)
    mine: dict[str, Any] = {}
    for (key, (spec, path)), w in zip(needed.items(), where, strict=True):
        if w.here(team.rank):
            shards = StatsShards(team) if w.sharded else None
            stats = collect_stats(schedule, spec, path, ctx.model, ctx.data, ctx.device, ctx.progress, shards)
            if w.reports(team.rank):
                mine[key] = edit_stats(schedule, stats, list(spec.get("edits") or []), path + ("edits",))
    _register_stats(ctx, needed, share(team, mine))
    files = {ctx.result.stats[key]["file"]: w.how() for key, w in zip(needed, where, strict=True)}
    ctx.result.distribution["statistics"] = files


def _stats_shardable(ctx: _Study, spec: dict[str, Any]) -> bool:
    source = STATS_SOURCES.get(spec["source"]).obj
    return getattr(source, "shardable", False) is True and batches_independent(ctx.model, ctx.data, "calibration")


def _register_stats(ctx: _Study, needed: dict[str, Any], shared: dict[str, tuple[Any, list[str]]]) -> None:
    """Save (on the writer) and cache every source's statistics and every experiment's edited copy."""
    schedule, result, cache = ctx.schedule, ctx.result, ctx.stats_cache
    for i, exp in enumerate(schedule.data["experiments"]):
        if experiment_quantizer(schedule, exp) is None or not ("stats" in schedule.data or "stats" in exp):
            continue
        spec, path = _stats_for_experiment(schedule, exp, i)
        key = stats_key(spec)
        if key not in result.stats:
            stats, log = shared[key]
            fname = spec.get("save") or f"stats-{spec['source']}-{len(cache)}.yaml"
            if ctx.team.writer:
                with at_schedule(schedule, path + ("save",)):
                    stats.save(output_file(ctx.out_dir, fname, "a statistics file"))
            cache[key] = (stats, key)
            result.stats[key] = {"spec": {k: v for k, v in spec.items()}, "file": fname, "edits": log}
        extra = list(exp.get("stats_edits") or [])
        if extra:
            ekey = key + json.dumps(extra, sort_keys=True)
            stats, log = edit_stats(schedule, cache[key][0], extra, ("experiments", i, "stats_edits"))
            cache[ekey] = (stats, ekey)
            result.stats.setdefault(
                ekey,
                {
                    "spec": {**spec, "edits": list(spec.get("edits") or []) + extra},
                    "file": result.stats[key]["file"],
                    "edits": log,
                },
            )


def _experiment_stats_key(schedule: Schedule, exp: dict[str, Any], i: int) -> str:
    key = stats_key(_stats_for_experiment(schedule, exp, i)[0])
    extra = list(exp.get("stats_edits") or [])
    return key + json.dumps(extra, sort_keys=True) if extra else key


def _experiment_work(ctx: _Study, exp: dict[str, Any]) -> Work:
    """An experiment as a unit to place: shardable when its evaluator merges shards and batches are independent."""

    def shardable() -> bool:
        fn = EVALUATORS.get(ctx.schedule.data["evaluate"]["name"]).obj
        return can_shard_evaluator(fn) and batches_independent(ctx.model, ctx.data, "evaluation")

    # They write files; a search runs many short trials one after another and stays whole on the writer.
    pinned = bool(exp.get("export")) or rendered(ctx.schedule.data, exp["name"]) or "search" in exp
    return Work(exp["name"], shardable=lambda: "search" not in exp and shardable(), pinned_to_writer=pinned)
