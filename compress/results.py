"""What a run produced, stage by stage: the data passed from the engine to the report.

Example:
    >>> ExperimentResult("fp32", {"quantizer": None}).value
    nan
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compress.schedule import Schedule

__all__ = ["ExperimentResult", "RunResult"]


@dataclass
class ExperimentResult:
    """What one experiment produced."""

    name: str
    settings: dict[str, Any]
    metric: str = ""
    value: float = float("nan")
    metrics: dict[str, float] = field(default_factory=dict)
    extra_metrics: list[str] = field(default_factory=list)  # names in ``metrics`` from also_evaluate evaluators
    higher_is_better: bool = False  # the evaluator's declared direction (perplexity: lower is better)
    unit: str = ""  # "fraction": a bounded metric in [0, 1] such as accuracy; report Δ in points too
    eval_seconds: float = 0.0
    weight_bytes: int = 0
    artifact_bytes: int | None = None  # size on disk of the exported <name>.qpt (experiments with export: true)
    layers: list[dict[str, Any]] = field(default_factory=list)
    plan: list[dict[str, Any]] = field(default_factory=list)
    stats_key: str | None = None
    notes: list[str] = field(default_factory=list)
    search: dict[str, Any] | None = None  # a search experiment's outcome (compress/search/search.py)


@dataclass
class RunResult:
    """Everything a run produced, in stage order."""

    schedule: Schedule
    device: str
    conversions: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: list[ExperimentResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    checkpoint_bytes: int = 0  # the float model's state dict (what its fp32 checkpoint stores)
    # processes, backend, where each statistics source and experiment ran, each rank's stage times
    distribution: dict[str, Any] = field(default_factory=dict)
    renders: dict[str, list[str]] = field(default_factory=dict)  # "float" / experiment -> generated files
