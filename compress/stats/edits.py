"""Declarative edits of statistics: the notebook's hand-edited "clip the gate inputs to ±6" file, as rules.

A rule names modules by a regex (full match on the module name), which tensors (``inputs``,
``output`` or ``all``, the default), and either values to ``set`` or an interval to ``clip``
to. ``clip: [lo, hi]`` intersects each of ``[min, max]`` and ``[avg_min, avg_max]`` with
``[lo, hi]``; a range entirely outside the interval collapses onto the nearer bound. Only
range keys are clipped: ``mean``, ``std``, ``b`` and the histogram still describe the data.
Rules apply in order, so a later rule sees what an earlier one wrote. A rule matching no
tensor is an error (a misspelt name must not pass silently).

Example:
    >>> from compress.stats.stats import Stats
    >>> s = Stats({"act_i": {"inputs": {0: {"min": -9.0, "max": 3.0, "avg_min": -2.0, "avg_max": 2.0}}}})
    >>> new, log = apply_edits(s, [{"match": "act_.*", "clip": [-6, 6]}])
    >>> new["act_i"]["inputs"][0]["min"], log
    (-6.0, ['act_i input 0: min -9 -> -6 (rule 0)'])
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jsonschema

from compress.errors import StatsError
from compress.stats.stats import Stats

__all__ = ["EDIT_RULE_SCHEMA", "apply_edits"]

_SETTABLE = ("min", "max", "avg_min", "avg_max", "mean", "std", "b")
_CLIPPED = ("min", "max", "avg_min", "avg_max")

EDIT_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One statistics edit: set values of, or clip the ranges of, the matched modules' tensors.",
    "properties": {
        "match": {"type": "string", "minLength": 1, "description": "Regex, full match on the module name."},
        "tensor": {
            "enum": ["inputs", "output", "all"],
            "description": "Which tensors of the matched modules to edit (default: all).",
        },
        "set": {
            "type": "object",
            "properties": {k: {"type": "number"} for k in _SETTABLE},
            "additionalProperties": False,
            "minProperties": 1,
            "description": "Values to write, e.g. {min: -6, max: 6}.",
        },
        "clip": {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 2,
            "maxItems": 2,
            "description": "[lo, hi]: intersect min/max and avg_min/avg_max with this interval.",
        },
    },
    "required": ["match"],
    "oneOf": [{"required": ["set"]}, {"required": ["clip"]}],
    "additionalProperties": False,
}


def apply_edits(stats: Stats, rules: Sequence[Mapping[str, Any]]) -> tuple[Stats, list[str]]:
    """Apply edit ``rules`` in order; returns new `Stats` (``stats`` is not changed) and a log.

    Args:
        stats: the statistics to edit.
        rules: a list of ``{match, tensor?, set}`` or ``{match, tensor?, clip}`` mappings
            (see `EDIT_RULE_SCHEMA`).

    Returns:
        The edited statistics (the rules are appended to ``header["edits"]``) and one log line
        per edited module tensor, or one line per rule that matched but changed nothing.

    Raises:
        StatsError: a malformed rule, a bad regex, a rule matching nothing, or a result with
            ``min > max`` (or negative ``std``/``b``).

    Example:
        >>> from compress.stats.stats import Stats
        >>> s = Stats({"fc": {"output": {"min": -1.0, "max": 1.0}}})
        >>> apply_edits(s, [{"match": "fc", "tensor": "output", "set": {"max": 0.5}}])[1]
        ['fc output: max 1 -> 0.5 (rule 0)']
    """
    entries = stats.to_dict()
    log: list[str] = []
    for index, rule in enumerate(rules):
        log += _apply_rule(entries, _validated(rule, index), index)
    header = stats.header
    header["edits"] = list(header.get("edits", [])) + [copy.deepcopy(dict(r)) for r in rules]
    return stats.replace(entries=entries, header=header), log


def _validated(rule: Mapping[str, Any], index: int) -> dict[str, Any]:
    try:
        jsonschema.validate(dict(rule) if isinstance(rule, Mapping) else rule, EDIT_RULE_SCHEMA)
    except jsonschema.ValidationError as e:
        raise StatsError(f"Stats edit rule {index} ({rule!r}) is malformed: {e.message}.") from e
    try:
        pattern = re.compile(rule["match"])
    except re.error as e:
        raise StatsError(f"Stats edit rule {index}: 'match' is not a valid regex ({rule['match']!r}: {e}).") from e
    values = list(rule.get("set", {}).values()) + list(rule.get("clip", []))
    if not all(math.isfinite(v) for v in values):
        raise StatsError(f"Stats edit rule {index}: values must be finite numbers, got {rule!r}.")
    if "clip" in rule and rule["clip"][0] > rule["clip"][1]:
        raise StatsError(f"Stats edit rule {index}: clip bounds {rule['clip']} must be [lo, hi] with lo <= hi.")
    return dict(rule, pattern=pattern)


def _targets(entries: dict[str, dict[str, Any]], rule: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    which = rule.get("tensor", "all")
    for name, entry in entries.items():
        if not rule["pattern"].fullmatch(name):
            continue
        if which in ("inputs", "all"):
            for i, rec in entry.get("inputs", {}).items():
                yield f"{name} input {i}", rec
        if which in ("output", "all") and "output" in entry:
            yield f"{name} output", entry["output"]


def _apply_rule(entries: dict[str, dict[str, Any]], rule: dict[str, Any], index: int) -> list[str]:
    lines, matched = [], 0
    for label, rec in _targets(entries, rule):
        matched += 1
        before = dict(rec)
        rec.update(_clipped(rec, rule["clip"]) if "clip" in rule else _set_values(rule["set"]))
        _check_record(rec, label, index)
        changes = [f"{k} {_fmt(before.get(k))} -> {_fmt(rec[k])}" for k in _SETTABLE if before.get(k) != rec.get(k)]
        if changes:
            lines.append(f"{label}: {', '.join(changes)} (rule {index})")
    if not matched:
        raise StatsError(_unmatched_message(entries, rule, index))
    if not lines:
        lines.append(f"rule {index} (match {rule['match']!r}): {matched} tensor(s) matched, none changed")
    return lines


def _clipped(rec: dict[str, Any], bounds: Sequence[float]) -> dict[str, float]:
    lo, hi = float(bounds[0]), float(bounds[1])
    return {k: min(max(float(rec[k]), lo), hi) for k in _CLIPPED if k in rec}


def _set_values(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()}


def _check_record(rec: dict[str, Any], label: str, index: int) -> None:
    for lo, hi in (("min", "max"), ("avg_min", "avg_max")):
        if lo in rec and hi in rec and rec[lo] > rec[hi]:
            raise StatsError(f"Stats edit rule {index} leaves {label} with {lo} {rec[lo]} above {hi} {rec[hi]}.")
    for key in ("std", "b"):
        if rec.get(key, 0.0) < 0:
            raise StatsError(f"Stats edit rule {index} sets {label} '{key}' to {rec[key]}; it must be >= 0.")


def _unmatched_message(entries: dict[str, dict[str, Any]], rule: dict[str, Any], index: int) -> str:
    modules = [n for n in entries if rule["pattern"].fullmatch(n)]
    which = rule.get("tensor", "all")
    if modules:
        why = f"the modules it matches ({', '.join(modules[:3])}) have no '{which}' statistics"
    else:
        why = f"no module name fully matches it (some names: {', '.join(list(entries)[:5]) or 'none'})"
    return f"Stats edit rule {index} (match {rule['match']!r}, tensor {which!r}) matches nothing: {why}."


def _fmt(v: Any) -> str:
    return "unset" if v is None else f"{v:.6g}"
