"""One search's bookkeeping: evaluate a candidate, count the budget, keep the trace and the best so far.

The engine hands the search a ``trial`` function that runs an experiment entry through its own
experiment path (quantize a copy with the cached statistics, evaluate on the given data) and returns
its ExperimentResult; this module never quantizes or evaluates anything itself.

Example:
    >>> Outcome(2.0, 10, 3, 0.1, True, 0.5).key()  # met: the smallest size comes first
    (0, 10, -3, 0.1)
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import CompressError
from compress.search.groups import Group, integer_ops, overrides_for, prune
from compress.search.ladder import rung_text
from compress.search.spec import SearchSpec, delta_pct, loss_of
from compress.search.trace import Trace, best_header, write_best

__all__ = ["Outcome", "Session", "BudgetSpent", "TrialFn"]

#: ``trial(entry, batches, layers)`` -> the engine's ExperimentResult for that experiment entry, evaluated
#: on the first ``batches`` evaluation batches (None: all of them), with per-layer rows when ``layers``.
TrialFn = Callable[[dict[str, Any], "int | None", bool], Any]


class BudgetSpent(Exception):
    """The trial or minute budget is used up: the search stops and re-measures its best."""


@dataclass(frozen=True)
class Outcome:
    """A measured candidate (``loss`` > 0: worse than float, in the metric's own units)."""

    value: float
    weight_bytes: int
    integer_ops: int
    loss: float
    met: bool
    seconds: float
    error: str = ""

    def key(self) -> tuple[Any, ...]:
        """Sort key, smaller is better: a met target by size then integer ops; otherwise by loss."""
        if self.met:
            return (0, self.weight_bytes, -self.integer_ops, self.loss)
        loss = self.loss if math.isfinite(self.loss) else math.inf
        return (1, loss, self.weight_bytes, -self.integer_ops)


class Session:
    """Runs trials for one search experiment and records every one of them."""

    def __init__(
        self,
        spec: SearchSpec,
        exp: dict[str, Any],
        qspec: dict[str, Any],
        trial: TrialFn,
        out_dir: Path,
        clock: Callable[[], float] = time.monotonic,
        shared: dict[str, Any] | None = None,
    ) -> None:
        self.spec, self.exp, self.qspec, self._trial, self.out_dir = spec, exp, qspec, trial, out_dir
        # Results of identical entries on the same data, shared by the searches of one study (two searches
        # from the same base share their sensitivity trials); only successful trials are shared.
        self.shared = {} if shared is None else shared
        self.clock, self.start = clock, clock()
        self.trace = Trace(out_dir, exp["name"])
        self.trials = 0
        self.groups: list[Group] = []
        self.names: list[str] = []
        self.references: dict[int | None, float] = {}
        self.higher_is_better = False
        self.best: dict[int | None, tuple[Outcome, tuple[int, ...]]] = {}
        self.seen: dict[tuple[Any, ...], Outcome] = {}
        self.last: Any = None  # the ExperimentResult of the latest successful trial (plan, layers)
        self.final_met, self.final_config = False, ()
        self.stopped = ""  # why the search stopped early ("" while the budget lasts)

    # --------------------------------------------------------------------- data and reference

    def data_label(self, batches: int | None) -> str:
        return "all evaluation batches" if batches is None else f"the first {batches} evaluation batches"

    def reference(self, batches: int | None) -> float:
        """The float model's metric on this data (measured once, not counted as a trial)."""
        if batches not in self.references:
            er = self._shared_trial({"name": self.exp["name"], "quantizer": None}, batches, False)
            self.references[batches] = float(er.value)
            self.higher_is_better = bool(er.higher_is_better)
        return self.references[batches]

    # --------------------------------------------------------------------- entries

    def entry(self, overrides: list[dict[str, Any]]) -> dict[str, Any]:
        """The plain experiment entry for these override rules (what best.yaml holds)."""
        out = {k: copy.deepcopy(v) for k, v in self.exp.items() if k not in ("search", "args", "overrides")}
        rules = prune(overrides, self.names)
        if "quantizer" in self.exp:
            out["quantizer"] = {"name": self.qspec["name"], "args": dict(self.qspec["args"]), "overrides": rules}
        else:
            out["args"], out["overrides"] = dict(self.qspec["args"]), rules
        return out

    def config_overrides(self, config: tuple[int, ...]) -> list[dict[str, Any]]:
        return overrides_for(self.groups, config, self.spec.ladder, self.qspec["overrides"])

    def change_text(self, config: tuple[int, ...], base: tuple[int, ...]) -> tuple[str, str]:
        """(group, change) labels for the trace: which groups moved from ``base``, to which rung."""
        moved = [i for i, (a, b) in enumerate(zip(config, base, strict=True)) if a != b]
        if not moved:
            return "", ""
        ladder = self.spec.ladder
        return (
            ",".join(self.groups[i].name for i in moved),
            "; ".join(f"{rung_text(ladder[base[i]])} -> {rung_text(ladder[config[i]])}" for i in moved),
        )

    # --------------------------------------------------------------------- trials

    def check_budget(self) -> None:
        if self.trials >= self.spec.budget_trials:
            raise BudgetSpent(f"trial budget of {self.spec.budget_trials} used")
        if self.clock() - self.start >= self.spec.budget_minutes * 60.0:
            raise BudgetSpent(f"minute budget of {self.spec.budget_minutes:g} used")

    def run(
        self,
        overrides: list[dict[str, Any]],
        batches: int | None,
        label: dict[str, str],
        config: Any = None,
        layers: bool = False,
    ) -> Outcome:
        """Evaluate one candidate (a trial): trace row always, best.yaml when ``config`` improves the best."""
        key = (batches, repr(prune(overrides, self.names)))
        if key in self.seen:  # a configuration already measured on this data is not measured twice
            return self.seen[key]
        self.check_budget()
        ref = self.reference(batches)
        self.trials += 1
        start = self.clock()
        try:
            er = self.last = self._shared_trial(self.entry(overrides), batches, layers)
            value, wbytes, ops, error = float(er.value), int(er.weight_bytes), integer_ops(er.plan), ""
        except CompressError as exc:  # a rung this group cannot take (e.g. no histogram): recorded, skipped
            value, wbytes, ops, error = math.nan, 0, 0, str(exc).splitlines()[0][:300]
        loss = loss_of(value, ref, self.higher_is_better) if not error else math.nan
        met = not error and self.spec.target_for(batches).met(loss, ref)
        outcome = Outcome(value, wbytes, ops, loss, met, self.clock() - start, error)
        self.seen[key] = outcome
        self._record(outcome, ref, batches, label)
        if config is not None and not error:
            self.consider(outcome, tuple(config), batches)
        return outcome

    def _shared_trial(self, entry: dict[str, Any], batches: int | None, layers: bool) -> Any:
        what = {k: v for k, v in entry.items() if k not in ("name", "description", "export")}
        key = json.dumps([what, batches, layers], sort_keys=True, default=str)
        if key not in self.shared:
            self.shared[key] = self._trial(entry, batches, layers)
        return self.shared[key]

    def _record(self, o: Outcome, ref: float, batches: int | None, label: dict[str, str]) -> None:
        row = {"trial": self.trials, **label, "data": self.data_label(batches), "value": o.value}
        row.update(delta=o.value - ref, delta_pct=delta_pct(o.value, ref), target_met=o.met)
        row.update(weight_bytes=o.weight_bytes, integer_ops=o.integer_ops, seconds=round(o.seconds, 3))
        self.trace.append({**row, "note": o.error})

    def consider(self, o: Outcome, config: tuple[int, ...], batches: int | None) -> None:
        have = self.best.get(batches)
        if have is None or o.key() < have[0].key():
            self.best[batches] = (o, config)
            self.write_best(o, config, batches)

    def write_best(self, o: Outcome, config: tuple[int, ...], batches: int | None) -> None:
        header = best_header(
            self.exp["name"],
            self.spec.target_for(batches).describe(),
            o.met,
            self.data_label(batches),
            o.value,
            self.trials,
        )
        write_best(self.out_dir, self.exp["name"], self.entry(self.config_overrides(config)), header)

    def minutes(self) -> float:
        return (self.clock() - self.start) / 60.0
