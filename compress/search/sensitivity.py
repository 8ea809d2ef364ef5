"""Per-group sensitivity of a base configuration, measured on the search's evaluation subset.

For each group two trials: **only this group quantized** (every other group left float) and **only this
group float** (every other group quantized). ``gain`` = the base configuration's loss minus the loss
with only this group float: how much of the total loss this group causes, in the metric's units. The
worst SQNR of the group's modules (dB, from the base configuration's per-layer rows on the
calibration batch) comes with it. Rows are sorted worst first (largest gain, then lowest SQNR).

Example:
    >>> rows = [{"group": "a", "gain": 0.1, "sqnr_db": 30.0}, {"group": "b", "gain": 0.5, "sqnr_db": 20.0}]
    >>> [r["group"] for r in worst_first(rows)]
    ['b', 'a']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from compress.search.groups import float_overrides, isolate_overrides
from compress.search.session import BudgetSpent, Outcome, Session

__all__ = ["measure_sensitivity", "worst_first", "group_sqnr", "sqnr_row"]


def group_sqnr(layers: Sequence[dict[str, Any]], modules: Sequence[str]) -> float:
    """The worst (lowest) finite SQNR in dB among ``modules``' per-layer rows (nan when none has one).

    Example:
        >>> group_sqnr([{"module": "a", "sqnr_db": 12.5}, {"module": "b", "sqnr_db": 9.0}], ["a", "b"])
        9.0
    """
    values = [r.get("sqnr_db") for r in layers if r.get("module") in set(modules)]
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return min(finite) if finite else math.nan


def sqnr_row(group: Any, layers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A group's row before any trial: its name, size and worst SQNR."""
    return {"group": group.name, "modules": len(group.modules), "sqnr_db": group_sqnr(layers, group.modules)}


def worst_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by descending gain (unmeasured last), then ascending SQNR, then their original order."""

    def key(item: tuple[int, dict[str, Any]]) -> tuple[float, float, int]:
        i, r = item
        gain, sqnr = r.get("gain", math.nan), r.get("sqnr_db", math.nan)
        return (-gain if math.isfinite(gain) else math.inf, sqnr if math.isfinite(sqnr) else math.inf, i)

    return [r for _, r in sorted(enumerate(rows), key=key)]


def measure_sensitivity(
    session: Session, base: Outcome, layers: Sequence[dict[str, Any]], batches: int | None
) -> list[dict[str, Any]]:
    """One row per group (see module doc), measured until the budget runs out (then nan)."""
    rows = [sqnr_row(g, layers) for g in session.groups]
    try:
        for i in range(len(rows)):
            _measure_one(session, i, rows[i], base, batches)
    except BudgetSpent as spent:  # the rows measured so far are kept; the others stay unmeasured (nan)
        session.stopped = str(spent)
    return rows


def _measure_one(session: Session, i: int, row: dict[str, Any], base: Outcome, batches: int | None) -> None:
    ref, hib, rules = session.reference(batches), session.higher_is_better, session.qspec["overrides"]
    g = session.groups[i]
    alone = session.run(isolate_overrides(session.groups, i, rules), batches, _label("only quantized", g))
    row["only_quantized_delta_pct"] = _pct(alone, ref, hib)
    left = session.run(float_overrides(session.groups, i, rules), batches, _label("only float", g))
    row["only_float_delta_pct"] = _pct(left, ref, hib)
    row["gain"] = base.loss - left.loss if not left.error else math.nan


def _label(what: str, g: Any) -> dict[str, str]:
    return {"phase": "sensitivity", "group": g.name, "change": what}


def _pct(o: Outcome, ref: float, higher_is_better: bool) -> float:
    """Δ% of a trial against float, signed as the metric moves (nan for a failed trial)."""
    if o.error or not ref:
        return math.nan
    signed = -o.loss if higher_is_better else o.loss
    return signed / abs(ref) * 100.0
