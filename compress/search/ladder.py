"""Ladders: the settings each group of layers may take, ordered from cheapest to safest.

A rung is a set of override settings (the keys of an override rule, compress/quant/config/settings.py);
``{}`` is the base configuration (the experiment's own args and overrides). A group at rung ``k > 0``
gets one override rule ``{match: <its modules>, **rung}``, placed before the experiment's own rules, so
that rule (and not the base one) decides those modules.

Presets:

* ``default``: 8-bit as the base -> 8-bit with Laplace (ACIQ) clipping -> 16-bit activations (weights
  stay 8-bit, a 48-bit accumulator so the wider products cannot overflow) -> float activations with
  8-bit weights (``bits_activations: null``: a Linear keeps its int8 weights, an element-wise op runs
  in float) -> fp16 -> fp32. Widening activations costs no weight bytes; fp16/fp32 on a Linear or an
  Embedding does.
* ``int8_grid``: every rung keeps every op on an 8-bit integer grid; only the clip mode and its setting
  change (the histogram modes ``percentile`` and ``mse`` need statistics collected with
  ``histogram_bins``; a rung a group cannot take is recorded in the trace and skipped).

Example:
    >>> LADDERS["default"][0], LADDERS["default"][-1]
    ({}, {'fp32': True})
    >>> check_ladder([{}, {"clip_acts": "avg"}])
"""

from __future__ import annotations

from typing import Any

from compress.errors import QuantizationError, ScheduleError
from compress.quant.config.settings import normalize_rule_settings

__all__ = ["LADDERS", "check_ladder", "rung_text"]

LADDERS: dict[str, list[dict[str, Any]]] = {
    "default": [
        {},
        {"clip_acts": "laplace"},
        {"bits_activations": 16, "bits_accum": 48},
        {"bits_activations": None},
        {"fp16": True},
        {"fp32": True},
    ],
    "int8_grid": [
        {},
        {"clip_acts": "none"},
        {"clip_acts": "mse"},
        {"clip_acts": "percentile", "clip_percentile": 99.99},
        {"clip_acts": "percentile", "clip_percentile": 99.9},
        {"clip_acts": "laplace"},
        {"clip_acts": "n_std", "clip_n_stds": 4.0},
    ],
}

# Keys a rung may not carry: a rung says how a group is quantized, not whether it is (none/quantize
# are the sensitivity analysis' own tools) or which modules it covers (match).
_FORBIDDEN = ("match", "none", "quantize")


def check_ladder(ladder: list[dict[str, Any]]) -> None:
    """Every rung is a mapping of valid override settings, and the first rung is the base ``{}``.

    Example:
        >>> check_ladder([{"bits_activations": 99}])
        Traceback (most recent call last):
        ...
        compress.errors.ScheduleError: ladder rung #0.bits_activations: expected an integer in [2, 16] or null, got 99.
    """
    for k, rung in enumerate(ladder):
        where = f"ladder rung #{k}"
        if not isinstance(rung, dict):
            raise ScheduleError(f"{where}: a rung is a mapping of override settings such as {{fp16: true}}.")
        bad = [key for key in _FORBIDDEN if key in rung]
        if bad:
            raise ScheduleError(f"{where}: '{bad[0]}' cannot be a rung setting; a rung says how a group is quantized.")
        try:
            normalize_rule_settings(dict(rung), where)
        except QuantizationError as err:
            raise ScheduleError(str(err)) from None
    if ladder and ladder[0]:
        raise ScheduleError(
            "ladder rung #0 must be {} (the base configuration the search starts from); put "
            f"{ladder[0]} in the experiment's args instead, or after the {{}} rung."
        )


def rung_text(rung: dict[str, Any]) -> str:
    """A rung as a short label for tables.

    Example:
        >>> rung_text({}), rung_text({"bits_activations": 16, "bits_accum": 48})
        ('base', 'bits_activations=16 bits_accum=48')
    """
    return " ".join(f"{k}={v}" for k, v in rung.items()) or "base"
