"""The ``search:`` block of an experiment: its schema, its defaults and the direction-aware target.

An experiment with ``search:`` is not one configuration but a question: *which groups of layers may
take which rung of a ladder so that the metric stays within the target at the smallest size?*
(docs/search.md). This module only reads the block; strategy.py answers the question.

Example:
    >>> spec = parse_search({"target": {"max_delta_pct": 0.25}})
    >>> spec.target.met(loss_of(86.8, 86.6, higher_is_better=False), 86.6), spec.budget_trials
    (True, 400)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from compress.search.ladder import LADDERS, check_ladder

__all__ = ["SEARCH_SCHEMA", "SearchSpec", "Target", "parse_search", "loss_of", "delta_pct"]

DEFAULT_TRIALS = 400
DEFAULT_MINUTES = 15.0

_GROUP = {
    "type": "object",
    "description": "A named group of modules that always take the same rung: {name, match: <regex>}.",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"},
        "match": {"type": "string", "description": "re.fullmatch on module names."},
    },
    "required": ["name", "match"],
    "additionalProperties": False,
}

SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Search the per-group configuration that meets a target at the smallest size (docs/search.md).",
    "properties": {
        "target": {
            "type": "object",
            "description": "The largest loss allowed against the float model, in the evaluator's bad direction.",
            "properties": {
                "max_delta_pct": {"type": "number", "minimum": 0, "maximum": 1000, "description": "relative, %"},
                "max_delta": {"type": "number", "minimum": 0, "maximum": 1e12, "description": "absolute"},
            },
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
        },
        "ladder": {
            "description": "Rungs from cheapest to safest: a preset name or a list of override settings ({} = base).",
            "anyOf": [{"enum": sorted(LADDERS)}, {"type": "array", "items": {"type": "object"}, "minItems": 1}],
        },
        "groups": {"type": "array", "items": _GROUP, "maxItems": 1000},
        "objective": {"enum": ["weight_bytes"], "description": "Smallest weight bytes, then most integer ops."},
        "strategy": {"enum": ["greedy", "sensitivity"], "description": "greedy search, or sensitivity only."},
        "sensitivity": {"type": "boolean", "description": "Measure per-group sensitivity first (default true)."},
        "subset": {
            "type": "object",
            "description": "The evaluation data used while searching (the result is re-measured on all of it).",
            "properties": {
                "batches": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                "margin": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": 1,
                    "description": "On the subset the search aims for margin x the target (default 1).",
                },
            },
            "additionalProperties": False,
        },
        "budget": {
            "type": "object",
            "properties": {
                "trials": {"type": "integer", "minimum": 1, "maximum": 100_000},
                "minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 100_000},
            },
            "additionalProperties": False,
        },
    },
    "required": ["target"],
    "additionalProperties": False,
}


def loss_of(value: float, reference: float, higher_is_better: bool) -> float:
    """How much worse ``value`` is than ``reference`` in the metric's own units (> 0: worse).

    Example:
        >>> loss_of(0.90, 0.92, higher_is_better=True), loss_of(3.0, 2.0, higher_is_better=False)
        (0.020000000000000018, 1.0)
    """
    return reference - value if higher_is_better else value - reference


def delta_pct(value: float, reference: float) -> float:
    """Relative change of ``value`` against ``reference`` in % (signed, direction-free).

    Example:
        >>> delta_pct(101.0, 100.0)
        1.0
    """
    if not reference or not math.isfinite(reference):
        return math.nan
    return (value - reference) / abs(reference) * 100.0


@dataclass(frozen=True)
class Target:
    """``max_delta_pct`` (relative to the float metric) or ``max_delta`` (absolute), on the loss side."""

    kind: str  # "max_delta_pct" | "max_delta"
    limit: float

    def excess(self, loss: float, reference: float) -> float:
        """Loss beyond the target (<= 0: met), in the target's own unit.

        Example:
            >>> Target("max_delta_pct", 0.5).excess(1.0, 100.0)
            0.5
        """
        if not math.isfinite(loss):
            return math.inf
        used = loss / abs(reference) * 100.0 if self.kind == "max_delta_pct" else loss
        return used - self.limit

    def met(self, loss: float, reference: float) -> bool:
        """Whether a loss meets the target.

        Example:
            >>> Target("max_delta", 0.01).met(0.005, 0.9)
            True
        """
        return self.excess(loss, reference) <= 0

    def scaled(self, factor: float) -> Target:
        """The same target with ``factor`` x its limit (what the search aims for on its subset).

        Example:
            >>> Target("max_delta_pct", 0.25).scaled(0.8).limit
            0.2
        """
        return Target(self.kind, self.limit * factor)

    def describe(self) -> str:
        return f"loss <= {self.limit:g}%" if self.kind == "max_delta_pct" else f"loss <= {self.limit:g}"


@dataclass(frozen=True)
class SearchSpec:
    """A parsed ``search:`` block (defaults filled in)."""

    target: Target
    ladder: list[dict[str, Any]]
    ladder_name: str
    groups: list[dict[str, str]] = field(default_factory=list)
    strategy: str = "greedy"
    sensitivity: bool = True
    subset_batches: int | None = None
    subset_margin: float = 1.0
    budget_trials: int = DEFAULT_TRIALS
    budget_minutes: float = DEFAULT_MINUTES

    def target_for(self, batches: int | None) -> Target:
        """The target a trial on this data is held to: tightened by ``subset.margin`` on the subset.

        The subset is a sample of the split: a configuration just inside the target there can be just
        outside it on the whole split, so the search leaves itself that margin while it works on the subset.

        Example:
            >>> parse_search({"target": {"max_delta": 1.0}, "subset": {"batches": 4, "margin": 0.5}}).target_for(4)
            Target(kind='max_delta', limit=0.5)
        """
        return self.target if batches is None else self.target.scaled(self.subset_margin)


def parse_search(block: dict[str, Any]) -> SearchSpec:
    """A :class:`SearchSpec` from a schema-checked ``search:`` block; a bad ladder rung is a ScheduleError.

    Example:
        >>> parse_search({"target": {"max_delta": 0.01}, "ladder": "int8_grid"}).ladder_name
        'int8_grid'
    """
    ((kind, limit),) = block["target"].items()
    raw = block.get("ladder", "default")
    name, ladder = (raw, LADDERS[raw]) if isinstance(raw, str) else ("custom", list(raw))
    check_ladder(ladder)
    budget, subset = block.get("budget") or {}, block.get("subset") or {}
    return SearchSpec(
        target=Target(kind, float(limit)),
        ladder=[dict(r) for r in ladder],
        ladder_name=name,
        groups=[dict(g) for g in block.get("groups") or []],
        strategy=block.get("strategy", "greedy"),
        sensitivity=bool(block.get("sensitivity", True)),
        subset_batches=subset.get("batches"),
        subset_margin=float(subset.get("margin", 1.0)),
        budget_trials=int(budget.get("trials", DEFAULT_TRIALS)),
        budget_minutes=float(budget.get("minutes", DEFAULT_MINUTES)),
    )
