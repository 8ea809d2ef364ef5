"""A fake experiment path for search tests: the loss of every rung of every module is known by construction.

Five modules ``m0..m4``. The loss of a configuration is the sum of each module's loss at its rung (a
module left float costs 0), so the right answer of a search can be worked out by hand. ``m2`` is made
very sensitive: 5.0 at the base rung, fixed only from rung 2 on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MODULES = ("m0", "m1", "m2", "m3", "m4")
LADDER = [{}, {"clip_acts": "laplace"}, {"bits_activations": 16}, {"fp32": True}]
REFERENCE = 100.0
# LOSS[module][rung]
LOSS = {
    "m0": [0.10, 0.05, 0.02, 0.0],
    "m1": [0.05, 0.04, 0.01, 0.0],
    "m2": [5.00, 4.00, 0.05, 0.0],
    "m3": [0.20, 0.30, 0.01, 0.0],
    "m4": [0.01, 0.01, 0.01, 0.0],
}
# Weight bytes per module: 400 in fp32 (or left float), else 100; fp16/fp32 rungs are not integer ops.


@dataclass
class FakeResult:
    value: float
    weight_bytes: int
    plan: list[dict[str, Any]]
    layers: list[dict[str, Any]] = field(default_factory=list)
    higher_is_better: bool = False


def rung_of(module: str, overrides: list[dict[str, Any]], ladder: list[dict[str, Any]] = LADDER) -> int | None:
    """The ladder rung the first matching rule gives ``module`` (None: left float by ``none: true``)."""
    rule = next((r for r in overrides if re.fullmatch(r["match"], module)), None)
    if rule is None:
        return 0
    if rule.get("none"):
        return None
    body = {k: v for k, v in rule.items() if k != "match"}
    return ladder.index(body)


class FakeEngine:
    """``trial`` and ``final`` as the engine gives them; counts calls; may be told to die at trial N."""

    def __init__(
        self,
        die_at: int | None = None,
        loss: dict[str, list[float]] | None = None,
        ladder: list[Any] = LADDER,
        full_loss: dict[str, list[float]] | None = None,
    ) -> None:
        self.calls, self.die_at, self.loss, self.ladder = 0, die_at, loss or LOSS, ladder
        # The losses on the whole split (batches None) when they differ from the subset's (``loss``).
        self.full_loss = full_loss or self.loss

    def result(self, entry: dict[str, Any], full: bool = True) -> FakeResult:
        modules, table = list(self.loss), self.full_loss if full else self.loss
        if entry.get("quantizer", "base") is None:
            return FakeResult(REFERENCE, 400 * len(modules), [{"name": m, "kind": "none"} for m in modules])
        rules = entry["overrides"]
        rungs = {m: rung_of(m, rules, self.ladder) for m in modules}
        loss = sum(table[m][r] for m, r in rungs.items() if r is not None)
        size = sum(400 if r is None or "fp32" in self.ladder[r] else 100 for r in rungs.values())
        floats = [r is None or "fp32" in self.ladder[r] or "fp16" in self.ladder[r] for r in rungs.values()]
        plan = [{"name": m, "kind": "float" if f else "linear"} for m, f in zip(rungs, floats, strict=True)]
        layers = [{"module": m, "sqnr_db": 40.0 - 10 * table[m][0]} for m in modules]
        return FakeResult(REFERENCE + loss, size, plan, layers)

    def trial(self, entry: dict[str, Any], batches: int | None, layers: bool) -> FakeResult:
        self.calls += 1
        if self.die_at is not None and self.calls >= self.die_at:
            raise KeyboardInterrupt  # as a kill in the middle of a trial
        return self.result(entry, full=batches is None)

    def final(self, entry: dict[str, Any]) -> FakeResult:
        return self.result(entry)
