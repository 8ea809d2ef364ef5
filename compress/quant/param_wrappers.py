"""Wrappers of modules with weights: integer Linear/Conv, weight-only fake quantization, Embedding.

Weights are quantized once into a :class:`QuantizedWeight` submodule holding ``int_weight = q + zp``
(int32; ``int_weight / scale`` is the dequantized weight) with its scale and zero point. Two wrappers
whose modules share one float Parameter (tied embedding/decoder) receive **the same**
``QuantizedWeight`` object: it is quantized once, ``model.to(device)`` moves it once (a shared
submodule stays shared, unlike a buffer registered twice), and deep copies keep the tie.

Integer Linear/Conv (``accum`` = ``s_x * s_w``, the accumulator's scale)::

    x_int = clamp(round(s_x * x - zp_x)) + zp_x          # input grid from inputs[0] stats
    acc   = clamp(x_int @ int_weight.T + bias_int)       # float64: exact integers, accumulator range
    bias_int = clamp(round(bias * s_x * s_w))            # at build time, from the calibrated s_x
    y_q   = clamp(round(acc * s_out / (s_x * s_w) - zp_out))   # output grid from output stats
    y     = (y_q + zp_out) / s_out                       # back to the input's float dtype
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import QuantizationError
from compress.quant._base import Grid, QuantWrapper, summarize
from compress.quant.primitives import (
    accum_range,
    approx_scale,
    exact_product_bound,
    mode_qrange,
    quantize,
    scale_zero_point,
)

__all__ = [
    "QuantizedWeight",
    "quantize_weight",
    "LinearQuantWrapper",
    "WeightFakeQuantWrapper",
    "EmbeddingQuantWrapper",
]


class QuantizedWeight(nn.Module):
    """An integer weight tensor (``q + zp`` as int32) with its float64 scale and zero point.

    Example:
        >>> qw = quantize_weight(torch.tensor([[0.5, -1.0], [0.25, 1.0]]), 8, "symmetric", per_channel=False)
        >>> qw.int_weight.tolist(), float(qw.scale)
        ([[64, -128], [32, 127]], 127.5)
    """

    def __init__(self, int_weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, info: dict) -> None:
        super().__init__()
        self.register_buffer("int_weight", int_weight)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.info = info  # bits, mode, per_channel, owner: what the report shows

    def scale_along(self, dim: int) -> torch.Tensor:
        """The scale shaped to broadcast over the weight (per channel along dim 0)."""
        if self.scale.dim() == 0:
            return self.scale
        return self.scale.reshape([-1] + [1] * (dim - 1))

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The float weight the integers stand for, ``int_weight / scale``."""
        return (self.int_weight.to(torch.float64) / self.scale_along(self.int_weight.dim())).to(dtype)

    def nbytes(self) -> int:
        """Deployed size: the codes at their bit width, scale and zero point as float32 each."""
        return (self.int_weight.numel() * self.info["bits"] + 7) // 8 + 8 * self.scale.numel()

    def extra_repr(self) -> str:
        i = self.info
        return f"{tuple(self.int_weight.shape)}, bits={i['bits']}, mode={i['mode']}, per_channel={i['per_channel']}"


def quantize_weight(
    weight: torch.Tensor, bits: int, mode: str, per_channel: bool, legacy: bool = False, owner: str = ""
) -> QuantizedWeight:
    """Quantize a weight from its own range (per tensor, or per output channel = index of dim 0).

    Example:
        >>> qw = quantize_weight(torch.tensor([[1.0, -2.0], [0.5, 0.25]]), 4, "symmetric", per_channel=True)
        >>> qw.scale.tolist(), qw.int_weight.tolist()
        ([3.75, 15.0], [[4, -8], [7, 4]])
    """
    w = weight.detach().to(torch.float64)
    if per_channel and w.dim() < 2:
        raise QuantizationError(f"{owner}: per-channel weights need a weight with >= 2 dims, got {tuple(w.shape)}.")
    flat = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    if not per_channel:
        lo, hi = lo[0], hi[0]
    scale, zp = scale_zero_point(lo, hi, bits, mode, legacy)
    axis = 0 if per_channel else None
    q = quantize(w, scale, zp, *mode_qrange(bits, mode), axis=axis)
    shift = zp.reshape([-1] + [1] * (w.dim() - 1)) if per_channel else zp
    info = {"bits": bits, "mode": mode, "per_channel": per_channel, "owner": owner}
    return QuantizedWeight((q + shift).to(torch.int32), scale, zp, info)


def _weight_info(qw: QuantizedWeight) -> dict[str, Any]:
    lo, mid, hi = summarize(qw.scale)
    return {
        "weight_scale": mid,
        "weight_scale_min": lo,
        "weight_scale_max": hi,
        "weight_zero_point": summarize(qw.zero_point)[1],
    }


class _WeightedWrapper(QuantWrapper):
    """A wrapper owning a (possibly shared) :class:`QuantizedWeight`."""

    def __init__(self, wrapped: nn.Module, kind: str, qweight: QuantizedWeight, note: str = "") -> None:
        super().__init__(wrapped, kind, note)
        self.qweight = qweight

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **_weight_info(self.qweight)}

    def deployed_weight_bytes(self, seen: set[int]) -> int:
        """Bytes of the integer weights (once per shared weight); marks the float originals as counted."""
        total = 0
        if id(self.qweight) not in seen:
            seen.add(id(self.qweight))
            total += self.qweight.nbytes()
        for p in self.wrapped.parameters():
            seen.add(id(p))
        return total + self._bias_bytes()

    def _bias_bytes(self) -> int:
        bias = getattr(self.wrapped, "bias", None)
        return 0 if bias is None else bias.numel() * bias.element_size()


class LinearQuantWrapper(_WeightedWrapper):
    """Integer ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` with exact float64 accumulation (see module doc).

    Example:
        >>> from compress.quant._base import Grid
        >>> fc = nn.Linear(2, 1)
        >>> g = Grid(torch.tensor(10.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
        >>> w = LinearQuantWrapper(fc, quantize_weight(fc.weight, 8, "symmetric", False), g, g, 32, None)
        >>> w(torch.zeros(3, 2)).shape
        torch.Size([3, 1])
    """

    def __init__(
        self,
        wrapped: nn.Module,
        qweight: QuantizedWeight,
        input_grid: Grid,
        output_grid: Grid,
        bits_accum: int,
        mult_bits: int | None,
        half_range: bool = False,
        note: str = "",
    ) -> None:
        super().__init__(wrapped, "linear", qweight, note)
        self._set_grid("input", input_grid)
        self._set_grid("output", output_grid)
        self.half_range = half_range
        self.accum = accum_range(bits_accum)
        accum_scale = approx_scale(input_grid.scale * qweight.scale, mult_bits)
        self.register_buffer("requant_scale", approx_scale(output_grid.scale / accum_scale, mult_bits))
        self.register_buffer("bias_int", self._bias_int(accum_scale))
        self._check_exact(input_grid)

    def _bias_int(self, accum_scale: torch.Tensor) -> torch.Tensor | None:
        # Quantized now, from the calibrated input scale: the old tool did it lazily from the first batch.
        bias = self.wrapped.bias
        if bias is None:
            return None
        return torch.clamp(torch.round(bias.detach().to(torch.float64) * accum_scale), *self.accum)

    def _check_exact(self, input_grid: Grid) -> None:
        # Every partial sum is bounded by fan_in * max|x_int| * max|w_int| (+ bias, below the accumulator
        # range): within 2^53 float64 adds and multiplies these integers exactly, in any order.
        w = self.qweight.int_weight
        fan_in, zp = w[0].numel(), float(input_grid.zero_point)
        x_max = max(abs(input_grid.qmin + zp), abs(input_grid.qmax + zp))
        if not exact_product_bound(fan_in, x_max, int(w.abs().max())):
            raise QuantizationError(
                f"Layer with fan-in {fan_in} at these bit widths can exceed 2^53, beyond exact float64 simulation; "
                "lower bits_activations/bits_weights for it."
            )

    def _channel_axis(self) -> int:
        return -1 if isinstance(self.wrapped, nn.Linear) else 1

    def _accumulate(self, x_int: torch.Tensor) -> torch.Tensor:
        w = self.qweight.int_weight.to(torch.float64)
        if isinstance(self.wrapped, nn.Linear):
            acc = F.linear(x_int, w)
        else:  # zero padding of x_int is exact: integer 0 is the real value 0 on every grid
            acc = self.wrapped._conv_forward(x_int, w, None)
        if self.bias_int is not None:
            shape = [1] * acc.dim()
            shape[self._channel_axis()] = -1
            acc = acc + self.bias_int.reshape(shape)
        return torch.clamp(acc, *self.accum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = self._accumulate(self._quantize_input(x, "input"))
        if self.half_range:
            acc = torch.relu(acc)
        axis = self._channel_axis() if self.requant_scale.dim() else None
        return self._emit(acc, self.requant_scale, x.dtype, axis)

    def _bias_bytes(self) -> int:
        return 0 if self.bias_int is None else self.bias_int.numel() * 4


class WeightFakeQuantWrapper(_WeightedWrapper):
    """Linear/Conv with integer weights dequantized back to float; activations and bias stay float.

    Example:
        >>> fc = nn.Linear(2, 1)
        >>> w = WeightFakeQuantWrapper(fc, quantize_weight(fc.weight, 8, "symmetric", False))
        >>> w(torch.zeros(3, 2)).shape
        torch.Size([3, 1])
    """

    def __init__(self, wrapped: nn.Module, qweight: QuantizedWeight, note: str = "") -> None:
        super().__init__(wrapped, "weights_only", qweight, note)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.qweight.dequantized(x.dtype)
        bias = self.wrapped.bias
        if isinstance(self.wrapped, nn.Linear):
            return F.linear(x, w, bias)
        return self.wrapped._conv_forward(x, w, bias)


class EmbeddingQuantWrapper(_WeightedWrapper):
    """``nn.Embedding`` looking up integer rows and dequantizing them (no separate output grid).

    The table is quantized from its own range (the old tool took the range from the embedding's
    output stats, which clamps rows never seen in calibration).

    Example:
        >>> emb = nn.Embedding(5, 3)
        >>> w = EmbeddingQuantWrapper(emb, quantize_weight(emb.weight, 8, "symmetric", False))
        >>> w(torch.tensor([[0, 4]])).shape
        torch.Size([1, 2, 3])
    """

    def __init__(self, wrapped: nn.Embedding, qweight: QuantizedWeight, note: str = "") -> None:
        if wrapped.max_norm is not None:
            raise QuantizationError("Embedding with max_norm renormalizes its table in place; it cannot be quantized.")
        super().__init__(wrapped, "embedding", qweight, note)
        self.out_dtype = wrapped.weight.dtype

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(idx, self.qweight.int_weight).to(torch.float64)
        scale = self.qweight.scale
        if scale.dim():  # per-row scales: look them up with the rows
            scale = F.embedding(idx, scale[:, None])
        return (rows / scale).to(self.out_dtype)
