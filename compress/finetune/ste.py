"""Straight-through training stand-ins of the quantized wrappers (fake quantization in float).

Each wrapper type of compress/quant/wrappers/ has one stand-in here (:data:`STE_OPS`, keyed by the
wrapper class): it runs the wrapper's **float** module (whose parameters are trained) with every
tensor the wrapper quantizes rounded onto the same grid, in float32::

    fake_quantize(x) = (clamp(round(s * x - zp), qmin, qmax) + zp) / s      # forward
    d fake_quantize / dx = 1 inside the grid's float range, 0 outside        # backward (clipped STE)

(the straight-through estimator of Bengio, Léonard and Courville 2013, as used for quantization-aware
training by Jacob et al. 2018; see docs/finetune.md). Activation grids are the wrapper's, fixed (from
the calibration statistics); weight grids are recomputed from the current weights on every call,
exactly as the post-training quantizer computes them from the weights it is given, so the frozen
model (the quantizer rerun on the fine-tuned weights) has the grids the training forward used.

Example:
    >>> s, zp = torch.tensor(2.0), torch.tensor(0.0)
    >>> x = torch.tensor([0.2, 0.8, 90.0], requires_grad=True)
    >>> y = fake_quantize(x, s, zp, -128, 127); y.sum().backward()
    >>> y.tolist(), x.grad.tolist()
    ([0.0, 1.0, 63.5], [1.0, 1.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import QuantizationError
from compress.quant.numerics.primitives import mode_qrange, scale_zero_point
from compress.quant.wrappers.factory import (
    DTYPES,
    ConcatQuantWrapper,
    EltwiseAddQuantWrapper,
    EltwiseMultQuantWrapper,
    EmbeddingQuantWrapper,
    FakeQuantWrapper,
    FloatWrapper,
    LinearQuantWrapper,
    QuantizedWeight,
    WeightFakeQuantWrapper,
)

__all__ = ["fake_quantize", "ste_round", "weight_grid", "STEOp", "STE_OPS", "ste_op_for", "forget_weights"]


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward.

    Example:
        >>> x = torch.tensor([1.4], requires_grad=True); ste_round(x).backward(); x.grad
        tensor([1.])
    """
    return x + (torch.round(x) - x).detach()


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``x`` rounded onto the grid (same formula as the wrappers), gradient 1 inside its range, 0 outside.

    Example:
        >>> fake_quantize(torch.tensor([0.26]), torch.tensor(4.0), torch.tensor(0.0), -128, 127)
        tensor([0.2500])
    """
    lo, hi = (qmin + zero_point) / scale, (qmax + zero_point) / scale
    inside = torch.clamp(x, lo, hi)  # the clipped straight-through path: saturated values pass no gradient
    q = (torch.clamp(torch.round(x * scale - zero_point), qmin, qmax) + zero_point) / scale
    return inside + (q - inside).detach()


def weight_grid(weight: torch.Tensor, info: dict[str, Any], legacy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of ``weight`` from its own range, as ``quantize_weight`` computes them.

    Shaped to broadcast over the weight (per output channel along dim 0), float64, no gradient.

    Example:
        >>> s, zp = weight_grid(torch.tensor([[1.0, -2.0], [0.5, 0.25]]), {"bits": 4, "mode": "symmetric",
        ...                     "per_channel": True}, False)
        >>> s.flatten().tolist(), tuple(s.shape)
        ([3.75, 15.0], (2, 1))
    """
    w = weight.detach().to(torch.float64)
    flat = w.reshape(w.shape[0], -1) if info["per_channel"] else w.reshape(1, -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    if not info["per_channel"]:
        lo, hi = lo[0], hi[0]
    scale, zp = scale_zero_point(lo, hi, info["bits"], info["mode"], legacy)
    if info["per_channel"]:
        shape = [-1] + [1] * (w.dim() - 1)
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return scale, zp


def _legacy_of(qweight: QuantizedWeight, weight: torch.Tensor) -> bool:
    """Which symmetric formula built ``qweight`` from ``weight`` (the wrapper does not store it)."""
    for legacy in (False, True):
        if torch.equal(weight_grid(weight, qweight.info, legacy)[0].flatten(), qweight.scale.flatten().cpu()):
            return legacy
    raise QuantizationError(
        f"{qweight.info.get('owner', 'a layer')}: its quantized weight does not match its float weight; fine-tune "
        "the quantizer's own model."
    )


class STEOp(nn.Module):
    """A wrapper's training stand-in: its float ``module`` (trained) and its grids (fixed, float32 buffers)."""

    def __init__(self, module: nn.Module, wrapper: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.kind = getattr(wrapper, "kind", type(wrapper).__name__)
        self.half_range = bool(getattr(wrapper, "half_range", False))
        self._grids: dict[str, tuple[int, int]] = {}

    def _keep_grid(self, wrapper: nn.Module, prefix: str) -> None:
        g = wrapper.grid(prefix)
        if g.scale.dim() or g.zero_point.dim():
            raise QuantizationError(
                f"{self.kind}: per-channel activation grids cannot be fine-tuned yet; use per-tensor activations."
            )
        self.register_buffer(f"{prefix}_scale", g.scale.to(torch.float32), persistent=False)
        self.register_buffer(f"{prefix}_zp", g.zero_point.to(torch.float32), persistent=False)
        # PyTorch's fused fake-quantization (one op, the same clipped straight-through gradient) in its
        # convention q = round(x / step + z): step = 1 / scale, z = -zp (integer-valued, inside the code range).
        self.register_buffer(f"{prefix}_step", (1.0 / g.scale).to(torch.float32), persistent=False)
        self.register_buffer(f"{prefix}_z", (-g.zero_point).to(torch.int32), persistent=False)
        self._grids[prefix] = (g.qmin, g.qmax)

    def fq(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """``x`` fake-quantized on the kept grid ``prefix`` (float32; a tie may round apart from float64)."""
        qmin, qmax = self._grids[prefix]
        z = getattr(self, f"{prefix}_z")
        if x.dtype == torch.float32 and qmin <= int(z) <= qmax:
            return torch.fake_quantize_per_tensor_affine(x, getattr(self, f"{prefix}_step"), z, qmin, qmax)
        return fake_quantize(x, getattr(self, f"{prefix}_scale"), getattr(self, f"{prefix}_zp"), qmin, qmax)

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return self.fq(torch.relu(y) if self.half_range else y, "output")


class _WeightedSTE(STEOp):
    """Common part of the stand-ins with a weight: the weight fake-quantized on its own current range."""

    def __init__(self, module: nn.Module, wrapper: nn.Module) -> None:
        super().__init__(module, wrapper)
        self.info = dict(wrapper.qweight.info)
        self.legacy = _legacy_of(wrapper.qweight, module.weight)
        self.qrange = mode_qrange(self.info["bits"], self.info["mode"])
        self._cache: tuple[Any, torch.Tensor, torch.Tensor] | None = None

    def forget(self) -> None:
        """Drop the fake-quantized weight kept for this step (the loop calls it before every step)."""
        self._cache = None

    def _quantized(self) -> tuple[torch.Tensor, torch.Tensor]:
        # A recurrent cell calls fc_gate_h once per time step: the weight is fake-quantized once per
        # training step (keyed by its version, so an in-place update is never missed) and reused.
        w = self.module.weight
        key = (w._version, torch.is_grad_enabled())
        if self._cache is None or self._cache[0] != key:
            scale, zp = weight_grid(w, self.info, self.legacy)
            # Rounded in float64 as the quantizer does: a symmetric grid puts the largest weight exactly on
            # a half code (sat * scale = 2^(b-1) - 0.5), which float32 would round the other way.
            wq = fake_quantize(w.to(torch.float64), scale, zp, *self.qrange).to(w.dtype)
            self._cache = (key, wq, scale.to(w.dtype))
        return self._cache[1], self._cache[2]

    def weight_scale(self) -> torch.Tensor:
        """The current weight grid's scale (broadcasting over the weight, the weight's dtype)."""
        return self._quantized()[1]

    def fq_weight(self) -> torch.Tensor:
        """The module's weight fake-quantized on the grid of its current range."""
        return self._quantized()[0]

    def _affine(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if isinstance(self.module, nn.Linear):
            return F.linear(x, w, bias)
        return self.module._conv_forward(x, w, bias)


class LinearSTE(_WeightedSTE):
    """:class:`LinearQuantWrapper` in training: input, weight, bias (at ``s_x * s_w``) and output fake-quantized."""

    def __init__(self, module: nn.Module, wrapper: LinearQuantWrapper) -> None:
        super().__init__(module, wrapper)
        self._keep_grid(wrapper, "input")
        self._keep_grid(wrapper, "output")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.module.bias
        if bias is not None:  # the integer bias: round(b * s_x * s_w) on the accumulator grid
            accum = (self.input_scale * self.weight_scale()).flatten()
            bias = ste_round(bias * accum) / accum
        return self._out(self._affine(self.fq(x, "input"), self.fq_weight(), bias))


class WeightOnlySTE(_WeightedSTE):
    """:class:`WeightFakeQuantWrapper` in training: only the weight is fake-quantized."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._affine(x, self.fq_weight(), self.module.bias)


class EmbeddingSTE(_WeightedSTE):
    """:class:`EmbeddingQuantWrapper` in training: rows of the fake-quantized table."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.fq_weight())


class _OpSTE(STEOp):
    """Element-wise ops and concatenation: every input on its grid, the result on the output grid."""

    def __init__(self, module: nn.Module, wrapper: nn.Module) -> None:
        super().__init__(module, wrapper)
        self.num_inputs = wrapper.num_inputs
        for i in range(self.num_inputs):
            self._keep_grid(wrapper, f"input{i}")
        self._keep_grid(wrapper, "output")

    def _inputs(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        if len(inputs) != self.num_inputs:
            raise QuantizationError(
                f"{self.kind}: got {len(inputs)} inputs, its statistics describe {self.num_inputs}."
            )
        return [self.fq(x, f"input{i}") for i, x in enumerate(inputs)]

    def _rescaled(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Inputs rounded onto the output grid's step, as the integer add/concat rescale each one first."""
        return [ste_round(x * self.output_scale) / self.output_scale for x in self._inputs(inputs)]


class EltwiseAddSTE(_OpSTE):
    """:class:`EltwiseAddQuantWrapper` in training."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts = self._rescaled(inputs)
        return self._out(sum(parts[1:], parts[0]))


class EltwiseMultSTE(_OpSTE):
    """:class:`EltwiseMultQuantWrapper` in training."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts = self._inputs(inputs)
        acc = parts[0]
        for p in parts[1:]:
            acc = acc * p
        return self._out(acc)


class ConcatSTE(_OpSTE):
    """:class:`ConcatQuantWrapper` in training."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._out(torch.cat(self._rescaled(inputs), dim=self.module.dim))


class FakeSTE(STEOp):
    """:class:`FakeQuantWrapper` in training: the module in float, its output fake-quantized."""

    def __init__(self, module: nn.Module, wrapper: FakeQuantWrapper) -> None:
        super().__init__(module, wrapper)
        self._keep_grid(wrapper, "output")

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._out(self.module(*args, **kwargs))


def _cast_through(obj: Any, dtype: torch.dtype) -> Any:
    """Float tensors rounded to ``dtype`` and back, gradient straight through."""
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        return obj + (obj.to(dtype).to(obj.dtype) - obj).detach()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast_through(o, dtype) for o in obj)
    return obj


class FloatSTE(STEOp):
    """:class:`FloatWrapper` in training: inputs, parameters and outputs rounded to its precision (math in float32)."""

    def __init__(self, module: nn.Module, wrapper: FloatWrapper) -> None:
        super().__init__(module, wrapper)
        self.dtype = DTYPES[wrapper.precision]

    def forward(self, *args: Any) -> Any:
        params = {n: _cast_through(p, self.dtype) for n, p in self.module.named_parameters()}
        out = torch.func.functional_call(self.module, params, _cast_through(args, self.dtype))
        return _cast_through(out, self.dtype)


STE_OPS: dict[type[nn.Module], Callable[[nn.Module, Any], STEOp]] = {
    LinearQuantWrapper: LinearSTE,
    WeightFakeQuantWrapper: WeightOnlySTE,
    EmbeddingQuantWrapper: EmbeddingSTE,
    EltwiseAddQuantWrapper: EltwiseAddSTE,
    EltwiseMultQuantWrapper: EltwiseMultSTE,
    ConcatQuantWrapper: ConcatSTE,
    FakeQuantWrapper: FakeSTE,
    FloatWrapper: FloatSTE,
}


def ste_op_for(module: nn.Module, wrapper: nn.Module) -> STEOp:
    """The training stand-in of ``wrapper`` around the float ``module`` it replaced.

    Example:
        >>> from compress.quant.wrappers.base import Grid
        >>> g = Grid(torch.tensor(127.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
        >>> type(ste_op_for(nn.Sigmoid(), FakeQuantWrapper(nn.Sigmoid(), g))).__name__
        'FakeSTE'
    """
    make = STE_OPS.get(type(wrapper))
    if make is None:
        raise QuantizationError(
            f"{type(wrapper).__name__} has no straight-through training form; fine-tuning supports "
            f"{', '.join(t.__name__ for t in STE_OPS)}."
        )
    return make(module, wrapper)


def forget_weights(model: nn.Module) -> None:
    """Make every stand-in of ``model`` fake-quantize its weight afresh on its next call (a new step)."""
    for m in model.modules():
        if isinstance(m, _WeightedSTE):
            m.forget()
