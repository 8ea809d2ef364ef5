"""Built-in stats sources (``STATS_SOURCES``): ``collect``, ``generate`` and ``file``.

Each is ``fn(ctx: StatsContext, **args) -> Stats``. ``collect`` and ``generate`` run the data
twice (the second pass computes ``b`` around the final mean, see `compress.stats.accumulate`):
``collect`` reads the calibration batches again (datasets are deterministic), ``generate``
re-runs the sampler with a generator seeded again with ``ctx.seed``.

Example:
    >>> from compress.registry import STATS_SOURCES
    >>> sorted(n for n in STATS_SOURCES.names() if n in ("collect", "file", "generate"))
    ['collect', 'file', 'generate']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import StatsError
from compress.registry import STATS_SOURCES
from compress.stats.collector import collect_stats, limit
from compress.stats.stats import Stats, make_header, model_fingerprint
from compress.stats.statsfile import load_stats

__all__ = ["StatsContext", "collect_source", "generate_source", "file_source"]

_BINS = {"type": "integer", "minimum": 1, "maximum": 1 << 20, "description": "Add a histogram with this many bins."}


@dataclass
class StatsContext:
    """What a stats source may use.

    Attributes:
        model: the (converted) float model to collect statistics of.
        data: the dataset's DataSource (``batches(split)``, ``num_batches(split)``).
        device: the device the model runs on.
        seed: the schedule's seed (``generate`` seeds its generator with it).
        progress: show progress bars.
        base_dir: the schedule's folder; relative paths resolve against it.
        shards: None, or (when the engine shards this source over processes) an object with
            ``batches(make) -> make``, ``count(total) -> int`` and ``reduce(pass, collector)``; see
            `compress.distributed.shards.StatsShards`. Only sources marked ``shardable`` receive one.

    Example:
        >>> ctx = StatsContext(nn.Linear(1, 1), data=None, device="cpu", seed=0, progress=False, base_dir=Path("."))
        >>> ctx.seed
        0
    """

    model: nn.Module
    data: Any
    device: torch.device | str
    seed: int
    progress: bool
    base_dir: Path
    shards: Any = None


@STATS_SOURCES.register(
    "collect",
    schema={
        "type": "object",
        "properties": {
            "batches": {
                "type": "integer",
                "minimum": 1,
                "maximum": 1_000_000,
                "description": "Calibration batches to use (default: all).",
            },
            "histogram_bins": _BINS,
        },
        "additionalProperties": False,
    },
    description="Collect statistics by scoring the dataset's calibration batches (state carried).",
)
def collect_source(ctx: StatsContext, batches: int | None = None, histogram_bins: int | None = None) -> Stats:
    """Score the first ``batches`` calibration batches (all when omitted) twice and collect statistics.

    Example:
        >>> class Data:
        ...     def batches(self, split): return iter([torch.ones(2, 3), torch.zeros(2, 3)])
        ...     def num_batches(self, split): return 2
        >>> ctx = StatsContext(nn.Linear(3, 1), Data(), "cpu", 0, False, Path("."))
        >>> collect_source(ctx, batches=1)[""]["inputs"][0]["total_numel"]
        6
    """
    available = ctx.data.num_batches("calibration")
    if batches is not None and batches > available:
        raise StatsError(
            f"Stats source 'collect' asks for {batches} calibration batches but the dataset has {available}. "
            "Lower 'batches' or raise the dataset's number of calibration batches."
        )
    source, total = limit(lambda: ctx.data.batches("calibration"), batches), batches or available
    header = _header(ctx, "collect", {"batches": total, "histogram_bins": histogram_bins})
    reduce = None
    if ctx.shards is not None:  # this process reads its share of the batches; the passes are merged
        source, total, reduce = ctx.shards.batches(source), ctx.shards.count(total), ctx.shards.reduce
    return collect_stats(
        ctx.model, source, None, histogram_bins, progress=ctx.progress, total=total, header=header, reduce=reduce
    )


# Sharding the calibration batches gives the one-process statistics (see compress.distributed.shards);
# 'generate' is one seeded sampler run, which cannot be split without changing its draws.
collect_source.shardable = True  # type: ignore[attr-defined]


@STATS_SOURCES.register(
    "generate",
    schema={
        "type": "object",
        "properties": {
            "batch_size": {
                "type": "integer",
                "minimum": 1,
                "maximum": 4096,
                "description": "Sequences sampled at once (default 64).",
            },
            "steps": {
                "type": "integer",
                "minimum": 1,
                "maximum": 100_000,
                "description": "Time steps sampled (default 100).",
            },
            "histogram_bins": _BINS,
        },
        "additionalProperties": False,
    },
    description="Collect statistics while the model samples from seeded random initial inputs.",
)
def generate_source(
    ctx: StatsContext, batch_size: int = 64, steps: int = 100, histogram_bins: int | None = None
) -> Stats:
    """Run ``model.sample_for_calibration(batch_size, steps, generator)`` twice with the same seed.

    Example:
        >>> class Sampler(nn.Linear):
        ...     def sample_for_calibration(self, batch_size, steps, generator):
        ...         self(torch.randn(steps * batch_size, 2, generator=generator))
        >>> ctx = StatsContext(Sampler(2, 2), None, "cpu", 0, False, Path("."))
        >>> generate_source(ctx, batch_size=4, steps=3)[""]["inputs"][0]["total_numel"]
        24
    """
    if not callable(getattr(ctx.model, "sample_for_calibration", None)):
        raise StatsError(
            f"Stats source 'generate' needs a model with sample_for_calibration(batch_size, steps, generator); "
            f"{type(ctx.model).__name__} has none (the method is optional: only this source calls it). Use "
            "'source: collect', which calibrates on the dataset's calibration batches, or add the method."
        )
    args = {"batch_size": batch_size, "steps": steps, "histogram_bins": histogram_bins}
    return collect_stats(
        ctx.model,
        lambda: _seeded_runs(ctx.seed),
        lambda model, gen: model.sample_for_calibration(batch_size, steps, gen),
        histogram_bins,
        progress=ctx.progress,
        total=1,
        header=_header(ctx, "generate", args),
    )


def _seeded_runs(seed: int) -> Iterator[torch.Generator]:
    # A fresh generator per pass: both passes then sample exactly the same sequences.
    yield torch.Generator().manual_seed(seed)


@STATS_SOURCES.register(
    "file",
    schema={
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "Stats YAML file, relative to the schedule."},
            "force": {"type": "boolean", "description": "Use the file even if made for another model (false)."},
        },
        "required": ["path"],
        "additionalProperties": False,
    },
    description="Load statistics from a YAML file (compress's or the old tool's format).",
)
def file_source(ctx: StatsContext, path: str, force: bool = False) -> Stats:
    """Load ``path`` (relative to ``ctx.base_dir``) and check it was made for ``ctx.model``.

    Example:
        >>> import tempfile
        >>> model, folder = nn.Linear(1, 1), Path(tempfile.mkdtemp())
        >>> _ = Stats({}, make_header(model_fingerprint(model), "python", {}, None)).save(folder / "s.yaml")
        >>> file_source(StatsContext(model, None, "cpu", 0, False, folder), path="s.yaml").header["source"]
        'python'
    """
    stats = load_stats(Path(ctx.base_dir) / path)
    stats.check_model(ctx.model, force=force)
    return stats


def _header(ctx: StatsContext, source: str, args: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in args.items() if v is not None}
    return make_header(model_fingerprint(ctx.model), source, kept, ctx.seed)
