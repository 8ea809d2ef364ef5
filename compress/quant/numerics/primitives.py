"""Pure range-linear quantization math: tensors in, tensors out, no modules, no state.

Conventions follow the old tool (Distiller), not PyTorch:

* the **scale is a multiplier**: ``q = round(scale * x - zp)`` and ``x = (q + zp) / scale``;
  PyTorch's scale is ``1 / scale`` and its zero point is ``-zp`` (see :func:`to_pytorch_qparams`);
* rounding is ``torch.round`` (half to even), for codes and for zero points;
* symmetric: ``scale = n / sat`` with ``n = (2^b - 1) / 2`` (full range, e.g. 127.5) or
  ``n = 2^(b-1) - 1`` (restricted, 127); a saturation of 0 gives scale 1;
* asymmetric: the range is first widened to include 0, ``scale = (2^b - 1) / (max - min)``
  (zero width gives 1), ``zp = round(scale * min)``, plus ``2^(b-1)`` for the signed variant.

All scales and zero points are float64 tensors and all codes are integer-valued float64
tensors: float64 holds every integer up to 2^53 exactly, so products and sums of codes are
exact and identical on every device (no float32 rounding, no TF32).

Example:
    >>> scale, zp = scale_zero_point(-2.0, 10.0, 8, "asymmetric_unsigned")
    >>> float(scale), float(zp)
    (21.25, -42.0)
    >>> quantize(torch.tensor([1.0]), scale, zp, *mode_qrange(8, "asymmetric_unsigned"))
    tensor([63.], dtype=torch.float64)
"""

from __future__ import annotations

import math
from enum import Enum

import torch

from compress.errors import QuantizationError

__all__ = [
    "QuantMode",
    "parse_mode",
    "is_symmetric",
    "qrange",
    "mode_qrange",
    "accum_range",
    "symmetric_scale",
    "asymmetric_scale_zero_point",
    "scale_zero_point",
    "quantize",
    "quantize_unclamped",
    "dequantize",
    "fake_quantize",
    "approx_mult_shift",
    "approx_scale",
    "to_pytorch_qparams",
    "from_pytorch_qparams",
    "exact_product_bound",
    "MIN_BITS",
    "MAX_BITS",
    "MAX_EXACT_BITS",
]

MIN_BITS = 2
MAX_BITS = 16
# float64 has a 53-bit significand: every integer of magnitude <= 2^53 is exact.
MAX_EXACT_BITS = 53

_MODE_ALIASES = {
    "sym": "symmetric",
    "sym_restr": "symmetric_restricted",
    "asym_s": "asymmetric_signed",
    "asym_u": "asymmetric_unsigned",
}


class QuantMode(str, Enum):
    """How a float range maps onto an integer grid."""

    SYMMETRIC = "symmetric"
    SYMMETRIC_RESTRICTED = "symmetric_restricted"
    ASYMMETRIC_SIGNED = "asymmetric_signed"
    ASYMMETRIC_UNSIGNED = "asymmetric_unsigned"


def parse_mode(value: QuantMode | str) -> QuantMode:
    """A :class:`QuantMode` from a member, a lower/upper-case name or an old CLI alias.

    Example:
        >>> parse_mode("ASYMMETRIC_SIGNED"), parse_mode("sym")
        (<QuantMode.ASYMMETRIC_SIGNED: 'asymmetric_signed'>, <QuantMode.SYMMETRIC: 'symmetric'>)
    """
    if isinstance(value, QuantMode):
        return value
    text = str(value).strip().lower()
    text = _MODE_ALIASES.get(text, text)
    try:
        return QuantMode(text)
    except ValueError:
        allowed = ", ".join(m.value for m in QuantMode)
        raise QuantizationError(f"Unknown quantization mode {value!r}; use one of: {allowed}.") from None


def is_symmetric(mode: QuantMode | str) -> bool:
    """True for the two symmetric modes (zero point always 0).

    Example:
        >>> is_symmetric("symmetric_restricted"), is_symmetric("asymmetric_signed")
        (True, False)
    """
    return parse_mode(mode) in (QuantMode.SYMMETRIC, QuantMode.SYMMETRIC_RESTRICTED)


def _check_bits(bits: int, low: int = 1, high: int = MAX_EXACT_BITS) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not low <= bits <= high:
        raise QuantizationError(f"Bit width must be an integer in [{low}, {high}], got {bits!r}.")
    return bits


def qrange(bits: int, signed: bool = True, restricted: bool = False) -> tuple[int, int]:
    """The integer range of a ``bits``-wide code.

    Unsigned ``[0, 2^b-1]``; signed ``[-2^(b-1), 2^(b-1)-1]``; restricted signed
    ``[-(2^(b-1)-1), 2^(b-1)-1]`` (symmetric around 0).

    Example:
        >>> qrange(4, signed=False), qrange(4), qrange(4, restricted=True)
        ((0, 15), (-8, 7), (-7, 7))
    """
    _check_bits(bits)
    if not signed:
        return 0, 2**bits - 1
    top = 2 ** (bits - 1) - 1
    return (-top if restricted else -top - 1), top


def mode_qrange(bits: int, mode: QuantMode | str) -> tuple[int, int]:
    """The code range a mode clamps to (legacy symmetric uses the full signed range too).

    Example:
        >>> mode_qrange(8, "symmetric_restricted"), mode_qrange(8, "asymmetric_unsigned")
        ((-127, 127), (0, 255))
    """
    mode = parse_mode(mode)
    if mode is QuantMode.ASYMMETRIC_UNSIGNED:
        return qrange(bits, signed=False)
    return qrange(bits, signed=True, restricted=mode is QuantMode.SYMMETRIC_RESTRICTED)


def accum_range(bits: int) -> tuple[int, int]:
    """The signed range of a ``bits``-wide accumulator (at most 53 bits, the exact range of float64).

    Example:
        >>> accum_range(32)
        (-2147483648, 2147483647)
    """
    return qrange(_check_bits(bits, 2, MAX_EXACT_BITS), signed=True)


def _f64(value: float | torch.Tensor) -> torch.Tensor:
    # No copy: nothing here modifies a tensor in place.
    return torch.as_tensor(value, dtype=torch.float64)


def _div(numerator: float, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` correctly rounded: ``float / tensor`` in PyTorch is computed as
    ``reciprocal(tensor) * float``, two roundings, which moves some scales by one ulp (and then a
    code sitting on a .5 tie rounds the other way)."""
    return torch.div(torch.full_like(denominator, numerator), denominator)


def symmetric_scale(
    bits: int, sat: float | torch.Tensor, restricted: bool = False, legacy: bool = False
) -> torch.Tensor:
    """Scale for symmetric quantization of ``[-sat, sat]``; ``sat == 0`` gives scale 1.

    ``legacy`` reproduces the old tool before its 2020 fix (numerator ``2^(b-1)-1`` but clamp
    to the full signed range), which produced every number in the LSTM notebook.

    Example:
        >>> float(symmetric_scale(8, 4.0)), float(symmetric_scale(8, 4.0, restricted=True))
        (31.875, 31.75)
    """
    _check_bits(bits)
    sat = _f64(sat)
    if bool((sat < 0).any()) or not bool(torch.isfinite(sat).all()):
        raise QuantizationError(f"Saturation value must be finite and >= 0, got {sat.tolist()}.")
    n = (2 ** (bits - 1) - 1) if (restricted or legacy) else (2**bits - 1) / 2
    # A zero range has no meaningful grid; scale 1 keeps q == x == 0 well defined.
    return torch.where(sat > 0, _div(n, torch.where(sat > 0, sat, 1.0)), torch.ones_like(sat))


def asymmetric_scale_zero_point(
    bits: int, lo: float | torch.Tensor, hi: float | torch.Tensor, signed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integral zero point for ``[lo, hi]`` widened to include 0.

    Example:
        >>> [float(t) for t in asymmetric_scale_zero_point(8, -2.0, 10.0, signed=True)]
        [21.25, 86.0]
    """
    _check_bits(bits)
    lo, hi = _f64(lo), _f64(hi)
    if bool((lo > hi).any()) or not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise QuantizationError(f"Range must be finite with min <= max, got [{lo.tolist()}, {hi.tolist()}].")
    # Widening to include 0 makes 0.0 exactly representable (padding, ReLU zeros).
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    width = hi - lo
    scale = torch.where(width > 0, _div(2**bits - 1, torch.where(width > 0, width, 1.0)), torch.ones_like(width))
    zp = torch.round(scale * lo)
    if signed:
        zp = zp + 2 ** (bits - 1)
    return scale, zp


def scale_zero_point(
    lo: float | torch.Tensor,
    hi: float | torch.Tensor,
    bits: int,
    mode: QuantMode | str,
    legacy_symmetric: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of ``[lo, hi]`` in ``mode`` (per tensor, or per channel for 1-D ``lo``/``hi``).

    Symmetric modes use ``sat = max(|lo|, |hi|)``. ``legacy_symmetric`` only affects ``symmetric``.

    Example:
        >>> [round(float(t), 4) for t in scale_zero_point(-16.0189, 34.7364, 8, "asymmetric_signed")]
        [5.0241, 48.0]
    """
    mode = parse_mode(mode)
    lo, hi = _f64(lo), _f64(hi)
    if mode in (QuantMode.SYMMETRIC, QuantMode.SYMMETRIC_RESTRICTED):
        if bool((lo > hi).any()):
            raise QuantizationError(f"Range must have min <= max, got [{lo.tolist()}, {hi.tolist()}].")
        sat = torch.maximum(lo.abs(), hi.abs())
        restricted = mode is QuantMode.SYMMETRIC_RESTRICTED
        scale = symmetric_scale(bits, sat, restricted=restricted, legacy=legacy_symmetric)
        return scale, torch.zeros_like(scale)
    return asymmetric_scale_zero_point(bits, lo, hi, signed=mode is QuantMode.ASYMMETRIC_SIGNED)


def _along(param: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Reshape a per-channel parameter so it broadcasts along ``axis`` of ``x``."""
    param = param.to(device=x.device, dtype=torch.float64)
    if axis is None or param.dim() == 0:
        return param
    shape = [1] * x.dim()
    shape[axis] = -1
    return param.reshape(shape)


def quantize_unclamped(
    x: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | float, axis: int | None = None
) -> torch.Tensor:
    """``round(scale * x - zp)`` in float64, before clamping (used to count saturation).

    Example:
        >>> quantize_unclamped(torch.tensor([0.5, 1.5, 9.0]), 1.0, 0.0)
        tensor([0., 2., 9.], dtype=torch.float64)
    """
    x64 = x.to(torch.float64)
    return torch.round(_along(_f64(scale), x64, axis) * x64 - _along(_f64(zero_point), x64, axis))


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | float,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> torch.Tensor:
    """Integer codes ``clamp(round(scale * x - zp), qmin, qmax)`` as an integer-valued float64 tensor.

    Args:
        x: float tensor.
        scale: multiplier (scalar, or 1-D per channel along ``axis``).
        zero_point: integral zero point, same shape as ``scale``.
        qmin: lowest code.
        qmax: highest code.
        axis: the channel dimension of ``x`` for per-channel parameters.

    Example:
        >>> quantize(torch.tensor([-1.0, 0.26, 3.0]), 31.875, 0.0, -128, 127)
        tensor([-32.,   8.,  96.], dtype=torch.float64)
    """
    return torch.clamp(quantize_unclamped(x, scale, zero_point, axis), qmin, qmax)


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | float,
    axis: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Float values ``(q + zp) / scale``, computed in float64 and returned as ``dtype``.

    Example:
        >>> dequantize(torch.tensor([63.0]), 21.25, -42.0)
        tensor([0.9882])
    """
    q64 = q.to(torch.float64)
    out = (q64 + _along(_f64(zero_point), q64, axis)) / _along(_f64(scale), q64, axis)
    return out.to(dtype)


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor | float,
    zero_point: torch.Tensor | float,
    qmin: int,
    qmax: int,
    axis: int | None = None,
) -> torch.Tensor:
    """Quantize then dequantize, returned in ``x``'s dtype.

    Example:
        >>> fake_quantize(torch.tensor([0.3]), 10.0, 0.0, -128, 127)
        tensor([0.3000])
    """
    return dequantize(quantize(x, scale, zero_point, qmin, qmax, axis), scale, zero_point, axis, dtype=x.dtype)


def approx_mult_shift(scale: torch.Tensor | float, mult_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer ``mult`` (< 2^mult_bits) and ``shift`` with ``mult / 2^shift ~= scale`` (rounded down).

    ``shift = floor(log2((2^m - 1) / scale))`` and ``mult = floor(scale * 2^shift)``, as in the old tool.

    Example:
        >>> [float(t) for t in approx_mult_shift(0.3, 8)]
        [153.0, 9.0]
    """
    _check_bits(mult_bits, 1, MAX_EXACT_BITS)
    scale = _f64(scale)
    if bool((scale <= 0).any()):
        raise QuantizationError(f"Scale approximation needs positive scales, got {scale.tolist()}.")
    shift = torch.floor(torch.log2((2**mult_bits - 1) / scale))
    mult = torch.floor(scale * torch.exp2(shift))
    return mult, shift


def approx_scale(scale: torch.Tensor | float, mult_bits: int | None) -> torch.Tensor:
    """``scale`` replaced by its multiply-and-shift approximation (unchanged when ``mult_bits`` is None).

    Example:
        >>> float(approx_scale(0.3, 8))
        0.298828125
    """
    if mult_bits is None:
        return _f64(scale)
    mult, shift = approx_mult_shift(scale, mult_bits)
    return mult / torch.exp2(shift)


def to_pytorch_qparams(
    scale: torch.Tensor | float, zero_point: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch's ``(scale, zero_point)``: ``(1 / scale, -zp)`` (PyTorch: ``q = round(x / s) + z``).

    Example:
        >>> [float(t) for t in to_pytorch_qparams(4.0, -42.0)]
        [0.25, 42.0]
    """
    return _div(1.0, _f64(scale)), -_f64(zero_point)


def from_pytorch_qparams(
    scale: torch.Tensor | float, zero_point: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`to_pytorch_qparams`.

    Example:
        >>> [float(t) for t in from_pytorch_qparams(0.25, 42)]
        [4.0, -42.0]
    """
    return _div(1.0, _f64(scale)), -_f64(zero_point)


def exact_product_bound(*magnitudes: float) -> bool:
    """True when a product/sum bounded by the product of ``magnitudes`` stays exact in float64.

    Example:
        >>> exact_product_bound(4096, 2**15, 2**16), exact_product_bound(2**30, 2**30)
        (True, False)
    """
    return math.prod(magnitudes) <= 2**MAX_EXACT_BITS
