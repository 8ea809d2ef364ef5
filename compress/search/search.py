"""Run one ``search:`` experiment: base, sensitivity, strategy, confirmation on the whole split, result.

The engine calls :func:`run_search` with two functions of its own experiment path: ``trial`` (evaluate
an experiment entry on a subset, no export) and ``final`` (run an entry exactly as a plain experiment:
whole evaluation split, per-layer rows, export). The returned ExperimentResult is ``final``'s for the
best configuration, so the report's value and weight bytes are what ``best.yaml`` reproduces, with a
``search`` object added (report.json) and tables for report.md (compress/search/report.py).

Example:
    >>> # er = run_search(parse_search(exp['search']), exp, qspec, trial, final, out_dir)   # see compress/experiment.py
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.search.groups import build_groups
from compress.search.plots import write_plots
from compress.search.sensitivity import measure_sensitivity, sqnr_row, worst_first
from compress.search.session import BudgetSpent, Outcome, Session, TrialFn
from compress.search.spec import SearchSpec, loss_of
from compress.search.strategy import fallback, keeps_weights, relower

__all__ = ["run_search"]


def run_search(
    spec: SearchSpec,
    exp: dict[str, Any],
    qspec: dict[str, Any],
    trial: TrialFn,
    final: Callable[[dict[str, Any]], Any],
    out_dir: Path,
    clock: Callable[[], float] = time.monotonic,
    shared: dict[str, Any] | None = None,
) -> Any:
    """Search ``exp``'s configuration (``spec``: its parsed ``search:`` block); the best one's ExperimentResult.

    ``qspec`` is the experiment's resolved quantizer block (args merged over the base, its overrides);
    ``shared`` caches trial results across the searches of one study (the engine keeps one per run).
    """
    session = Session(spec, exp, qspec, trial, out_dir, clock, shared)
    batches = spec.subset_batches
    base = session.run(list(qspec["overrides"]), batches, {"phase": "base", "change": "base"}, None, layers=True)
    if base.error:
        return final(session.entry(list(qspec["overrides"])))  # the base itself fails: say it as a plain run would
    plan, layers = list(session.last.plan), list(session.last.layers)
    session.names = [row["name"] for row in plan]
    session.groups = build_groups(plan, spec.groups)
    start = (0,) * len(session.groups)
    session.consider(base, start, batches)
    rows = _sensitivity(session, base, layers, batches)
    order = [next(i for i, g in enumerate(session.groups) if g.name == r["group"]) for r in worst_first(rows)]
    if spec.strategy == "greedy" and not session.stopped:
        config, now = fallback(session, start, base, order, batches)
        relower(session, config, now, order, batches)
    er = _confirm(session, order, batches, final)
    er.search = _summary(session, rows, er, batches)
    er.search["plots"] = write_plots(out_dir, exp["name"], er.search)
    return er


def _sensitivity(
    session: Session, base: Outcome, layers: list[dict[str, Any]], batches: int | None
) -> list[dict[str, Any]]:
    """The sensitivity rows (measured unless ``sensitivity: false``; the SQNR column always)."""
    if session.spec.sensitivity:
        return measure_sensitivity(session, base, layers, batches)
    return [sqnr_row(g, layers) for g in session.groups]


def _confirm(session: Session, order: list[int], batches: int | None, final: Callable[[dict[str, Any]], Any]) -> Any:
    """The best configuration on the whole split; if it misses there, the greedy steps go on on the whole split."""
    outcome, config = session.best[batches]
    if batches is not None and session.spec.strategy == "greedy" and not session.stopped:
        label = {"phase": "confirm", "change": "whole split"}
        try:
            full = session.run(session.config_overrides(config), None, label, config)
        except BudgetSpent as spent:
            session.stopped = str(spent)
        else:
            if not full.met:  # weight-keeping rungs first (strategy.py, step 5), then the others
                config, now = _keeping_passes(session, config, full, order)
                config, now = fallback(session, config, now, order, None, lambda r: not keeps_weights(r))
                relower(session, config, now, order, None)
        outcome, config = session.best.get(None, (outcome, config))
    er = final(session.entry(session.config_overrides(config)))
    session.final_met = _met(session, float(er.value))
    session.write_best(_as_final(outcome, er, session.final_met), config, None)
    session.final_config = config
    return er


# Passes of weight-keeping coordinate descent on the whole split: each pass starts from the previous one's
# configuration, so a group can take a rung that only helps once others have moved.
MAX_KEEPING_PASSES = 3


def _keeping_passes(session: Session, config: tuple[int, ...], now: Any, order: list[int]) -> tuple[Any, Any]:
    """Weight-keeping fallback passes on the whole split while the target is missed and the loss still falls."""
    for _ in range(MAX_KEEPING_PASSES):
        before = now.loss
        config, now = fallback(session, config, now, order, None, keeps_weights)
        if now.met or session.stopped or not now.loss < before:
            break
    return config, now


def _met(session: Session, value: float) -> bool:
    ref = session.reference(None)
    return bool(session.spec.target.met(loss_of(value, ref, session.higher_is_better), ref))


def _as_final(o: Outcome, er: Any, met: bool) -> Outcome:
    return Outcome(float(er.value), int(er.weight_bytes), o.integer_ops, o.loss, met, o.seconds)


def _summary(session: Session, rows: list[dict[str, Any]], er: Any, batches: int | None) -> dict[str, Any]:
    spec: SearchSpec = session.spec
    ladder = session.spec.ladder
    config = session.final_config
    ref = session.reference(None)
    return {
        "target": {spec.target.kind: spec.target.limit},
        "target_met": session.final_met,
        "direction": "higher is better" if session.higher_is_better else "lower is better",
        "reference": ref,
        "subset_reference": session.reference(batches),
        "subset": session.data_label(batches),
        "strategy": spec.strategy,
        "ladder": {"name": spec.ladder_name, "rungs": ladder},
        "trials": session.trials,
        "budget": {"trials": spec.budget_trials, "minutes": spec.budget_minutes},
        "stopped": session.stopped or "finished",
        "minutes": round(session.minutes(), 3),
        "groups": {g.name: list(g.modules) for g in session.groups},
        "rungs": {g.name: config[i] for i, g in enumerate(session.groups)},
        "configuration": session.entry(session.config_overrides(config)),
        "sensitivity": worst_first(rows),
        "trajectory": [dict(r) for r in session.trace.rows],
        "files": {"trace": session.trace.path.name, "best": f"{session.exp['name']}.best.yaml"},
        "delta_pct": (float(er.value) - ref) / abs(ref) * 100.0 if ref and math.isfinite(ref) else math.nan,
    }
