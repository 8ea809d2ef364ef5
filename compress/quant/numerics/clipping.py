"""Clip modes: the float range ``[lo, hi]`` a quantizer maps onto its integer grid, from a stats record.

A stats record is the old tool's per-tensor dict (``min, max, avg_min, avg_max, mean, std, b, ...``
and optionally ``histogram: {lo, hi, counts}``). Each mode reads only the keys it needs:

========== =====================================================================================
mode       range
========== =====================================================================================
none       ``[min, max]``
avg        ``[avg_min, avg_max]`` (the mean over batches of each sample's extremes)
n_std      ``[max(min, mean - n*std), min(max, mean + n*std)]`` (needs ``clip_n_stds``)
gauss      ACIQ: ``alpha = std * a_gauss(bits)``, then as ``n_std`` with ``alpha`` for ``n*std``
laplace    ACIQ: ``alpha = b * a_laplace(bits)`` (``b`` = mean absolute deviation), idem
percentile ``[P(100 - p), P(p)]`` of the histogram (``clip_percentile`` p, default 99.99)
mse        the range, shrunk towards 0, minimising the expected quantization MSE over the histogram
========== =====================================================================================

``half_range`` (for ReLU-like outputs) raises ``lo`` to 0 and, for ACIQ, uses the half-range alpha.

**ACIQ alphas** (Banner et al., arXiv:1810.05723). For a unit-scale density clipped to
``[-a, a]`` and quantized uniformly into ``2^M`` bins, the expected squared error is the clipping
noise of both tails plus the rounding noise ``step^2 / 12`` with ``step = 2a / 2^M``:

* Laplace(0, 1): ``E(a) = 2 exp(-a) + a^2 / (3 * 4^M)``
* Gauss(0, 1):  ``E(a) = 2 [(1 + a^2) Q(a) - a phi(a)] + a^2 / (3 * 4^M)`` (``Q`` = upper tail)

:func:`aciq_alpha` minimises ``E`` numerically: ``E`` is convex near its minimum, so a bisection on
the sign of ``dE/da`` over ``[0.01, 40]`` (60 halvings, far below the 0.01 the tables print) finds
it. This reproduces the published tables (Laplace 2.83, 3.89, 5.03, ..., 9.89 for M = 2..8; Gauss
1.71, 2.15, 2.56, ..., 3.92). For a half range ``[0, a]`` holding the positive half of the
density, both error terms halve and the step is ``a / 2^M``, which is the full-range problem with
``M + 1`` bits, so ``alpha_half(M) = alpha(M + 1)``.

Example:
    >>> clip_range({"min": -3.0, "max": 5.0, "avg_min": -1.0, "avg_max": 2.0}, "avg", bits=8)
    (-1.0, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from functools import cache
from typing import Any

import torch

from compress.errors import QuantizationError
from compress.quant.numerics.primitives import QuantMode, mode_qrange, parse_mode, scale_zero_point

__all__ = [
    "ClipMode",
    "parse_clip_mode",
    "clip_range",
    "aciq_alpha",
    "aciq_expected_mse",
    "histogram_percentile_range",
    "histogram_mse_range",
    "DEFAULT_PERCENTILE",
]

DEFAULT_PERCENTILE = 99.99
MSE_CANDIDATES = 200  # shrink factors tried by the mse mode: 1/200 .. 200/200 of the full range


class ClipMode(str, Enum):
    """How the quantized range is chosen from the statistics."""

    NONE = "none"
    AVG = "avg"
    N_STD = "n_std"
    GAUSS = "gauss"
    LAPLACE = "laplace"
    PERCENTILE = "percentile"
    MSE = "mse"


def parse_clip_mode(value: ClipMode | str | None) -> ClipMode:
    """A :class:`ClipMode` from a member, a lower/upper-case name or None (``none``).

    Example:
        >>> parse_clip_mode("AVG"), parse_clip_mode(None)
        (<ClipMode.AVG: 'avg'>, <ClipMode.NONE: 'none'>)
    """
    if value is None:
        return ClipMode.NONE
    if isinstance(value, ClipMode):
        return value
    try:
        return ClipMode(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(m.value for m in ClipMode)
        raise QuantizationError(f"Unknown clip mode {value!r}; use one of: {allowed}.") from None


# ----------------------------------------------------------------------------- ACIQ


def _gauss_tail(a: float) -> tuple[float, float]:
    """Upper tail Q(a) and density phi(a) of the standard normal."""
    return 0.5 * math.erfc(a / math.sqrt(2.0)), math.exp(-a * a / 2.0) / math.sqrt(2.0 * math.pi)


def aciq_expected_mse(alpha: float, distribution: str, bits: int) -> float:
    """Expected clipping + rounding MSE of a unit Laplace/Gauss clipped to ``[-alpha, alpha]`` (see module doc).

    Example:
        >>> round(aciq_expected_mse(9.8968, "laplace", 8), 8)
        0.00059885
    """
    rounding = alpha * alpha / (3.0 * 4.0**bits)
    if distribution == "laplace":
        return 2.0 * math.exp(-alpha) + rounding
    if distribution == "gauss":
        q, phi = _gauss_tail(alpha)
        return 2.0 * ((1.0 + alpha * alpha) * q - alpha * phi) + rounding
    raise QuantizationError(f"ACIQ distribution must be 'laplace' or 'gauss', got {distribution!r}.")


def _aciq_slope(alpha: float, distribution: str, bits: int) -> float:
    """dE/dalpha of :func:`aciq_expected_mse` (closed form: the tails' derivative plus 2a / (3 * 4^M))."""
    rounding = 2.0 * alpha / (3.0 * 4.0**bits)
    if distribution == "laplace":
        return -2.0 * math.exp(-alpha) + rounding
    q, phi = _gauss_tail(alpha)
    # d/da [(1+a^2)Q - a*phi] = 2aQ - (1+a^2)phi - phi + a^2 phi = 2(aQ - phi)
    return 4.0 * (alpha * q - phi) + rounding


@cache
def aciq_alpha(distribution: str, bits: int, half_range: bool = False) -> float:
    """The clipping value (in units of ``b`` or ``std``) minimising :func:`aciq_expected_mse`.

    Args:
        distribution: ``"laplace"`` or ``"gauss"``.
        bits: bit width ``M`` (any 1..53; the old tool's tables stopped at 8).
        half_range: range ``[0, alpha]`` for ReLU-like outputs: ``alpha(M + 1)``.

    Example:
        >>> round(aciq_alpha("laplace", 8), 2), round(aciq_alpha("gauss", 4), 2)
        (9.9, 2.56)
    """
    if distribution not in ("laplace", "gauss"):
        raise QuantizationError(f"ACIQ distribution must be 'laplace' or 'gauss', got {distribution!r}.")
    m = bits + 1 if half_range else bits
    lo, hi = 0.01, 40.0
    for _ in range(60):  # the slope is negative below the minimum and positive above it
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _aciq_slope(mid, distribution, m) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- histograms


def _histogram(record: Mapping[str, Any], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin edges and counts (float64) of a record's ``histogram`` entry, or a clear error."""
    hist = record.get("histogram")
    if not isinstance(hist, Mapping) or not {"lo", "hi", "counts"} <= set(hist):
        raise QuantizationError(
            f"{name}: clip modes 'percentile' and 'mse' need a histogram in the statistics "
            "('histogram: {lo, hi, counts}'); collect the stats with histogram_bins set "
            "(e.g. stats: {source: collect, histogram_bins: 2048})."
        )
    counts = torch.as_tensor(hist["counts"], dtype=torch.float64)
    lo, hi = float(hist["lo"]), float(hist["hi"])
    if counts.dim() != 1 or counts.numel() == 0 or not lo <= hi or float(counts.sum()) <= 0:
        raise QuantizationError(f"{name}: histogram needs lo <= hi and a non-empty list of counts.")
    return torch.linspace(lo, hi, counts.numel() + 1, dtype=torch.float64), counts


def histogram_percentile_range(record: Mapping[str, Any], percentile: float, name: str = "") -> tuple[float, float]:
    """``[P(100-p), P(p)]`` of the histogram, linearly interpolated inside a bin.

    Example:
        >>> histogram_percentile_range({"histogram": {"lo": 0.0, "hi": 4.0, "counts": [1, 1, 1, 1]}}, 75.0)
        (1.0, 3.0)
    """
    edges, counts = _histogram(record, name)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(counts, 0)]) / counts.sum()
    return _interp(cdf, edges, 1.0 - percentile / 100.0), _interp(cdf, edges, percentile / 100.0)


def _interp(cdf: torch.Tensor, edges: torch.Tensor, level: float) -> float:
    """The edge value where the piecewise-linear CDF reaches ``level``."""
    i = int(torch.searchsorted(cdf, torch.tensor([level], dtype=torch.float64)).item())
    i = min(max(i, 1), cdf.numel() - 1)
    c0, c1 = float(cdf[i - 1]), float(cdf[i])
    t = 0.0 if c1 == c0 else (level - c0) / (c1 - c0)
    return float(edges[i - 1] + t * (edges[i] - edges[i - 1]))


def histogram_mse_range(
    record: Mapping[str, Any], bits: int, mode: QuantMode | str, name: str = "", legacy_symmetric: bool = False
) -> tuple[float, float]:
    """The range ``f * [lo, hi]`` (``f`` in 1/200 .. 1) with the least expected quantization MSE.

    Values inside the representable range cost ``step^2 / 12``; values outside cost their squared
    distance to the nearest bound (bins are represented by their centres).

    Example:
        >>> rec = {"histogram": {"lo": -10.0, "hi": 10.0, "counts": [1] + [0] * 48 + [1000, 1000] + [0] * 48 + [1]}}
        >>> lo, hi = histogram_mse_range(rec, 4, "symmetric")
        >>> hi < 10.0
        True
    """
    edges, counts = _histogram(record, name)
    centres = (edges[:-1] + edges[1:]) / 2
    f = torch.arange(1, MSE_CANDIDATES + 1, dtype=torch.float64) / MSE_CANDIDATES
    lo, hi = float(edges[0]) * f, float(edges[-1]) * f
    scale, zp = scale_zero_point(torch.minimum(lo, hi), torch.maximum(lo, hi), bits, mode, legacy_symmetric)
    qmin, qmax = mode_qrange(bits, mode)
    low, high = (qmin + zp) / scale, (qmax + zp) / scale
    clipped = torch.minimum(torch.maximum(centres[None, :], low[:, None]), high[:, None])
    inside = (centres[None, :] >= low[:, None]) & (centres[None, :] <= high[:, None])
    err = torch.where(inside, (1.0 / scale[:, None]) ** 2 / 12.0, (centres[None, :] - clipped) ** 2)
    best = int(torch.argmin((err * counts[None, :]).sum(1)))
    return float(lo[best]), float(hi[best])


# ----------------------------------------------------------------------------- dispatch


def _need(record: Mapping[str, Any], keys: tuple[str, ...], clip: ClipMode, name: str) -> list[float]:
    missing = [k for k in keys if k not in record]
    if missing:
        raise QuantizationError(
            f"{name}: clip mode '{clip.value}' reads {', '.join(keys)} from the statistics, but "
            f"{', '.join(missing)} is missing; collect full statistics or choose another clip mode."
        )
    values = [float(record[k]) for k in keys]
    if not all(math.isfinite(v) for v in values):
        raise QuantizationError(
            f"{name}: statistics {dict(zip(keys, values, strict=True))} are not finite (did it ever run?)."
        )
    return values


def _intersect(record: Mapping[str, Any], mean: float, alpha: float, clip: ClipMode, name: str) -> tuple[float, float]:
    lo, hi = _need(record, ("min", "max"), clip, name)
    return max(lo, mean - alpha), min(hi, mean + alpha)


def _aciq_range(record: Mapping[str, Any], clip: ClipMode, bits: int, half: bool, name: str) -> tuple[float, float]:
    key, dist = ("b", "laplace") if clip is ClipMode.LAPLACE else ("std", "gauss")
    mean, spread = _need(record, ("mean", key), clip, name)
    return _intersect(record, mean, spread * aciq_alpha(dist, bits, half), clip, name)


def _raw_range(record: Mapping[str, Any], clip: ClipMode, opts: dict[str, Any], name: str) -> tuple[float, float]:
    if clip is ClipMode.NONE:
        return tuple(_need(record, ("min", "max"), clip, name))  # type: ignore[return-value]
    if clip is ClipMode.AVG:
        return tuple(_need(record, ("avg_min", "avg_max"), clip, name))  # type: ignore[return-value]
    if clip is ClipMode.N_STD:
        n = opts.get("n_stds")
        if n is None or n <= 0:
            raise QuantizationError(f"{name}: clip mode 'n_std' needs clip_n_stds > 0, got {n!r}.")
        mean, std = _need(record, ("mean", "std"), clip, name)
        return _intersect(record, mean, n * std, clip, name)
    if clip in (ClipMode.GAUSS, ClipMode.LAPLACE):
        return _aciq_range(record, clip, opts["bits"], opts["half_range"], name)
    if clip is ClipMode.PERCENTILE:
        return histogram_percentile_range(record, opts.get("percentile") or DEFAULT_PERCENTILE, name)
    return histogram_mse_range(record, opts["bits"], opts["mode"], name, opts.get("legacy_symmetric", False))


def clip_range(
    record: Mapping[str, Any],
    clip: ClipMode | str | None,
    *,
    bits: int,
    mode: QuantMode | str = QuantMode.SYMMETRIC,
    n_stds: float | None = None,
    percentile: float | None = None,
    half_range: bool = False,
    legacy_symmetric: bool = False,
    name: str = "",
) -> tuple[float, float]:
    """The float range ``(lo, hi)`` to quantize, from one stats record.

    Args:
        record: ``{min, max, avg_min, avg_max, mean, std, b, histogram?}`` (only the keys the mode reads).
        clip: clip mode (see module doc).
        bits: bit width (ACIQ and mse depend on it).
        mode: quantization mode (mse evaluates the real grid).
        n_stds: for ``n_std``.
        percentile: for ``percentile`` (default 99.99).
        half_range: ReLU-like output: ``lo`` raised to 0 (and half-range ACIQ alphas).
        legacy_symmetric: the old tool's symmetric formula (mse evaluates that grid).
        name: module/tensor name for error messages.

    Example:
        >>> rec = {"min": -10.0, "max": 10.0, "mean": 1.0, "std": 2.0}
        >>> clip_range(rec, "n_std", bits=8, n_stds=3)
        (-5.0, 7.0)
    """
    clip = parse_clip_mode(clip)
    opts = {"bits": bits, "mode": parse_mode(mode), "n_stds": n_stds, "percentile": percentile}
    opts.update(half_range=half_range, legacy_symmetric=legacy_symmetric)
    lo, hi = _raw_range(record, clip, opts, name)
    if lo > hi:
        raise QuantizationError(f"{name}: statistics give min {lo} > max {hi} (a module that never ran?).")
    return (max(lo, 0.0), max(hi, 0.0)) if half_range else (lo, hi)
