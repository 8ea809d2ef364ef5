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

The product ``x_int @ int_weight.T`` runs as a real int8 x int8 -> int32 product with zero-point
corrections whenever that is exact (compress/quant/kernels/intmatmul.py; the product's backend is
chosen per CPU and shape by compress/quant/kernels/dispatch.py and named in the per-layer report's
``kernel``), else as the float64 product of integers; all give the same bits. Everything
that does not depend on the input (int8 weight codes, column sums, requantization factor) is
computed when the wrapper is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import QuantizationError
from compress.quant.kernels import cpaths
from compress.quant.kernels.dispatch import check_mode, requested_mode
from compress.quant.kernels.intmatmul import conv_columns, conv_supported, plan_int_matmul
from compress.quant.numerics.primitives import (
    accum_range,
    approx_scale,
    exact_product_bound,
    mode_qrange,
    quantize,
    scale_zero_point,
)
from compress.quant.wrappers.base import CHUNK_ELEMENTS, Grid, QuantWrapper, summarize

__all__ = [
    "QuantizedWeight",
    "quantize_weight",
    "LinearQuantWrapper",
    "WeightFakeQuantWrapper",
    "EmbeddingQuantWrapper",
]

# Output elements per chunk of the C path: the chunk's int32 products and int8 inputs stay in a core's L2.
_C_CHUNK = 1 << 18


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
    """Integer ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d``, exact (see module doc).

    The product runs as a real int8 x int8 -> int32 product (``kernel == "int8"``; the report names the
    backends that ran, see compress/quant/kernels/) when the codes fit int8 and the int32 accumulator cannot
    overflow, else as the exact float64 emulation (``kernel == "emulated"``); both give the same bits.

    Args:
        wrapped: the float module (kept as ``.wrapped``, never modified).
        qweight: its quantized weight (possibly shared with a tied module).
        input_grid: grid of the input (from its ``inputs[0]`` stats).
        output_grid: grid of the output.
        bits_accum: accumulator width; the sum is clamped to its range.
        mult_bits: multiply-and-shift approximation of the scales (None: exact scales).
        half_range: ReLU-like output (negative accumulators zeroed).
        note: shown in the per-layer report.
        integer_kernels: ``auto`` (int8 products where they are exact, on the measured fastest backend), a
            backend name (``int_mm``, ``fp32``, ``c``) or ``off`` (always emulate).
        bias_int: the integer bias when it is known already (a loaded artifact); else it is quantized now.

    Example:
        >>> from compress.quant.wrappers.base import Grid
        >>> fc = nn.Linear(2, 1)
        >>> g = Grid(torch.tensor(10.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
        >>> w = LinearQuantWrapper(fc, quantize_weight(fc.weight, 8, "symmetric", False), g, g, 32, None)
        >>> w(torch.zeros(3, 2)).shape, w.kernel
        (torch.Size([3, 1]), 'int8')
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
        integer_kernels: str = "auto",
        bias_int: torch.Tensor | None = None,
    ) -> None:
        super().__init__(wrapped, "linear", qweight, note)
        self._set_grid("input", input_grid)
        self._set_grid("output", output_grid)
        self.half_range, self.bits_accum, self.mult_bits = half_range, bits_accum, mult_bits
        self.accum = accum_range(bits_accum)
        accum_scale = approx_scale(input_grid.scale * qweight.scale, mult_bits)
        self.register_buffer("accum_scale", accum_scale, persistent=False)
        self.register_buffer("requant_scale", approx_scale(output_grid.scale / accum_scale, mult_bits))
        bias = self._bias_int(accum_scale) if bias_int is None else bias_int.to(torch.float64)
        self.register_buffer("bias_int", bias)
        self._check_exact(input_grid)
        self._clamp_acc = self._accumulator_can_saturate(input_grid)
        self._linear = isinstance(wrapped, nn.Linear)
        # A per-tensor requantization factor as a float; a per-channel one stays a (device) buffer.
        self._requant = float(self.requant_scale) if self.requant_scale.dim() == 0 else None
        self.integer_kernels = integer_kernels
        self.kernel, self.int_mm = "emulated", None
        why = self._plan_kernel(check_mode(integer_kernels))
        if why and why != "integer_kernels: off":
            self.note = "; ".join(n for n in (self.note, f"kernel emulated: {why}") if n)
        # The emulation's float64 weight, converted once here instead of on every call.
        weight64 = self.qweight.int_weight.to(torch.float64) if self.int_mm is None else None
        self.register_buffer("weight64", weight64, persistent=False)
        self._refused: set[tuple[str, int]] = set()

    def _bias_int(self, accum_scale: torch.Tensor) -> torch.Tensor | None:
        # Quantized now, from the calibrated input scale: the old tool did it lazily from the first batch.
        bias = self.wrapped.bias
        if bias is None:
            return None
        return torch.clamp(torch.round(bias.detach().to(torch.float64) * accum_scale), *self.accum)

    def _plan_kernel(self, integer_kernels: str) -> str:
        """Pick the integer kernel when it is exact here; returns why not ("" when it is used)."""
        mode = requested_mode(integer_kernels)
        if mode == "off":
            return "integer_kernels: off"
        why = "" if self._linear else conv_supported(self.wrapped)
        if not why and self._floats["input"] is None:
            why = "per-channel input grid"
        if why:
            return why
        zp_x = self._floats["input"][1]
        qw = self.qweight
        self.int_mm, why = plan_int_matmul(
            qw.int_weight, qw.zero_point, self._qrange["input"], None, zp_x, self.bias_int, mode
        )
        self.kernel = "emulated" if self.int_mm is None else "int8"
        return why

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

    def _accumulator_can_saturate(self, input_grid: Grid) -> bool:
        # |acc| <= max|x_int| * max_n sum_k |w_int[n, k]| + max|bias|: within the accumulator's range the
        # clamp changes nothing, so it is skipped (one pass less over the outputs, same bits).
        zp = float(input_grid.zero_point.abs().max())
        x_max = max(abs(input_grid.qmin), abs(input_grid.qmax)) + zp
        w = self.qweight.int_weight
        bound = x_max * float(w.reshape(w.shape[0], -1).abs().to(torch.float64).sum(1).max())
        bound += 0.0 if self.bias_int is None else float(self.bias_int.abs().max())
        return bound > min(-self.accum[0], self.accum[1])

    def _channel_axis(self) -> int:
        # Counted from the end, so batched and unbatched conv inputs both find their channels.
        return -1 if self._linear else -2 if isinstance(self.wrapped, nn.Conv1d) else -3

    def _accumulate(self, x_int: torch.Tensor) -> torch.Tensor:
        """The emulation: float64 product of integers (exact), plus the integer bias."""
        w = self.weight64 if self.weight64 is not None else self.qweight.int_weight.to(torch.float64)
        if self._linear:
            acc = F.linear(x_int, w)
        else:  # zero padding of x_int is exact: integer 0 is the real value 0 on every grid
            acc = self.wrapped._conv_forward(x_int, w, None)
        if self.bias_int is not None:
            shape = [1] * acc.dim()
            shape[self._channel_axis()] = -1
            acc = acc + self.bias_int.reshape(shape)
        return acc

    def _int_accumulate(self, x: torch.Tensor) -> torch.Tensor:
        """The int8 kernel: shifted input codes -> exact accumulators with the bias (same values as emulated)."""
        mm = self.int_mm
        if self._linear:
            codes = self._codes(x, "input")
            if mm.x_shift:
                codes.sub_(mm.x_shift)
            acc = mm.accumulate(codes.reshape(-1, mm.in_features).to(torch.int8))
            return acc.reshape(*x.shape[:-1], mm.out_features)
        x_int = self._quantize_input(x, "input")
        unbatched = x_int.dim() == (2 if isinstance(self.wrapped, nn.Conv1d) else 3)
        cols, shape = conv_columns(x_int.unsqueeze(0) if unbatched else x_int, self.wrapped)
        acc = mm(cols.sub_(mm.c_x) if mm.c_x else cols)
        acc = acc.reshape(shape[0], -1, mm.out_features).transpose(1, 2).reshape(shape[0], mm.out_features, *shape[1:])
        return acc.squeeze(0) if unbatched else acc

    def _use_int_mm(self, x: torch.Tensor) -> bool:
        return self.int_mm is not None and (x.device.type, x.numel() // max(x.shape[-1], 1)) not in self._refused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = cpaths.linear_values(self, x)  # the fused C kernels when they can run, else PyTorch ops
        return out if out is not None else self._by_rows(x, self._forward, x.dtype)

    def output_codes(self, x: torch.Tensor, mul: int = 1, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """int32 ``code * mul + offsets`` of ``forward(x)``'s output codes (the values it would dequantize).

        ``offsets``: one integer per output channel (default 0). The affine step runs while each chunk is
        in cache; the codes are never dequantized.

        Example:
            >>> from compress.quant.wrappers.base import Grid
            >>> g = Grid(torch.tensor(10.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
            >>> fc = nn.Linear(1, 1, bias=False); _ = fc.weight.data.fill_(0.5)
            >>> w = LinearQuantWrapper(fc, quantize_weight(fc.weight, 8, "symmetric", False), g, g, 32, None)
            >>> w.output_codes(torch.tensor([[1.0]]), mul=3, offsets=torch.tensor([1]))
            tensor([[16]], dtype=torch.int32)
        """
        n = self.qweight.int_weight.shape[0]
        offsets = torch.zeros(n, dtype=torch.int32) if offsets is None else offsets.to(torch.int32).contiguous()
        out = cpaths.linear_affine_codes(self, x, mul, offsets)
        if out is not None:
            return out
        offsets64 = offsets.to(device=x.device, dtype=torch.float64)
        return self._by_rows(
            x, lambda chunk: torch.add(offsets64, self._requantize(*self._accumulator(chunk)), alpha=mul), torch.int32
        )

    def _by_rows(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        rows = x.numel() // max(x.shape[-1], 1) if x.dim() > 1 else 1
        step = max(16, CHUNK_ELEMENTS // self.qweight.int_weight.shape[0])
        if not self._linear or rows <= step:
            return fn(x).to(dtype)
        # Rows in chunks: the float64 temporaries of one chunk stay in cache (several times faster on
        # [T*B, N] inputs than whole-tensor passes, measured); every row is computed independently.
        flat = x.reshape(rows, x.shape[-1])
        out = torch.empty(rows, self.qweight.int_weight.shape[0], dtype=dtype, device=x.device)
        for i in range(0, rows, step):
            out[i : i + step] = fn(flat[i : i + step])
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dequantized outputs in float64 (the caller stores them as the input's dtype: the same cast)."""
        return self._dequantize_output(self._requantize(*self._accumulator(x)), torch.float64)

    def _accumulator(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float, int, bool]:
        """Arguments of ``_requantize``: the exact accumulators (clamped, rectified), requant factor, axis."""
        acc = None
        if self._use_int_mm(x):
            try:
                acc = self._int_accumulate(x)
            except RuntimeError as err:  # e.g. CUDA's _int_mm refuses some shapes: emulate those calls
                self._refuse(x, err)
        if acc is None:
            acc = self._accumulate(self._quantize_input(x, "input"))
        if self._clamp_acc:
            acc = acc.clamp_(*self.accum)
        if self.half_range:
            acc = acc.relu_()
        requant = self.requant_scale if self._requant is None else self._requant
        return acc, requant, self._channel_axis(), True

    def _refuse(self, x: torch.Tensor, err: RuntimeError) -> None:
        key = (x.device.type, x.numel() // max(x.shape[-1], 1))
        self._refused.add(key)
        first_line = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        self.note = "; ".join(n for n in (self.note, f"int_mm refused on {key[0]} ({first_line}): emulated") if n)

    def describe(self) -> dict[str, Any]:
        row = super().describe()
        kernel = self.kernel if self.int_mm is None else self.int_mm.kernel_name()
        if getattr(self, "fused_kernel", None):
            kernel = f"{kernel}, {self.fused_kernel}"
        return {**row, "kernel": kernel}

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
        out = cpaths.embedding_values(self, idx)  # one C pass of the operations below, when it can run
        return out if out is not None else self._lookup(idx)

    def _lookup(self, idx: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(idx, self.qweight.int_weight).to(torch.float64)
        scale = self.qweight.scale
        if scale.dim():  # per-row scales: look them up with the rows
            scale = F.embedding(idx, scale[:, None])
        return (rows / scale).to(self.out_dtype)
