r"""Groups: the units a sensitivity analysis measures and a search configures.

By default every module the base plan quantizes is its own group (the RNN internals of a modular cell,
``rnn.cells.0.eltwisemult_cell_forget``, are modules, so each is a group of its own). A schedule may
name groups by regex (``{name: forget, match: 'rnn\.cells\.\d+\.eltwisemult_cell_forget'}``): a module
joins the first named group whose regex it fully matches; the others stay one group each.

A configuration gives each group a rung index (see ladder.py); :func:`overrides_for` turns it into
override rules, one per group above rung 0, naming its modules exactly and placed before the
experiment's own rules.

Example:
    >>> plan = [{"name": "a.x", "kind": "linear"}, {"name": "b.x", "kind": "linear"}, {"name": "c", "kind": "none"}]
    >>> gs = build_groups(plan, [{"name": "xs", "match": r".*\.x"}])
    >>> [(g.name, g.modules) for g in gs]
    [('xs', ('a.x', 'b.x'))]
    >>> overrides_for(gs, (1,), [{}, {"fp16": True}], [])
    [{'match': 'a\\.x|b\\.x', 'fp16': True}]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from compress.errors import ScheduleError

__all__ = [
    "Group",
    "build_groups",
    "overrides_for",
    "isolate_overrides",
    "float_overrides",
    "prune",
    "integer_ops",
    "INTEGER_KINDS",
]

#: Plan kinds that run on an integer grid (what "most integer ops" counts).
INTEGER_KINDS = ("linear", "embedding", "eltwise_add", "eltwise_mult", "concat", "fake")


@dataclass(frozen=True)
class Group:
    """A named set of modules that always take the same rung."""

    name: str
    modules: tuple[str, ...]

    def match(self) -> str:
        """A regex that fully matches exactly this group's modules."""
        return "|".join(re.escape(m) for m in self.modules)


def build_groups(plan: Sequence[dict[str, Any]], named: Sequence[dict[str, str]]) -> list[Group]:
    """The groups of a base plan: named regex groups first-match, every other quantized module alone.

    Groups come in the order of their first module in the plan (the model's module order).
    """
    quantized = [row["name"] for row in plan if row["kind"] != "none"]
    patterns = [(g["name"], re.compile(g["match"])) for g in named]
    members: dict[str, list[str]] = {}
    for module in quantized:
        owner = next((name for name, pat in patterns if pat.fullmatch(module)), module)
        members.setdefault(owner, []).append(module)
    empty = [name for name, _ in patterns if name not in members]
    if empty:
        raise ScheduleError(
            f"search.groups: group '{empty[0]}' matches no quantized module of the base plan (re.fullmatch); quantized "
            f"modules look like: {', '.join(quantized[:4])}. Fix its regex or remove the group."
        )
    return [Group(name, tuple(mods)) for name, mods in members.items()]


def overrides_for(
    groups: Sequence[Group], config: Sequence[int], ladder: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Override rules for ``config`` (one rung index per group): the groups' rules, then ``base``."""
    rules = [{"match": g.match(), **ladder[k]} for g, k in zip(groups, config, strict=True) if k > 0]
    return rules + [dict(r) for r in base]


def isolate_overrides(groups: Sequence[Group], keep: int, base: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules leaving every group float except group ``keep`` (sensitivity: only this group quantized)."""
    others = [m for i, g in enumerate(groups) if i != keep for m in g.modules]
    head = [{"match": "|".join(re.escape(m) for m in others), "none": True}] if others else []
    return head + [dict(r) for r in base]


def float_overrides(groups: Sequence[Group], which: int, base: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules leaving only group ``which`` float (sensitivity: everything else quantized)."""
    return [{"match": groups[which].match(), "none": True}] + [dict(r) for r in base]


def integer_ops(plan: Sequence[dict[str, Any]]) -> int:
    """How many modules of a plan run on an integer grid.

    Example:
        >>> integer_ops([{"kind": "linear"}, {"kind": "float"}, {"kind": "eltwise_add"}])
        2
    """
    return sum(1 for row in plan if row["kind"] in INTEGER_KINDS)


def prune(rules: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """``rules`` without those that win no module (a base rule whose modules a group rule took).

    Such a rule changes nothing, but the quantizer refuses rules that never apply (see plan.py).

    Example:
        >>> prune([{"match": "a", "fp16": True}, {"match": "a|b", "none": True}, {"match": "a"}], ["a", "b"])
        [{'match': 'a', 'fp16': True}, {'match': 'a|b', 'none': True}]
    """
    patterns = [re.compile(r["match"]) for r in rules]
    won = {next((i for i, p in enumerate(patterns) if p.fullmatch(n)), None) for n in names}
    return [r for i, r in enumerate(rules) if i in won]
