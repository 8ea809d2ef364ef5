"""Where each unit of work (a statistics source, an experiment) runs: on one rank, or sharded over all.

The rule (measured in benchmarks/RESULTS.md, "Many processes"): with ``W`` processes and ``N`` units,
the first ``N - N mod W`` units are *spread*, each run whole by one rank (least loaded first, in
schedule order), and only the last ``N mod W`` units, which would leave ranks idle, are *sharded*: every
rank runs them on its share of the batches and the results are merged. A spread unit needs no
communication, runs exactly the one-process computation (results bit for bit), and spreads the work that
cannot be sharded (quantizing, the per-layer report); sharding pays an exchange per pass and repeats that
work on every rank, so it is kept for units that would otherwise leave ranks idle. Measured on our shared
2-core machine: spreading the Performance RNN study's ten experiments beat sharding them (65.8 s against
73.3 s); for one experiment neither beat one process there (the second process' setup competed for the
one free core). A unit is sharded only when it can
be: its batches must be independent (a model that carries state from batch to batch, like the word LM's
bptt chunks, would see other states) and its component must know how to merge shards; otherwise it is
spread too. A unit that writes a file (an experiment with ``export: true``) always runs on the writer.

Example:
    >>> [p.owner for p in place([Work("a"), Work("b"), Work("c", shardable=lambda: True)], size=2)]
    [0, 1, None]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Work", "Placement", "place"]


def _no() -> bool:
    return False


@dataclass
class Work:
    """A unit to place: ``shardable`` is asked only for a unit that would be sharded (it may cost a probe)."""

    name: str
    shardable: Callable[[], bool] = field(default=_no)
    pinned_to_writer: bool = False


@dataclass
class Placement:
    """Where one unit runs: ``owner`` is its rank, or None when it is sharded over every rank.

    Example:
        >>> p = Placement("x", None, 2)
        >>> p.here(1), p.reports(1), p.reports(0), p.how()
        (True, False, True, 'sharded over 2 processes')
    """

    name: str
    owner: int | None
    size: int = 1

    @property
    def sharded(self) -> bool:
        return self.owner is None

    def here(self, rank: int) -> bool:
        """Whether ``rank`` takes part in this unit."""
        return self.owner is None or self.owner == rank

    def reports(self, rank: int) -> bool:
        """Whether ``rank`` does the unit's unshardable extras (per-layer report, files): its owner, or rank 0."""
        return self.owner == rank or (self.owner is None and rank == 0)

    def how(self) -> str:
        """``rank N`` or ``sharded over W processes``, for the report."""
        return f"sharded over {self.size} processes" if self.owner is None else f"rank {self.owner}"


def place(units: list[Work], size: int, mode: str = "auto") -> list[Placement]:
    """Apply the module's rule to ``units`` for ``size`` processes.

    ``mode`` ``spread`` or ``shard`` overrides the rule (every unit spread; every shardable unit sharded),
    for measuring it (``COMPRESS_DIST_PLACEMENT``); a pinned unit still runs on the writer.

    Example:
        >>> [p.owner for p in place([Work("a"), Work("b", pinned_to_writer=True), Work("c")], size=2)]
        [1, 0, 0]
    """
    if size <= 1:
        return [Placement(u.name, 0, 1) for u in units]
    spread_count = {"spread": len(units), "shard": 0}.get(mode, len(units) - len(units) % size)
    load = [0] * size
    for u in units:
        if u.pinned_to_writer:
            load[0] += 1
    out = []
    for i, u in enumerate(units):
        if u.pinned_to_writer:
            out.append(Placement(u.name, 0, size))
        elif i >= spread_count and u.shardable():
            out.append(Placement(u.name, None, size))
        else:
            owner = min(range(size), key=lambda r: (load[r], r))
            load[owner] += 1
            out.append(Placement(u.name, owner, size))
    return out
