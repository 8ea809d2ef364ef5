"""Net-aware range clipping: narrow the output range of a module that only feeds a saturating activation.

A sigmoid is within 0.0025 of its limits beyond +-6 and a tanh within 0.0007 beyond +-4, so values
outside those bounds need no resolution; spending the integer grid on them wastes precision (the old
tool's "activation stats fusion"). With ``net_aware_clip: true`` the quantizer clips ``min``,
``max``, ``avg_min`` and ``avg_max`` of the producer's **output** stats to ``[-B, B]`` (a range
entirely outside collapses onto the bound; ``mean``/``std``/``b``/histograms are untouched).

There is no graph tracing, so "feeds" is declared structurally:

======================================  =========================================  =======
producer (name pattern)                 consumers (same prefix)                    bound
======================================  =========================================  =======
``<cell>.eltwiseadd_gate`` (LSTM)        ``act_i``, ``act_f``, ``act_o`` (sigmoid),  +-6
                                        ``act_g`` (tanh)
``<cell>.eltwiseadd_cell`` (LSTM)        ``act_h`` (tanh)                           +-4
``<cell>.eltwiseadd_reset`` (GRU)        ``act_r`` (sigmoid)                        +-6
``<cell>.eltwiseadd_update`` (GRU)       ``act_z`` (sigmoid)                        +-6
``<cell>.eltwiseadd_new`` (GRU)          ``act_n`` (tanh)                           +-4
child ``k`` of an ``nn.Sequential``     child ``k+1`` if Sigmoid / Tanh            +-6/+-4
======================================  =========================================  =======

The bound of a set of consumers is the sigmoid's 6 as soon as one is a sigmoid (a mix of sigmoid
and tanh, like the LSTM gates, as in the old tool), else the tanh's 4. A row applies only when every
consumer exists and is a Sigmoid or Tanh. Caveat: the LSTM cell state ``c`` is also carried to the
next step, so clipping ``eltwiseadd_cell`` to +-4 also clamps the quantized state; the old tool's
tracer did not clip it (``c`` has two successors). Leave ``net_aware_clip`` off to keep it.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    >>> stats, log = net_aware_clip(model, {"0": {"output": {"min": -9.0, "max": 3.0, "avg_min": -5.0}}})
    >>> stats["0"]["output"]
    {'min': -4.0, 'max': 3.0, 'avg_min': -4.0}
    >>> log
    ['0: output range clipped to +-4 (feeds 1 (Tanh)): min -9 -> -4, avg_min -5 -> -4']
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = ["Feed", "FEEDS", "ACTIVATION_BOUNDS", "net_aware_clip", "feeds", "clip_record", "plain_copy"]

#: Saturating activation -> bound beyond which its output is flat.
ACTIVATION_BOUNDS: tuple[tuple[type[nn.Module], float], ...] = ((nn.Sigmoid, 6.0), (nn.Tanh, 4.0))
CLIPPED_KEYS = ("min", "max", "avg_min", "avg_max")


@dataclass(frozen=True)
class Feed:
    """A producer name pattern (group ``p`` = prefix) and the sibling modules it feeds."""

    producer: str
    consumers: tuple[str, ...]


FEEDS: tuple[Feed, ...] = (
    Feed(r"(?P<p>(?:.*\.)?)eltwiseadd_gate", ("act_i", "act_f", "act_g", "act_o")),
    Feed(r"(?P<p>(?:.*\.)?)eltwiseadd_cell", ("act_h",)),
    Feed(r"(?P<p>(?:.*\.)?)eltwiseadd_reset", ("act_r",)),
    Feed(r"(?P<p>(?:.*\.)?)eltwiseadd_update", ("act_z",)),
    Feed(r"(?P<p>(?:.*\.)?)eltwiseadd_new", ("act_n",)),
)


def _bound(consumers: list[nn.Module | None]) -> float | None:
    bounds = []
    for module in consumers:
        found = [b for t, b in ACTIVATION_BOUNDS if type(module) is t]
        if not found:
            return None
        bounds.append(found[0])
    return max(bounds) if bounds else None


def feeds(model: nn.Module) -> dict[str, tuple[float, list[str]]]:
    """Producer name -> (bound, consumer names) for every table row that applies to ``model``.

    Example:
        >>> feeds(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid()))
        {'0': (6.0, ['1'])}
    """
    modules = dict(model.named_modules())
    found: dict[str, tuple[float, list[str]]] = {}
    for name in modules:
        for feed in FEEDS:
            match = re.fullmatch(feed.producer, name)
            if match:
                names = [match["p"] + c for c in feed.consumers]
                bound = _bound([modules.get(n) for n in names])
                if bound is not None:
                    found[name] = (bound, names)
    found.update(_sequential_feeds(model))
    return found


def _sequential_feeds(model: nn.Module) -> dict[str, tuple[float, list[str]]]:
    found = {}
    for seq_name, seq in model.named_modules():
        if type(seq) is not nn.Sequential:
            continue
        children = list(seq.named_children())
        for (a, _), (b, consumer) in zip(children, children[1:], strict=False):
            bound = _bound([consumer])
            if bound is not None:
                prefix = f"{seq_name}." if seq_name else ""
                found[prefix + a] = (bound, [prefix + b])
    return found


def clip_record(record: dict[str, Any], bound: float) -> list[str]:
    """Clip ``record``'s range keys to ``[-bound, bound]`` in place; returns ``"key old -> new"`` changes.

    Example:
        >>> rec = {"min": 7.0, "max": 9.0}
        >>> clip_record(rec, 6.0), rec
        (['min 7 -> 6', 'max 9 -> 6'], {'min': 6.0, 'max': 6.0})
    """
    changes = []
    for key in CLIPPED_KEYS:
        if key in record:
            old = float(record[key])
            new = min(max(old, -bound), bound)
            if new != old:
                record[key] = new
                changes.append(f"{key} {old:g} -> {new:g}")
    return changes


def plain_copy(obj: Any) -> Any:
    """A deep copy with every Mapping turned into a plain dict (stats objects may use their own types).

    Example:
        >>> from types import MappingProxyType
        >>> plain_copy(MappingProxyType({"a": MappingProxyType({"b": [1.0]})}))
        {'a': {'b': [1.0]}}
    """
    if isinstance(obj, Mapping):
        return {k: plain_copy(v) for k, v in obj.items()}
    return copy.deepcopy(obj)


def net_aware_clip(model: nn.Module, stats: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``stats`` with the output range of every producer in :data:`FEEDS` clipped, and a log.

    Args:
        model: the float model (names and types decide what feeds what).
        stats: ``name -> {"inputs": ..., "output": {...}}``; never modified.

    Returns:
        The clipped copy (plain dicts) and one line per clipped producer.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid())
        >>> net_aware_clip(model, {"0": {"output": {"min": -1.0, "max": 1.0}}})[1]
        []
    """
    out = plain_copy(stats)
    modules = dict(model.named_modules())
    log = []
    for name, (bound, consumers) in feeds(model).items():
        record = out.get(name, {}).get("output")
        if not isinstance(record, dict):
            continue
        changes = clip_record(record, bound)
        if changes:
            targets = ", ".join(f"{c} ({type(modules[c]).__name__})" for c in consumers)
            log.append(f"{name}: output range clipped to +-{bound:g} (feeds {targets}): {', '.join(changes)}")
    return out, log
