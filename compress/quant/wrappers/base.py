"""Shared machinery of the quantized wrappers: activation grids from stats, buffers, saturation counting.

Every wrapper computes all its quantization parameters when it is built (from calibrated stats),
stores them as float64 buffers (so ``.to(device)`` moves them and results are identical on every
device), and carries integer-valued values in float64 between quantize and dequantize.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compress.errors import QuantizationError
from compress.quant.numerics.clipping import clip_range
from compress.quant.numerics.primitives import _along, approx_scale, mode_qrange, quantize, scale_zero_point

__all__ = ["Grid", "activation_grid", "input_records", "output_record", "QuantWrapper", "summarize", "CHUNK_ELEMENTS"]

# Elements per chunk when a large tensor is requantized piecewise: 2 MiB of float64 stays in a core's cache.
CHUNK_ELEMENTS = 1 << 18


@dataclass(frozen=True)
class Grid:
    """An integer grid: float64 scale/zero point (0-d or per channel), code range, and the float range it came from."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    clip: tuple[float, float] | None = None


def activation_grid(
    record: Mapping[str, Any], settings: Mapping[str, Any], name: str, legacy: bool, half_range: bool = False
) -> Grid:
    """The activation grid of one tensor from its stats record and the layer's settings.

    Example:
        >>> from compress.quant.config.settings import default_settings
        >>> g = activation_grid({"min": -2.0, "max": 10.0}, default_settings(mode="asymmetric_unsigned"), "x", False)
        >>> float(g.scale), float(g.zero_point), g.qmin, g.qmax, g.clip
        (21.25, -42.0, 0, 255, (-2.0, 10.0))
    """
    bits, mode = settings["bits_activations"], settings["mode_activations"]
    lo, hi = clip_range(
        record,
        settings["clip_acts"],
        bits=bits,
        mode=mode,
        n_stds=settings["clip_n_stds"],
        percentile=settings["clip_percentile"],
        half_range=half_range,
        legacy_symmetric=legacy,
        name=name,
    )
    scale, zp = scale_zero_point(lo, hi, bits, mode, legacy)
    return Grid(approx_scale(scale, settings["scale_approx_mult_bits"]), zp, *mode_qrange(bits, mode), (lo, hi))


def _record(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise QuantizationError(f"{what} are missing or malformed in the statistics (expected a mapping).")
    return value


def input_records(entry: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    """The ``inputs`` records of a stats entry ordered by index (int or digit-string keys).

    Example:
        >>> [r["max"] for r in input_records({"inputs": {"1": {"max": 2.0}, 0: {"max": 1.0}}}, "add")]
        [1.0, 2.0]
    """
    inputs = _record(entry.get("inputs"), f"{name}: input stats")
    try:
        ordered = sorted(inputs.items(), key=lambda kv: int(kv[0]))
    except (TypeError, ValueError):
        raise QuantizationError(f"{name}: input stats must be keyed by input index, got {list(inputs)}.") from None
    if [int(k) for k, _ in ordered] != list(range(len(ordered))):
        raise QuantizationError(f"{name}: input stats indices must be 0..n-1, got {[k for k, _ in ordered]}.")
    return [_record(v, f"{name}: input {k} stats") for k, v in ordered]


def output_record(entry: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The ``output`` record of a stats entry.

    Example:
        >>> output_record({"output": {"min": 0.0}}, "fc")
        {'min': 0.0}
    """
    return _record(entry.get("output"), f"{name}: output stats")


def _scaled64(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """A fresh float64 tensor ``x * scale`` (never an alias of ``x``, so callers may work in place)."""
    x64 = x.to(torch.float64)
    return x64 * scale if x64 is x else x64.mul_(scale)


def summarize(t: torch.Tensor | None) -> tuple[float | None, float | None, float | None]:
    """(min, median, max) of a scale/zero-point tensor as floats (all equal for a 0-d tensor).

    Example:
        >>> summarize(torch.tensor([1.0, 5.0, 2.0]))
        (1.0, 2.0, 5.0)
    """
    if t is None:
        return None, None, None
    flat = t.detach().to(torch.float64).flatten().cpu()
    return float(flat.min()), float(flat.median()), float(flat.max())


class QuantWrapper(nn.Module):
    """Base of the integer-simulating wrappers: grids as buffers, saturation counting, a description.

    Subclasses keep the replaced module as ``.wrapped`` (never modified) and implement ``forward``.
    """

    _compress_wrapper = True

    def __init__(self, wrapped: nn.Module, kind: str, note: str = "") -> None:
        super().__init__()
        self.wrapped = wrapped
        self.kind = kind
        self.note = note
        self.build_note = note  # the note as built; ``note`` may gain runtime remarks (kernel choice, fallbacks)
        self.track_saturation = False
        self.saturated = 0
        self.observed = 0
        self._qrange: dict[str, tuple[int, int]] = {}
        self._clip: dict[str, tuple[float, float] | None] = {}
        # Per-tensor scale and zero point as Python floats, read once at build time: the hot path then
        # does no tensor conversions per call (a float multiplier gives the same float64 product).
        self._floats: dict[str, tuple[float, float] | None] = {}

    def _set_grid(self, prefix: str, grid: Grid) -> None:
        self.register_buffer(f"{prefix}_scale", grid.scale.to(torch.float64))
        self.register_buffer(f"{prefix}_zero_point", grid.zero_point.to(torch.float64))
        self._qrange[prefix] = (grid.qmin, grid.qmax)
        self._clip[prefix] = grid.clip
        per_tensor = grid.scale.dim() == 0 and grid.zero_point.dim() == 0
        self._floats[prefix] = (float(grid.scale), float(grid.zero_point)) if per_tensor else None

    def grid(self, prefix: str) -> Grid:
        """The grid ``prefix`` (``input``, ``input0``, ``output``, ...) as built, e.g. to store it.

        Example:
            >>> g = Grid(torch.tensor(4.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -8, 7)
            >>> w = QuantWrapper(nn.Identity(), "fake"); w._set_grid("output", g); w.grid("output").qmax
            7
        """
        return Grid(self._scale(prefix), self._zp(prefix), *self._qrange[prefix], self._clip[prefix])

    def _scale(self, prefix: str) -> torch.Tensor:
        return getattr(self, f"{prefix}_scale")

    def _zp(self, prefix: str) -> torch.Tensor:
        return getattr(self, f"{prefix}_zero_point")

    def _codes(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """Codes ``clamp(round(scale * x - zp))`` of ``x`` on grid ``prefix`` (integer-valued float64).

        The same float64 operations in the same order as :func:`~compress.quant.numerics.primitives.quantize`,
        done in place on one fresh tensor.
        """
        consts = self._floats[prefix]
        if consts is None:
            return quantize(x, self._scale(prefix), self._zp(prefix), *self._qrange[prefix])
        scale, zp = consts
        codes = _scaled64(x, scale)
        if zp:  # x - 0.0 == x bit for bit, so the subtraction is only skipped when it changes nothing
            codes.sub_(zp)
        return codes.round_().clamp_(*self._qrange[prefix])

    def _quantize_input(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """Codes of ``x`` on grid ``prefix`` plus its zero point: the integer value fed to the arithmetic."""
        consts = self._floats[prefix]
        zp = self._zp(prefix) if consts is None else consts[1]
        return self._codes(x, prefix).add_(zp)

    def _emit(
        self,
        value: torch.Tensor,
        requant: torch.Tensor | float,
        dtype: torch.dtype,
        axis: int | None = None,
        owned: bool = False,
    ) -> torch.Tensor:
        """Requantize ``value * requant`` onto the output grid (counting clamped values) and dequantize.

        Same float64 operations as ``quantize_unclamped`` -> clamp -> ``dequantize``; the division
        stays by the (device) scale tensor, as in :func:`~compress.quant.numerics.primitives.dequantize`.
        ``owned``: ``value`` is the caller's float64 temporary and may be overwritten (no copy is made).
        """
        return self._dequantize_output(self._requantize(value, requant, axis, owned), dtype)

    def _requantize(
        self, value: torch.Tensor, requant: torch.Tensor | float, axis: int | None = None, owned: bool = False
    ) -> torch.Tensor:
        """The output codes ``clamp(round(value * requant - zp))`` (float64), counting clamped values."""
        if isinstance(requant, torch.Tensor) and requant.dim() and axis is not None:
            requant = _along(requant, value, axis)
        if owned and value.dtype == torch.float64:
            # x * 1.0 == x bit for bit: add/concat skip the multiplication
            codes = value if isinstance(requant, float) and requant == 1.0 else value.mul_(requant)
        else:
            codes = _scaled64(value, requant)
        return self._round_output(codes)

    def _round_output(self, codes: torch.Tensor) -> torch.Tensor:
        """``clamp(round(codes - zp))`` in place on float64 ``codes`` (the requantized accumulators)."""
        consts = self._floats["output"]
        zp = self.output_zero_point if consts is None else consts[1]
        if consts is None or zp:
            codes.sub_(zp)
        codes.round_()
        qmin, qmax = self._qrange["output"]
        if self.track_saturation:
            self.saturated += int(((codes < qmin) | (codes > qmax)).sum())
            self.observed += codes.numel()
        return codes.clamp_(qmin, qmax)

    def _dequantize_output(self, codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Float values of output codes (float64, overwritten): ``(codes + zp) / scale`` as ``dtype``."""
        consts = self._floats["output"]
        zp = self.output_zero_point if consts is None else consts[1]
        return codes.add_(zp).div_(self.output_scale).to(dtype)

    def _emit_chunked(self, value: torch.Tensor, requant: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`_emit` with a per-tensor ``requant`` in chunks of :data:`CHUNK_ELEMENTS` (element-wise: same bits)."""
        if value.numel() <= CHUNK_ELEMENTS or (isinstance(requant, torch.Tensor) and requant.dim()):
            return self._emit(value, requant, dtype)
        flat = value.reshape(-1)
        out = torch.empty(flat.shape, dtype=dtype, device=value.device)
        for i in range(0, flat.numel(), CHUNK_ELEMENTS):
            out[i : i + CHUNK_ELEMENTS] = self._emit(flat[i : i + CHUNK_ELEMENTS], requant, dtype)
        return out.view(value.shape)

    def saturation_pct(self) -> float | None:
        """Share (percent) of output values clamped while ``track_saturation`` was on; None if none seen."""
        return 100.0 * self.saturated / self.observed if self.observed else None

    def reset_tracking(self, on: bool) -> None:
        """Zero the saturation counters and switch counting on or off."""
        self.track_saturation, self.saturated, self.observed = on, 0, 0

    def describe(self) -> dict[str, Any]:
        """Scales, zero points and clip ranges for the per-layer report (weights added by subclasses)."""
        inputs = sorted(p for p in self._qrange if p.startswith("input"))
        out = "output" in self._qrange
        fused = {"kernel": self.fused_kernel} if getattr(self, "fused_kernel", None) else {}
        return {
            **fused,
            "input_scale": [float(self._scale(p).median()) for p in inputs] or None,
            "input_zero_point": [float(self._zp(p).median()) for p in inputs] or None,
            "output_scale": float(self.output_scale) if out else None,
            "output_zero_point": float(self.output_zero_point) if out else None,
            "clip_range": list(self._clip["output"]) if out and self._clip["output"] else None,
        }

    def extra_repr(self) -> str:
        parts = [f"kind={self.kind}"]
        if "output" in self._qrange:
            parts.append(f"out_scale={float(self.output_scale):.6f}, out_zp={float(self.output_zero_point):g}")
        return ", ".join(parts)
