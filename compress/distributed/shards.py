"""Sharded units: each rank reads every ``size``-th batch, and the partial results are merged exactly.

* Evaluation: the evaluator runs on this rank's batches (``ShardedData``) and its ``combine`` merges the
  ranks' results (the perplexity evaluator adds the float64 NLL sums and token counts).
* Statistics: the ``collect`` source reads this rank's calibration batches, and between the two passes
  ``StatsShards.reduce`` merges the accumulators of every rank with `compress.stats.merge` (min/max,
  sample-weighted sums, the parallel variance formula), so pass 2 computes ``b`` and the histograms around
  the *merged* mean and range, as one process would.

Example:
    >>> class Data:
    ...     def batches(self, split): return iter(range(5))
    ...     def num_batches(self, split): return 5
    >>> d = ShardedData(Data(), rank=1, size=2)
    >>> list(d.batches("evaluation")), d.num_batches("evaluation")
    ([1, 3], 2)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from compress.distributed.team import Team

__all__ = [
    "ShardedData",
    "sharded_evaluate",
    "StatsShards",
    "can_shard_evaluator",
    "share",
    "batches_independent",
    "gather",
]


def _share(items: Iterable[Any], rank: int, size: int) -> Iterator[Any]:
    return itertools.islice(items, rank, None, size)


def _share_count(total: int, rank: int, size: int) -> int:
    return max(0, (total - rank + size - 1) // size)


class ShardedData:
    """A DataSource giving only this rank's batches (every ``size``-th from ``rank``), after ``limits``."""

    def __init__(self, data: Any, rank: int, size: int, limits: dict[str, int | None] | None = None) -> None:
        self.data, self.rank, self.size, self.limits = data, rank, size, dict(limits or {})

    def batches(self, split: str) -> Iterator[Any]:
        it = self.data.batches(split)
        limit = self.limits.get(split)
        return _share(it if limit is None else itertools.islice(it, limit), self.rank, self.size)

    def num_batches(self, split: str) -> int:
        total = self.data.num_batches(split)
        limit = self.limits.get(split)
        return _share_count(total if limit is None else min(total, limit), self.rank, self.size)

    def __getattr__(self, name: str) -> Any:  # describe(), vocab_sha256, ...: the dataset's own
        return getattr(self.data, name)


def can_shard_evaluator(fn: Callable[..., Any]) -> bool:
    """An evaluator can be sharded when it says how to merge shard results (``fn.combine``).

    Example:
        >>> can_shard_evaluator(lambda model, data: {})
        False
    """
    return callable(getattr(fn, "combine", None))


def sharded_evaluate(team: Team, fn: Callable[..., Any], model: Any, data: Any, progress: bool, args: dict) -> Any:
    """Run evaluator ``fn`` on this rank's share of the evaluation split and merge every rank's result.

    ``fn.shard_limit_arg`` (if set) names the argument that cuts the split (``max_batches``): the split is
    cut before it is shared out, so the ranks together see exactly the batches one process would.
    """
    args = dict(args)
    limit_arg = getattr(fn, "shard_limit_arg", None)
    limit = args.pop(limit_arg, None) if limit_arg else None
    mine = fn(model, ShardedData(data, team.rank, team.size, {"evaluation": limit}), progress=progress, **args)
    return fn.combine(team.exchange(mine))


def share(team: Team, mine: dict[str, Any]) -> dict[str, Any]:
    """Every rank's entries of ``mine`` merged into one dict (rank order; the lowest rank wins a clash).

    Example:
        >>> from compress.distributed.team import SoloTeam
        >>> share(SoloTeam(), {"a": 1})
        {'a': 1}
    """
    out: dict[str, Any] = {}
    for part in team.exchange(mine):
        for k, v in part.items():
            out.setdefault(k, v)
    return out


class StatsShards:
    """What a statistics source needs to run sharded: its batches, and the merge between passes."""

    def __init__(self, team: Team) -> None:
        self.team = team

    def batches(self, make: Callable[[], Iterable[Any]]) -> Callable[[], Iterable[Any]]:
        """A replayable source of this rank's share of ``make()``'s batches."""
        return lambda: _share(make(), self.team.rank, self.team.size)

    def count(self, total: int) -> int:
        """This rank's number of batches out of ``total`` (for progress bars)."""
        return _share_count(total, self.team.rank, self.team.size)

    def reduce(self, number: int, collector: Any) -> None:
        """After pass ``number``: give every rank's accumulators the merged state of all ranks."""
        from compress.stats.merge import merge_first_pass, merge_second_pass

        if number == 1:
            states = self.team.exchange(collector.pass_states(1))
            collector.load_pass_states(1, merge_first_pass(states))
        else:
            states = self.team.exchange(collector.pass_states(2))
            collector.load_pass_states(2, merge_second_pass(states))


def batches_independent(model: Any, data: Any, split: str) -> bool:
    """Whether ``model`` starts every batch of ``split`` afresh, so a rank may score any subset of them.

    The sequence model protocol says so itself: ``score_batch(batch, None)`` returns ``None`` as the state
    to carry when nothing carries over (the Performance RNN's windows, which bring their own z); a model
    that returns a state (the word LM's bptt chunks) needs the batches in order on one rank.

    Example:
        >>> class Model:
        ...     def score_batch(self, batch, state): return {"all": (0.0, 1)}, None
        >>> class Data:
        ...     def batches(self, split): return iter([1])
        >>> batches_independent(Model(), Data(), "evaluation")
        True
    """
    import torch

    score = getattr(model, "score_batch", None)
    first = next(iter(data.batches(split)), None)
    if not callable(score) or first is None:
        return False
    with torch.no_grad():
        return score(first, None)[1] is None


def gather(team: Team, finished: dict[int, Any], count: int, timings: dict[str, float]) -> tuple[list[Any], list]:
    """Every rank's finished units in schedule order (the lowest rank's copy of a sharded one), and timings.

    Example:
        >>> from compress.distributed.team import SoloTeam
        >>> gather(SoloTeam(), {0: "a", 1: "b"}, 2, {"build": 1.0})
        (['a', 'b'], [{'build': 1.0}])
    """
    parts = team.exchange((finished, dict(timings)))
    merged: dict[int, Any] = {}
    for done, _ in parts:
        for i, item in done.items():
            merged.setdefault(i, item)
    return [merged[i] for i in range(count)], [t for _, t in parts]
