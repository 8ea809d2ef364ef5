"""The engine: the only module that knows the order of the stages.

    schedule -> build model -> load checkpoint -> convert (+ check) -> statistics
             -> for each experiment (compress/experiment.py; a search: compress/search):
                quantize a copy -> fine-tune -> evaluate -> render, export -> layer report

Every component is looked up in its registry by the name the schedule gives; stages never
import each other.

Example:
    >>> # from compress.schedule import load_schedule
    >>> # result = run(load_schedule("schedules/perf_rnn.yaml"), out_dir=Path("runs/perf_rnn"))
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from compress.distributed import Team, Work, join, place
from compress.distributed.shards import (
    StatsShards,
    batches_independent,
    can_shard_evaluator,
    gather,
    share,
)
from compress.experiment import (
    Study,
    float_reference,
    plan_rows,
    run_experiment,
    search_experiment,
    stats_for_experiment,
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
    make_quantizer,
    schedule_device,
    select_device,
    stats_key,
    timed,
)

__all__ = ["ExperimentResult", "RunResult", "run", "plan", "select_device", "DEFAULT_CONVERSION_TOLERANCE"]


# ----------------------------------------------------------------------------- orchestration


def _seed(schedule: Schedule) -> None:
    torch.manual_seed(int(schedule.data.get("seed", 0)))


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
                er.plan = plan_rows(make_quantizer(qspec, model, None))
        result.experiments.append(er)
    return result


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
    ctx = Study(
        schedule,
        model,
        data,
        device,
        calib_batch,
        result,
        progress,
        out_dir,
        float_reference(model, calib_batch),
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
            finished[i] = er = (search_experiment if "search" in exp else run_experiment)(ctx, exp, i, where[i])
            if on_experiment and team.writer:
                on_experiment(er)
    result.experiments, result.distribution["timings_by_rank"] = gather(team, finished, len(experiments), t)
    if on_experiment and team.writer:  # rows that other ranks ran, in schedule order
        for i, er in enumerate(result.experiments):
            if i not in finished:
                on_experiment(er)
    result.distribution["experiments"] = {p.name: p.how() for p in where}
    return result


def _warm_up(data: Any) -> None:
    """Read the evaluation split once, so the first experiment's time does not include building it."""
    for _ in data.batches("evaluation"):
        pass


def _stats_needed(schedule: Schedule) -> dict[str, tuple[dict[str, Any], tuple[Any, ...]]]:
    """Key -> (spec, YAML path) of every distinct statistics source an experiment uses, in schedule order."""
    needed: dict[str, tuple[dict[str, Any], tuple[Any, ...]]] = {}
    for i, exp in enumerate(schedule.data["experiments"]):
        if experiment_quantizer(schedule, exp) is not None and ("stats" in schedule.data or "stats" in exp):
            spec, path = stats_for_experiment(schedule, exp, i)
            needed.setdefault(stats_key(spec), (spec, path))
    return needed


def _statistics(ctx: Study) -> None:
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


def _stats_shardable(ctx: Study, spec: dict[str, Any]) -> bool:
    source = STATS_SOURCES.get(spec["source"]).obj
    return getattr(source, "shardable", False) is True and batches_independent(ctx.model, ctx.data, "calibration")


def _register_stats(ctx: Study, needed: dict[str, Any], shared: dict[str, tuple[Any, list[str]]]) -> None:
    """Save (on the writer) and cache every source's statistics and every experiment's edited copy."""
    schedule, result, cache = ctx.schedule, ctx.result, ctx.stats_cache
    for i, exp in enumerate(schedule.data["experiments"]):
        if experiment_quantizer(schedule, exp) is None or not ("stats" in schedule.data or "stats" in exp):
            continue
        spec, path = stats_for_experiment(schedule, exp, i)
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


def _experiment_work(ctx: Study, exp: dict[str, Any]) -> Work:
    """An experiment as a unit to place: shardable when its evaluator merges shards and batches are independent."""

    def shardable() -> bool:
        fn = EVALUATORS.get(ctx.schedule.data["evaluate"]["name"]).obj
        return can_shard_evaluator(fn) and batches_independent(ctx.model, ctx.data, "evaluation")

    # They write files; a search runs many short trials one after another and stays whole on the writer.
    pinned = bool(exp.get("export")) or rendered(ctx.schedule.data, exp["name"]) or "search" in exp
    return Work(exp["name"], shardable=lambda: "search" not in exp and shardable(), pinned_to_writer=pinned)
