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

import contextlib
import copy
import inspect
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from compress.distributed import Placement, Team, Work, join, place
from compress.distributed.shards import (
    StatsShards,
    batches_independent,
    can_shard_evaluator,
    gather,
    sharded_evaluate,
    share,
)
from compress.errors import CompressError, ConversionError, ModelError, QuantizationError
from compress.fileio import output_file, prepare_output_dir
from compress.registry import CONVERTERS, DATASETS, EVALUATORS, MODELS, QUANTIZERS, STATS_SOURCES
from compress.results import ExperimentResult, RunResult
from compress.schedule import Schedule, overrides_path
from compress.utils import weight_bytes

if TYPE_CHECKING:  # the quant stage is imported where it is used, as for save_quantized
    from compress.quant import FloatReference

__all__ = ["ExperimentResult", "RunResult", "run", "plan", "select_device", "DEFAULT_CONVERSION_TOLERANCE"]

# Max abs logit difference accepted after converting nn.LSTM/GRU to the modular version: the
# old tool's notebook printed 6e-6 on a 1500-wide model; float32 reassociation over a few
# hundred steps stays well below 1e-4 on our models (measured ~1e-6).
DEFAULT_CONVERSION_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _at(schedule: Schedule, path: tuple[Any, ...]) -> Iterator[None]:
    """Prefix user errors raised inside with the schedule location that caused them."""
    try:
        yield
    except CompressError as exc:
        raise type(exc)(f"{schedule.where(path)}: {exc}") from exc


@contextlib.contextmanager
def _at_quantizer(schedule: Schedule, i: int) -> Iterator[None]:
    """As ``_at`` at experiment ``i``, but an error about one override rule points at that rule's ``match``."""
    try:
        yield
    except CompressError as exc:
        rule = exc.rule if isinstance(exc, QuantizationError) else None
        rules = overrides_path(schedule, i) if rule is not None else None
        if rules is None:
            raise type(exc)(f"{schedule.where(('experiments', i))}: {exc}") from exc
        where, name = schedule.where(rules + (rule, "match")), schedule.data["experiments"][i]["name"]
        # A base rule is shared by every experiment: say which one was being built when it failed.
        inherited = "" if rules[:2] == ("experiments", i) else f"experiment '{name}': "
        raise type(exc)(f"{where}: {inherited}{exc}") from exc


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def select_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``; ``cuda[:N]`` (an error if absent)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise CompressError(f"device '{spec}' was asked for but CUDA is not available here; use 'auto' or 'cpu'.")
    index = spec.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise CompressError(
            f"device '{spec}' was asked for but this machine has {torch.cuda.device_count()} CUDA device(s); "
            "use 'cuda' or an index below that."
        )
    return torch.device(spec)


def _device(schedule: Schedule) -> torch.device:
    with _at(schedule, ("device",)):
        return select_device(schedule.data.get("device", "auto"))


def _component(block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return block["name"], dict(block.get("args") or {})


def resolve_path_args(schedule: Schedule, args: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Args whose schema says ``"format": "path"`` are made absolute against the schedule's folder."""
    out = dict(args)
    for key, sub in schema.get("properties", {}).items():
        if isinstance(sub, dict) and sub.get("format") == "path" and isinstance(out.get(key), str):
            out[key] = str(schedule.resolve_path(out[key]))
    return out


def _convert_items(schedule: Schedule) -> list[tuple[str, dict[str, Any], float]]:
    items = []
    for item in schedule.data.get("convert") or []:
        if isinstance(item, str):
            items.append((item, {}, DEFAULT_CONVERSION_TOLERANCE))
        else:
            items.append(
                (item["name"], dict(item.get("args") or {}), item.get("tolerance", DEFAULT_CONVERSION_TOLERANCE))
            )
    return items


# ----------------------------------------------------------------------------- stages


def build_model(schedule: Schedule, device: torch.device) -> torch.nn.Module:
    """Build the model from its registered factory and load its checkpoint."""
    block = schedule.data["model"]
    name, args = _component(block)
    ckpt = block.get("checkpoint")
    path = schedule.resolve_path(ckpt) if ckpt else None
    if path is not None and not path.is_file():
        with _at(schedule, ("model", "checkpoint")):
            raise ModelError(f"the checkpoint file {path} does not exist. Fix the path (relative to the schedule).")
    with _at(schedule, ("model",)):
        entry = MODELS.get(name)
        model = entry.obj(checkpoint=path, **resolve_path_args(schedule, args, entry.schema))
    return model.to(device).eval()


def build_data(schedule: Schedule) -> Any:
    """The DataSource named by the schedule's ``data`` block."""
    name, args = _component(schedule.data["data"])
    with _at(schedule, ("data",)):
        entry = DATASETS.get(name)
        return entry.obj(**resolve_path_args(schedule, args, entry.schema))


def check_data(schedule: Schedule, model: torch.nn.Module, data: Any) -> None:
    """Let a model refuse data it cannot score (e.g. a word LM and a corpus with another vocabulary)."""
    check = getattr(model, "check_data", None)
    if callable(check):
        with _at(schedule, ("data",)):
            check(data)


def _first_batch(data: Any, split: str) -> Any:
    return next(iter(data.batches(split)))


def _max_output_error(a: torch.nn.Module, b: torch.nn.Module, batch: Any) -> float:
    with torch.no_grad():
        ya, _ = a.forward_batch(batch, None)
        yb, _ = b.forward_batch(batch, None)
    return float((ya.double() - yb.double()).abs().max())


def convert(schedule: Schedule, model: torch.nn.Module, data: Any) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Apply every conversion policy in order; each is checked against the model before it."""
    records = []
    batch = _first_batch(data, "evaluation")
    for i, (name, args, tol) in enumerate(_convert_items(schedule)):
        with _at(schedule, ("convert", i)):
            new, replaced = CONVERTERS.get(name).obj(copy.deepcopy(model), **args)
            err = _max_output_error(model, new, batch)
            if not err <= tol:
                raise ConversionError(
                    f"after '{name}' the model's outputs differ from the unconverted model by {err:.3g} "
                    f"(allowed {tol:g}). The conversion is not faithful; report it, or raise 'tolerance'."
                )
        records.append({"policy": name, "replaced": replaced, "max_abs_error": err, "tolerance": tol})
        model = new.eval()
    return model, records


def _stats_key(spec: dict[str, Any]) -> str:
    return json.dumps({"source": spec["source"], "args": spec.get("args") or {}}, sort_keys=True)


def collect_stats(
    schedule: Schedule,
    spec: dict[str, Any],
    path: tuple[Any, ...],
    model: torch.nn.Module,
    data: Any,
    device: torch.device,
    progress: bool,
    shards: Any = None,
) -> Any:
    """Statistics from the named source (collect / generate / file); ``shards``: see ``StatsContext``."""
    from compress.stats import StatsContext  # the stats package owns the context type

    ctx = StatsContext(
        model=model,
        data=data,
        device=device,
        seed=int(schedule.data.get("seed", 0)),
        progress=progress,
        base_dir=schedule.base_dir,
        shards=shards,
    )
    with _at(schedule, path):
        entry = STATS_SOURCES.get(spec["source"])
        return entry.obj(ctx, **resolve_path_args(schedule, dict(spec.get("args") or {}), entry.schema))


def edit_stats(
    schedule: Schedule, stats: Any, rules: list[dict[str, Any]], path: tuple[Any, ...]
) -> tuple[Any, list[str]]:
    """Apply declarative stats edits (the notebook's hand-edited file, as rules)."""
    from compress.stats import apply_edits

    if not rules:
        return stats, []
    with _at(schedule, path):
        return apply_edits(stats, rules)


def experiment_quantizer(schedule: Schedule, exp: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved quantizer block of an experiment (None = the float model)."""
    if "quantizer" in exp:
        q = exp["quantizer"]
        return (
            None
            if q is None
            else {"name": q["name"], "args": dict(q.get("args") or {}), "overrides": list(q.get("overrides") or [])}
        )
    base = schedule.data["quantizer"]
    args = {**(base.get("args") or {}), **(exp.get("args") or {})}
    overrides = exp["overrides"] if "overrides" in exp else list(base.get("overrides") or [])
    return {"name": base["name"], "args": args, "overrides": list(overrides)}


def make_quantizer(qspec: dict[str, Any], model: torch.nn.Module, stats: Any) -> Any:
    """Instantiate the registered quantizer class for ``qspec`` on ``model``."""
    kwargs = dict(qspec["args"])
    if qspec["overrides"]:
        kwargs["overrides"] = qspec["overrides"]
    return QUANTIZERS.get(qspec["name"]).obj(model, stats=stats, **kwargs)


def _uses_stats(qspec: dict[str, Any]) -> bool:
    """Whether the quantizer reads calibration statistics (a class may say ``uses_stats = False``, as ``cast``)."""
    return bool(getattr(QUANTIZERS.get(qspec["name"]).obj, "uses_stats", True))


def evaluate(
    schedule: Schedule, model: torch.nn.Module, data: Any, progress: bool, shard_over: Team | None = None
) -> tuple[dict[str, Any], float]:
    """Run the evaluator (on this rank's share of the batches, merged, when ``shard_over`` is given).

    Returns its result and the wall time in seconds.
    """
    name, args = _component(schedule.data["evaluate"])
    start = time.perf_counter()
    with _at(schedule, ("evaluate",)):
        fn = EVALUATORS.get(name).obj
        result = (
            sharded_evaluate(shard_over, fn, model, data, progress, args)
            if shard_over
            else fn(model, data, progress=progress, **args)
        )
    return result, time.perf_counter() - start


# ----------------------------------------------------------------------------- orchestration


def _seed(schedule: Schedule) -> None:
    torch.manual_seed(int(schedule.data.get("seed", 0)))


def _plan_rows(q: Any) -> list[dict[str, Any]]:
    """The quantizer's plan as plain rows (built-ins return dataclasses, plugins may return dicts)."""
    return [dict(p) if isinstance(p, dict) else dict(vars(p)) for p in q.resolve_plan()]


def plan(schedule: Schedule, *, progress: bool = False) -> RunResult:
    """Resolve everything (model, conversion, per-experiment layer plan) without calibrating or evaluating."""
    _seed(schedule)
    device = _device(schedule)
    result = RunResult(schedule, str(device))
    model = build_model(schedule, device)
    data = build_data(schedule)
    check_data(schedule, model, data)
    model, result.conversions = convert(schedule, model, data)
    for i, exp in enumerate(schedule.data["experiments"]):
        qspec = experiment_quantizer(schedule, exp)
        er = ExperimentResult(exp["name"], {"quantizer": qspec})
        if qspec is not None:
            with _at_quantizer(schedule, i):
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
    device = _device(schedule)
    prepare_output_dir(out_dir)  # before any work: an --out that cannot be a folder fails at once
    result = RunResult(schedule, str(device), distribution=team.describe())
    t = result.timings
    with _timed(t, "build"):
        float_model = build_model(schedule, device)
        data = build_data(schedule)
        check_data(schedule, float_model, data)
    tensors = {v.data_ptr(): v for v in float_model.state_dict().values()}  # tied weights count once
    result.checkpoint_bytes = sum(v.numel() * v.element_size() for v in tensors.values())
    with _timed(t, "convert"):
        model, result.conversions = convert(schedule, float_model, data)
    _warm_up(data)
    calib_batch = _first_batch(data, "calibration")
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
    with _timed(t, "stats"):
        _statistics(ctx)
    experiments = schedule.data["experiments"]
    where = place([_experiment_work(ctx, exp) for exp in experiments], team.size, team.placement)
    finished: dict[int, ExperimentResult] = {}
    for i, exp in enumerate(experiments):
        if where[i].here(team.rank):
            finished[i] = er = _run_experiment(ctx, exp, i, where[i])
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


def _run_experiment(ctx: _Study, exp: dict[str, Any], i: int, where: Placement) -> ExperimentResult:
    schedule, model, result = ctx.schedule, ctx.model, ctx.result
    t = result.timings
    qspec = experiment_quantizer(schedule, exp)
    er = ExperimentResult(exp["name"], {"quantizer": qspec})
    qmodel, quantizer = model, None
    if qspec is not None:
        stats = None
        if ("stats" in schedule.data or "stats" in exp) and _uses_stats(qspec):
            with _timed(t, "stats"):
                stats, er.stats_key = ctx.stats_cache[_experiment_stats_key(ctx.schedule, exp, i)]
        with _timed(t, "quantize"), _at_quantizer(schedule, i):
            quantizer = make_quantizer(qspec, model, stats)
            er.plan = _plan_rows(quantizer)
            qmodel = quantizer.prepare_model().eval()
            er.notes = list(getattr(quantizer, "log", []))
    with _timed(t, "evaluate"):
        ev, er.eval_seconds = evaluate(schedule, qmodel, ctx.data, ctx.progress, ctx.team if where.sharded else None)
    er.metric, er.value, er.metrics = ev["metric"], float(ev["value"]), dict(ev.get("metrics", {}))
    er.higher_is_better = bool(ev.get("higher_is_better", False))
    er.weight_bytes = weight_bytes(qmodel)
    if exp.get("export"):
        from compress.quant import save_quantized  # the artifact format belongs to the quant stage

        with _timed(t, "export"), _at(schedule, ("experiments", i, "export")):
            er.artifact_bytes = save_quantized(qmodel, output_file(ctx.out_dir, f"{er.name}.qpt", "an artifact"))
    if quantizer is not None and where.reports(ctx.team.rank):  # a sharded experiment reports on rank 0 only
        with _timed(t, "layer_report"):
            er.layers = _layer_records(ctx, quantizer)
    er.settings["stats"] = result.stats.get(er.stats_key or "", {}).get("spec")
    return er


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
    if _accepts_reference(records):
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
            needed.setdefault(_stats_key(spec), (spec, path))
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
        key = _stats_key(spec)
        if key not in result.stats:
            stats, log = shared[key]
            fname = spec.get("save") or f"stats-{spec['source']}-{len(cache)}.yaml"
            if ctx.team.writer:
                with _at(schedule, path + ("save",)):
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
    key = _stats_key(_stats_for_experiment(schedule, exp, i)[0])
    extra = list(exp.get("stats_edits") or [])
    return key + json.dumps(extra, sort_keys=True) if extra else key


def _experiment_work(ctx: _Study, exp: dict[str, Any]) -> Work:
    """An experiment as a unit to place: shardable when its evaluator merges shards and batches are independent."""

    def shardable() -> bool:
        fn = EVALUATORS.get(ctx.schedule.data["evaluate"]["name"]).obj
        return can_shard_evaluator(fn) and batches_independent(ctx.model, ctx.data, "evaluation")

    return Work(exp["name"], shardable=shardable, pinned_to_writer=bool(exp.get("export")))
