"""The per-layer tables of a report and of ``--plan``: which rows, which columns, how cells read.

report.md and the terminal show the columns that explain a result (:data:`MD_LAYER_KEYS`,
:data:`TERMINAL_LAYER_KEYS`); layers.csv and report.json keep every column a quantizer reports.

Example:
    >>> kept_columns([{"module": "fc", "calls": 3, "note": None}], ("module", "note"))
    [{'module': 'fc'}]
"""

from __future__ import annotations

import json
import math
from typing import Any

from tabulate import tabulate

from compress.results import ExperimentResult, RunResult

__all__ = [
    "MD_LAYER_KEYS",
    "TERMINAL_LAYER_KEYS",
    "fmt_cell",
    "kept_columns",
    "layer_rows",
    "layer_table",
    "layers_experiment",
    "plan_table",
]

SQNR_KEY = "sqnr_db"
TERMINAL_WORST_LAYERS = 8
# The per-layer columns that explain a result (report.md); layers.csv and report.json keep every column.
MD_LAYER_KEYS = ("module", "type", "kernel", "rule", "bits", "mode", "clip", "clip_range", "saturation_pct", SQNR_KEY)
MD_LAYER_KEYS += ("note",)
TERMINAL_LAYER_KEYS = ("module", "type", "rule", "bits", "mode", "clip", "saturation_pct", SQNR_KEY)


def layers_experiment(result: RunResult) -> ExperimentResult | None:
    """The experiment whose per-layer table is shown: ``report.layers_for`` or the last with layers."""
    want = (result.schedule.data.get("report") or {}).get("layers_for")
    with_layers = [e for e in result.experiments if e.layers]
    for e in with_layers:
        if e.name == want:
            return e
    return with_layers[-1] if with_layers else None


def layer_rows(exp: ExperimentResult) -> list[dict[str, Any]]:
    """Per-layer rows sorted by SQNR, worst first (rows without an SQNR go last)."""

    def key(r: dict[str, Any]) -> float:
        v = r.get(SQNR_KEY)
        return v if isinstance(v, (int, float)) and not math.isnan(v) else math.inf

    return sorted(exp.layers, key=key)


def fmt_cell(v: Any) -> str:
    """A table cell: floats to 4 significant digits, lists bracketed, None empty.

    Example:
        >>> fmt_cell(3.14159), fmt_cell([1.0, -2.5]), fmt_cell(None)
        ('3.142', '[1, -2.5]', '')
    """
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_cell(x) for x in v) + "]"
    return "" if v is None else str(v)


def layer_table(rows: list[dict[str, Any]], fmt: str, limit: int | None = None) -> str:
    if not rows:
        return "(no quantized layers)"
    heads = list(rows[0])
    for r in rows:
        heads += [k for k in r if k not in heads]
    shown = rows[:limit] if limit else rows
    return tabulate(
        [[fmt_cell(r.get(h)) for h in heads] for r in shown], headers=heads, tablefmt=fmt, disable_numparse=True
    )


def plan_table(rows: list[dict[str, Any]], fmt: str = "simple") -> str:
    """The resolved per-layer plan as a table: for the built-ins' plans the per-layer report's columns.

    Example:
        >>> print(plan_table([{"module": "fc", "type": "Linear", "bits": "w4"}]))
        module    type    bits
        --------  ------  ------
        fc        Linear  w4
    """
    from compress.quant.records import plan_summary  # only for LayerPlan-shaped rows (the built-ins')

    shown = [plan_summary(r) if isinstance(r.get("settings"), dict) and "kind" in r else r for r in rows]
    shown = kept_columns(shown, tuple(dict.fromkeys(k for r in shown for k in r)))  # no all-empty columns
    return layer_table(
        [{k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in r.items()} for r in shown], fmt
    )


def kept_columns(rows: list[dict[str, Any]], keep: tuple[str, ...]) -> list[dict[str, Any]]:
    """Only the ``keep`` columns (a column empty in every row is dropped too); rows with none of them stay whole."""
    used = [k for k in keep if any(r.get(k) not in (None, "") for r in rows)]
    return [{k: r.get(k) for k in used if k in r} or r for r in rows]
