"""Integer element-wise add / multiply and concatenation (every input on its own calibrated grid).

Inputs arrive as float tensors (dequantized by the previous wrapper); each is quantized with the
grid of that input's stats (``inputs[i]``). When that grid equals the producer's output grid (same
tensor, same stats), re-quantizing a dequantized value returns the same code, so nothing is lost.

* add / concat: each input is rescaled to the output grid, ``r_i = clamp(round((q_i + zp_i) *
  s_out / s_i))`` in the accumulator range, then summed (clamped again) or concatenated;
  ``y_q = clamp(sum - zp_out)``.
* mult: ``acc = prod(q_i + zp_i)`` (clamped after each product), ``s_acc = prod(s_i)``,
  ``y_q = clamp(round(acc * s_out / s_acc - zp_out))``. The product runs in int32
  (``kernel == "int32"``) when no partial product can overflow it, else emulated in float64
  (``kernel == "emulated"``); both are exact and give the same bits.

Every factor that does not depend on the inputs (rescale factors, requantization) is computed when
the wrapper is built, not per call.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from compress.errors import QuantizationError
from compress.quant.kernels.dispatch import check_mode, requested_mode
from compress.quant.kernels.intmatmul import int_product, product_fits_int32
from compress.quant.numerics.primitives import accum_range, approx_scale
from compress.quant.wrappers.base import Grid, QuantWrapper

__all__ = ["EltwiseAddQuantWrapper", "EltwiseMultQuantWrapper", "ConcatQuantWrapper"]


class _OpWrapper(QuantWrapper):
    """Common part: one grid per input, an output grid, the accumulator range."""

    KIND = ""

    def __init__(
        self,
        wrapped: torch.nn.Module,
        input_grids: list[Grid],
        output_grid: Grid,
        bits_accum: int,
        mult_bits: int | None = None,
        half_range: bool = False,
        note: str = "",
        integer_kernels: str = "auto",
    ) -> None:
        super().__init__(wrapped, self.KIND, note)
        self.mult_bits, self.bits_accum, self.integer_kernels = mult_bits, bits_accum, check_mode(integer_kernels)
        for i, grid in enumerate(input_grids):
            self._set_grid(f"input{i}", grid)
        self._set_grid("output", output_grid)
        self.num_inputs = len(input_grids)
        self.accum = accum_range(bits_accum)
        self.half_range = half_range
        # Rescale factors onto the output grid, once (floats for per-tensor grids, the usual case).
        factors = [approx_scale(output_grid.scale / g.scale, mult_bits) for g in input_grids]
        self._factors = [float(f) if f.dim() == 0 else None for f in factors]
        # Largest |x_int| per input: a clamp to the accumulator range that provably changes nothing is skipped.
        self._bounds = [
            max(abs(g.qmin + float(g.zero_point.min())), abs(g.qmax + float(g.zero_point.max()))) for g in input_grids
        ]
        self._acc_max = min(-self.accum[0], self.accum[1])
        rescaled = [b * f + 1 if f else float("inf") for b, f in zip(self._bounds, self._factors, strict=True)]
        self._clamp_inputs = max(rescaled) > self._acc_max
        self._clamp_sum = sum(rescaled) > self._acc_max

    def _integer_inputs(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        if len(inputs) != self.num_inputs:
            raise QuantizationError(
                f"{type(self.wrapped).__name__} got {len(inputs)} inputs but its statistics describe "
                f"{self.num_inputs}; recollect the stats for this model."
            )
        return [self._quantize_input(x, f"input{i}") for i, x in enumerate(inputs)]

    def _factor(self, i: int) -> torch.Tensor | float:
        factor = self._factors[i]
        if factor is None:  # per-channel grids: from the (device) buffers
            return approx_scale(self.output_scale / self._scale(f"input{i}"), self.mult_bits)
        return factor

    def _rescaled(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        ints = [x_int.mul_(self._factor(i)).round_() for i, x_int in enumerate(self._integer_inputs(inputs))]
        return [x.clamp_(*self.accum) for x in ints] if self._clamp_inputs else ints

    def _finish(self, acc: torch.Tensor, requant: torch.Tensor | float, dtype: torch.dtype) -> torch.Tensor:
        if self.half_range:
            acc = torch.relu(acc)
        return self._emit(acc, requant, dtype, owned=True)

    def describe(self) -> dict[str, Any]:
        return {"kernel": getattr(self, "kernel", None), **super().describe()}


def _float_dtype(inputs: tuple[torch.Tensor, ...]) -> torch.dtype:
    return next((x.dtype for x in inputs if x.is_floating_point()), torch.float32)


class EltwiseAddQuantWrapper(_OpWrapper):
    """Integer sum of the inputs on the output grid.

    Example:
        >>> from compress.modules.ops import EltwiseAdd
        >>> g = Grid(torch.tensor(4.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
        >>> EltwiseAddQuantWrapper(EltwiseAdd(), [g, g], g, 32)(torch.tensor([0.5]), torch.tensor([0.26]))
        tensor([0.7500])
    """

    KIND = "eltwise_add"

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts = self._rescaled(inputs)
        acc = parts[0]
        for r in parts[1:]:
            acc = acc.add_(r).clamp_(*self.accum) if self._clamp_sum else acc.add_(r)
        return self._finish(acc, 1.0, _float_dtype(inputs))


class ConcatQuantWrapper(_OpWrapper):
    """Concatenation of the inputs rescaled to the output grid.

    Example:
        >>> from compress.modules.ops import Concat
        >>> g = Grid(torch.tensor(4.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
        >>> ConcatQuantWrapper(Concat(0), [g, g], g, 32)(torch.tensor([0.5]), torch.tensor([0.3]))
        tensor([0.5000, 0.2500])
    """

    KIND = "concat"

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        acc = torch.cat(self._rescaled(inputs), dim=self.wrapped.dim)
        return self._finish(acc, 1.0, _float_dtype(inputs))


class EltwiseMultQuantWrapper(_OpWrapper):
    """Integer product of the inputs, requantized by ``s_out / prod(s_i)``.

    Example:
        >>> from compress.modules.ops import EltwiseMult
        >>> g = Grid(torch.tensor(4.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
        >>> EltwiseMultQuantWrapper(EltwiseMult(), [g, g], g, 32)(torch.tensor([0.5]), torch.tensor([1.5]))
        tensor([0.7500])
    """

    KIND = "eltwise_mult"

    def __init__(
        self,
        wrapped: torch.nn.Module,
        input_grids: list[Grid],
        output_grid: Grid,
        bits_accum: int,
        mult_bits: int | None = None,
        half_range: bool = False,
        note: str = "",
        integer_kernels: str = "auto",
    ) -> None:
        super().__init__(wrapped, input_grids, output_grid, bits_accum, mult_bits, half_range, note, integer_kernels)
        accum_scale = approx_scale(torch.prod(torch.stack([g.scale for g in input_grids])), mult_bits)
        self.register_buffer("requant_scale", approx_scale(output_grid.scale / accum_scale, mult_bits))
        self._requant = float(self.requant_scale) if self.requant_scale.dim() == 0 else None
        fits = product_fits_int32([int(b) for b in self._bounds], self.accum)
        integer = requested_mode(integer_kernels) != "off"
        self.kernel = "int32" if integer and fits else "emulated"
        if integer and not fits:
            self.note = "; ".join(n for n in (self.note, "kernel emulated: int32 product could overflow") if n)
        partial = [math.prod(self._bounds[: k + 1]) for k in range(len(self._bounds))]
        self._clamp_products = max(partial) > self._acc_max

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        ints = self._integer_inputs(inputs)
        accum = self.accum if self._clamp_products else None
        if self.kernel == "int32":
            acc = int_product(ints, accum)
        else:
            acc = ints[0]
            for x_int in ints[1:]:
                acc = acc * x_int if accum is None else torch.clamp(acc * x_int, *accum)
        requant = self.requant_scale if self._requant is None else self._requant
        return self._finish(acc, requant, _float_dtype(inputs))
