"""The stages the engine runs, one function each: build, convert and check, statistics, quantizer, evaluation.

Each stage looks its components up in the registries by the names the schedule gives and reports a user
error at the schedule line that caused it. The order of the stages is the engine's alone
(compress/engine.py); nothing here calls another stage.

Example:
    >>> select_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from compress.distributed import Team
from compress.distributed.shards import (
    sharded_evaluate,
)
from compress.errors import CompressError, ConversionError, ModelError, QuantizationError
from compress.registry import CONVERTERS, DATASETS, EVALUATORS, MODELS, QUANTIZERS, STATS_SOURCES
from compress.schedule import Schedule, overrides_path

if TYPE_CHECKING:  # the quant stage is imported where it is used, as for save_quantized
    pass


# Max abs logit difference accepted after converting nn.LSTM/GRU to the modular version: the
# old tool's notebook printed 6e-6 on a 1500-wide model; float32 reassociation over a few
# hundred steps stays well below 1e-4 on our models (measured ~1e-6).
DEFAULT_CONVERSION_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def at_schedule(schedule: Schedule, path: tuple[Any, ...]) -> Iterator[None]:
    """Prefix user errors raised inside with the schedule location that caused them."""
    try:
        yield
    except CompressError as exc:
        raise type(exc)(f"{schedule.where(path)}: {exc}") from exc


@contextlib.contextmanager
def at_quantizer(schedule: Schedule, i: int) -> Iterator[None]:
    """As ``at_schedule`` at experiment ``i``, but an error about one override rule points at that rule's ``match``."""
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
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
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


def schedule_device(schedule: Schedule) -> torch.device:
    with at_schedule(schedule, ("device",)):
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
        with at_schedule(schedule, ("model", "checkpoint")):
            raise ModelError(f"the checkpoint file {path} does not exist. Fix the path (relative to the schedule).")
    with at_schedule(schedule, ("model",)):
        entry = MODELS.get(name)
        model = entry.obj(checkpoint=path, **resolve_path_args(schedule, args, entry.schema))
    return model.to(device).eval()


def build_data(schedule: Schedule) -> Any:
    """The DataSource named by the schedule's ``data`` block."""
    name, args = _component(schedule.data["data"])
    with at_schedule(schedule, ("data",)):
        entry = DATASETS.get(name)
        return entry.obj(**resolve_path_args(schedule, args, entry.schema))


def check_data(schedule: Schedule, model: torch.nn.Module, data: Any) -> None:
    """Let a model refuse data it cannot score (e.g. a word LM and a corpus with another vocabulary)."""
    check = getattr(model, "check_data", None)
    if callable(check):
        with at_schedule(schedule, ("data",)):
            check(data)


def first_batch(data: Any, split: str) -> Any:
    return next(iter(data.batches(split)))


class _FirstBatches:
    """A data source whose evaluation split is cut to its first ``n`` batches (a search's subset)."""

    def __init__(self, data: Any, n: int) -> None:
        self._data, self._n = data, n

    def batches(self, split: str) -> Iterator[Any]:
        for k, batch in enumerate(self._data.batches(split)):
            if split == "evaluation" and k >= self._n:
                return
            yield batch

    def num_batches(self, split: str) -> int:
        total = self._data.num_batches(split)
        return min(total, self._n) if split == "evaluation" else total

    def __getattr__(self, name: str) -> Any:  # everything else is the source's own (vocabulary, sampling, ...)
        return getattr(self._data, name)


def first_batches(data: Any, n: int | None) -> Any:
    """``data`` with its evaluation split cut to the first ``n`` batches (``n`` None: all of ``data``).

    Example:
        >>> class D:
        ...     def batches(self, split): return iter(range(5))
        ...     def num_batches(self, split): return 5
        >>> cut = first_batches(D(), 2)
        >>> list(cut.batches("evaluation")), cut.num_batches("evaluation"), list(cut.batches("calibration"))
        ([0, 1], 2, [0, 1, 2, 3, 4])
    """
    return data if n is None else _FirstBatches(data, n)


def _max_output_error(a: torch.nn.Module, b: torch.nn.Module, batch: Any) -> float:
    with torch.no_grad():
        ya, _ = a.forward_batch(batch, None)
        yb, _ = b.forward_batch(batch, None)
    return float((ya.double() - yb.double()).abs().max())


def convert(schedule: Schedule, model: torch.nn.Module, data: Any) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Apply every conversion policy in order; each is checked against the model before it."""
    records = []
    batch = first_batch(data, "evaluation")
    for i, (name, args, tol) in enumerate(_convert_items(schedule)):
        with at_schedule(schedule, ("convert", i)):
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


def stats_key(spec: dict[str, Any]) -> str:
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
    with at_schedule(schedule, path):
        entry = STATS_SOURCES.get(spec["source"])
        return entry.obj(ctx, **resolve_path_args(schedule, dict(spec.get("args") or {}), entry.schema))


def edit_stats(
    schedule: Schedule, stats: Any, rules: list[dict[str, Any]], path: tuple[Any, ...]
) -> tuple[Any, list[str]]:
    """Apply declarative stats edits (the notebook's hand-edited file, as rules)."""
    from compress.stats import apply_edits

    if not rules:
        return stats, []
    with at_schedule(schedule, path):
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


def uses_stats(qspec: dict[str, Any]) -> bool:
    """Whether the quantizer reads calibration statistics (a class may say ``uses_stats = False``, as ``cast``)."""
    return bool(getattr(QUANTIZERS.get(qspec["name"]).obj, "uses_stats", True))


def evaluate(
    schedule: Schedule,
    model: torch.nn.Module,
    data: Any,
    progress: bool,
    shard_over: Team | None = None,
    reference: torch.nn.Module | None = None,
    also: bool = True,
) -> tuple[dict[str, Any], float]:
    """Run the evaluator (on this rank's share of the batches, merged, when ``shard_over`` is given), then
    each ``also_evaluate`` evaluator (on all the batches; not when ``also`` is False, as in a search trial),
    whose metrics join the result's as extras.

    An evaluator that declares ``wants_reference = True`` (e.g. ``rollout``) also gets the float model
    ``reference``. Returns the result (``extra_metrics`` names what ``also_evaluate`` added) and the wall
    time in seconds.
    """
    start = time.perf_counter()
    with at_schedule(schedule, ("evaluate",)):
        result = _run_evaluator(schedule.data["evaluate"], model, data, progress, shard_over, reference)
    for k, block in enumerate(schedule.data.get("also_evaluate") or [] if also else []):
        with at_schedule(schedule, ("also_evaluate", k)):
            result = with_extra(result, _run_evaluator(block, model, data, progress, None, reference))
    return result, time.perf_counter() - start


def _run_evaluator(
    block: dict[str, Any], model: torch.nn.Module, data: Any, progress: bool, shard_over: Team | None,
    reference: torch.nn.Module | None,
) -> dict[str, Any]:  # fmt: skip
    name, args = _component(block)
    fn = EVALUATORS.get(name).obj
    if getattr(fn, "wants_reference", False) is True:
        args["reference"] = reference
    if shard_over:
        return sharded_evaluate(shard_over, fn, model, data, progress, args)
    return fn(model, data, progress=progress, **args)


def with_extra(result: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``result`` with a second evaluator's main metric and extras added to its ``metrics``.

    A name the result already has gets the second evaluator's metric name in front.

    Example:
        >>> r = with_extra({"metric": "ppl", "value": 2.0, "metrics": {}}, {"metric": "kl", "value": 0.1})
        >>> r["metrics"], r["extra_metrics"]
        ({'kl': 0.1}, ['kl'])
    """
    metrics, added = dict(result.get("metrics", {})), list(result.get("extra_metrics", []))
    items = {extra["metric"]: extra["value"], **dict(extra.get("metrics", {}))}
    for key, value in items.items():
        name = key if key not in metrics and key != result.get("metric") else f"{extra['metric']}.{key}"
        metrics[name] = float(value)
        added.append(name)
    return {**result, "metrics": metrics, "extra_metrics": added}
