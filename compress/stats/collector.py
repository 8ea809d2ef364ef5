"""Forward hooks on every leaf module that turn two passes over calibration data into `Stats`.

Which modules are observed: every module without children except ``nn.Identity``, plus every
quantization wrapper (a module with ``_compress_wrapper = True``), whose inner modules are then
skipped. Input indices count the tensors among the positional arguments, flattened in order
through tuples and lists (non-tensors such as ``None`` or ints take no index; keyword arguments
are not observed). A module returning several tensors is observed on the first one. A module
called many times per batch (inside an RNN cell, once per time step) aggregates every call.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    >>> collector = StatsCollector(model)
    >>> for _ in collector.passes():
    ...     _ = model(torch.ones(3, 2))
    >>> sorted(collector.stats())
    ['0', '1']
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from compress.errors import StatsError
from compress.stats.accumulate import TensorAccumulator
from compress.stats.stats import Stats, make_header, model_fingerprint

__all__ = ["StatsCollector", "collect_stats", "observed_modules", "limit", "Forward"]

Forward = Callable[[nn.Module, Any], Any]


def observed_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module for every module the collector hooks, in model order.

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Identity())
        >>> list(observed_modules(m))
        ['0']
    """
    found: dict[str, nn.Module] = {}
    inside: tuple[str, ...] = ()
    for name, module in model.named_modules():
        if inside and any(name.startswith(w + ".") for w in inside):
            continue
        if getattr(module, "_compress_wrapper", False) is True:
            found[name] = module
            inside += (name,)
        elif next(module.children(), None) is None and not isinstance(module, nn.Identity):
            found[name] = module
    return found


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)


class _Slots:
    """The accumulators of one module: one per input index, one for the output."""

    def __init__(self, histogram_bins: int | None) -> None:
        self.bins = histogram_bins
        self.inputs: dict[int, TensorAccumulator] = {}
        self.output = TensorAccumulator(histogram_bins)

    def input(self, i: int) -> TensorAccumulator:
        if i not in self.inputs:
            self.inputs[i] = TensorAccumulator(self.bins)
        return self.inputs[i]

    def all(self) -> Iterator[tuple[str, TensorAccumulator]]:
        for i, acc in sorted(self.inputs.items()):
            yield f"input {i}", acc
        yield "output", self.output


class StatsCollector:
    """Two-pass statistics collector; ``passes()`` attaches the hooks for each pass.

    Args:
        model: the model to observe (not modified; hooks are removed after each pass).
        histogram_bins: when set, every record gets ``histogram: {lo, hi, counts}`` with this many
            equal-width bins over the record's ``[min, max]``.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> c = StatsCollector(model, histogram_bins=4)
        >>> for _ in c.passes():
        ...     _ = model(torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
        >>> c.stats()[""]["inputs"][0]["histogram"]["counts"]
        [1, 1, 1, 1]
    """

    def __init__(
        self, model: nn.Module, histogram_bins: int | None = None, reduce: Callable[[int, Any], None] | None = None
    ) -> None:
        if histogram_bins is not None and histogram_bins < 1:
            raise StatsError(f"histogram_bins must be a positive integer, got {histogram_bins!r}.")
        self.model = model
        self.histogram_bins = histogram_bins
        self.modules = observed_modules(model)
        self.slots = {name: _Slots(histogram_bins) for name in self.modules}
        self.passes_done = 0
        # Sharded collection (compress.distributed): after each pass, every shard's accumulators are
        # replaced by the merge over all shards, so pass 2 and the checks see the whole data's state.
        self.reduce = reduce

    def pass_states(self, number: int) -> dict[tuple[str, Any], Any]:
        """Every slot's state after pass ``number`` (1: a record or None; 2: the pass-2 sums), by (module, slot)."""
        out: dict[tuple[str, Any], Any] = {}
        for name, slots in self.slots.items():
            for key, acc in [*sorted(slots.inputs.items()), ("output", slots.output)]:
                out[(name, key)] = acc.first_state() if number == 1 else acc.second_state()
        return out

    def load_pass_states(self, number: int, states: dict[tuple[str, Any], Any]) -> None:
        """Replace every slot's state after pass ``number`` by ``states`` (see ``pass_states``)."""
        for (name, key), state in states.items():
            slots = self.slots[name]
            acc = slots.output if key == "output" else slots.input(key)
            if number == 1:
                acc.load_first(state)
            else:
                acc.load_second(state)

    def passes(self) -> Iterator[int]:
        """Yield 1 then 2 with the hooks of that pass attached; run the same data in each."""
        for number in (1, 2):
            if number == 2:
                self._start_second_pass()
            handles = [m.register_forward_hook(self._hook(name, number)) for name, m in self.modules.items()]
            try:
                yield number
            finally:
                for h in handles:
                    h.remove()
            if self.reduce is not None:
                self.reduce(number, self)
            self.check_finite()
            self.passes_done = number
        self._finish()

    def _hook(self, name: str, number: int) -> Callable[..., None]:
        slots = self.slots[name]
        update = TensorAccumulator.update_first if number == 1 else TensorAccumulator.update_second

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            for i, t in enumerate(_tensors(args)):
                update(slots.input(i), t)
            first_out = next(_tensors(output), None)
            if first_out is not None:
                update(slots.output, first_out)

        return hook

    def check_finite(self, where: str = "") -> None:
        """Raise StatsError naming the first module whose inputs or output held NaN or Inf."""
        for name, slots in self.slots.items():
            for slot, acc in slots.all():
                if not acc.finite():
                    raise StatsError(
                        f"Module '{name}' {slot} contains NaN or Inf{where}. Calibration statistics must be "
                        "finite: check the checkpoint and the calibration data, or the model's numerics "
                        "(e.g. a float16 overflow)."
                    )

    def _start_second_pass(self) -> None:
        for slots in self.slots.values():
            for _, acc in slots.all():
                acc.start_second_pass()

    def _finish(self) -> None:
        for name, slots in self.slots.items():
            for slot, acc in slots.all():
                acc.finish_second_pass(name, slot)

    def stats(self, header: dict[str, Any] | None = None) -> Stats:
        """The collected `Stats`; modules that never ran are listed in ``never_ran`` only."""
        entries: dict[str, dict[str, Any]] = {}
        for name, slots in self.slots.items():
            entry: dict[str, Any] = {}
            inputs = {i: acc.record() for i, acc in sorted(slots.inputs.items()) if acc.ran}
            if inputs:
                entry["inputs"] = inputs
            if slots.output.ran:
                entry["output"] = slots.output.record()
            if entry:
                entries[name] = entry
        never = [n for n in self.modules if n not in entries]
        head = header or make_header(model_fingerprint(self.model), "python", {}, None)
        return Stats(entries, head, never_ran=never)


def collect_stats(
    model: nn.Module,
    batches: Iterable[Any] | Callable[[], Iterable[Any]],
    forward: Forward | None = None,
    histogram_bins: int | None = None,
    *,
    progress: bool = False,
    total: int | None = None,
    header: dict[str, Any] | None = None,
    reduce: Callable[[int, Any], None] | None = None,
) -> Stats:
    """Collect calibration statistics of ``model`` over ``batches`` (two identical passes).

    Args:
        model: the model; put in eval mode for the collection, then restored.
        batches: a re-iterable (list, dataset) or a zero-argument callable returning a fresh
            iterable; it is read twice and must give the same batches both times.
        forward: ``forward(model, batch)`` runs one batch. Default: ``model.score_batch`` carrying
            the state from batch to batch (fresh at each pass) when the model has it, else
            ``model(batch)`` for a tensor and ``model(*batch)`` for a tuple/list.
        histogram_bins: add a histogram with this many bins over ``[min, max]`` to every record.
        progress: show a tqdm bar per pass.
        total: the number of batches, for the progress bar.
        header: the `Stats` header (default: source ``python``, no args, no seed).
        reduce: ``reduce(pass_number, collector)`` after each pass; a sharded collection merges the
            shards' accumulators there (see `compress.distributed.shards`).

    Returns:
        The `Stats` of every observed module.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
        >>> data = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
        >>> stats = collect_stats(model, data)
        >>> stats["1"]["output"]["total_numel"]
        24
    """
    make_batches = _replayable(batches)
    collector = StatsCollector(model, histogram_bins, reduce)
    was_training = model.training
    model.eval()
    try:
        # closing(): a failing pass still removes the hooks at once, not when the generator is collected.
        with torch.no_grad(), contextlib.closing(collector.passes()) as passes:
            for number in passes:
                _run_pass(model, make_batches(), forward or _default_forward(model), collector, progress, total, number)
    finally:
        model.train(was_training)
    return collector.stats(header)


def _run_pass(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Forward,
    collector: StatsCollector,
    progress: bool,
    total: int | None,
    number: int,
) -> None:
    bar = tqdm(batches, total=total, disable=not progress, desc=f"calibration pass {number}/2", unit="batch")
    for index, batch in enumerate(bar):
        forward(model, batch)
        if number == 1:
            collector.check_finite(f" (calibration batch {index})")


def _replayable(batches: Iterable[Any] | Callable[[], Iterable[Any]]) -> Callable[[], Iterable[Any]]:
    if callable(batches) and not isinstance(batches, Iterable):
        return batches
    if iter(batches) is batches:
        raise StatsError(
            "collect_stats needs batches it can read twice (the second pass computes 'b' exactly), "
            "but got a one-shot iterator. Pass a list, or a function returning a fresh iterator, "
            "e.g. lambda: data.batches('calibration')."
        )
    return lambda: batches


def _default_forward(model: nn.Module) -> Forward:
    if hasattr(model, "score_batch"):
        state: list[Any] = [None]

        def score(m: nn.Module, batch: Any) -> None:
            _, state[0] = m.score_batch(batch, state[0])

        return score
    return lambda m, batch: m(*batch) if isinstance(batch, (tuple, list)) else m(batch)


def limit(batches: Callable[[], Iterable[Any]], n: int | None) -> Callable[[], Iterable[Any]]:
    """A replayable source of at most ``n`` batches of ``batches()`` (all when ``n`` is None).

    Example:
        >>> list(limit(lambda: range(5), 2)())
        [0, 1]
    """
    return batches if n is None else (lambda: itertools.islice(batches(), n))
