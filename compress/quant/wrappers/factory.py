"""Module wrappers that simulate quantized inference exactly, and the factory that builds them from a plan.

============  ===================================================================================
kind          wrapper and what it simulates
============  ===================================================================================
linear        :class:`LinearQuantWrapper`: nn.Linear / Conv1d / Conv2d with integer weights (per
              tensor or per output channel), input quantized with its ``inputs[0]`` stats, bias at
              the accumulator scale ``s_x * s_w`` (computed at build time), exact integer
              accumulation, clamp to ``bits_accum``, requantization to the output stats' grid
weights_only  :class:`WeightFakeQuantWrapper`: integer weights dequantized, float activations
embedding     :class:`EmbeddingQuantWrapper`: integer table (range of the table itself), rows dequantized
eltwise_add   :class:`EltwiseAddQuantWrapper`: inputs rescaled to the output grid, integer sum
eltwise_mult  :class:`EltwiseMultQuantWrapper`: integer product, requantized by ``s_out / prod(s_i)``
concat        :class:`ConcatQuantWrapper`: inputs rescaled to the output grid, concatenated
fake          :class:`FakeQuantWrapper`: any other leaf (Sigmoid, Tanh, ...) runs in float; only its
              **output** is quantized and dequantized with its output stats (inputs untouched, as in
              the old tool's anchor notebook)
float         :class:`FloatWrapper`: the module run in fp16 / bf16 / fp32
none          the module is left as it is
============  ===================================================================================

Every wrapper has the class attribute ``_compress_wrapper = True`` and keeps the replaced module
as ``.wrapped`` (a stats collector can skip its children). Integer values are carried in float64,
exact for every integer up to 2^53, so the results are identical on CPU and CUDA (no float32
accumulation, TF32 never applies to float64). Wrappers have no training-specific behaviour.
Products of integers (``linear``, ``eltwise_mult``) run as real integer kernels where that is
exact (quantizer argument ``integer_kernels``, see compress/quant/kernels/intmatmul.py): same bits.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compress.errors import QuantizationError
from compress.quant.config.plan import LayerPlan
from compress.quant.kernels import cpaths
from compress.quant.wrappers.base import Grid, QuantWrapper, activation_grid, input_records, output_record
from compress.quant.wrappers.ops import ConcatQuantWrapper, EltwiseAddQuantWrapper, EltwiseMultQuantWrapper
from compress.quant.wrappers.params import (
    EmbeddingQuantWrapper,
    LinearQuantWrapper,
    QuantizedWeight,
    WeightFakeQuantWrapper,
    quantize_weight,
)

__all__ = [
    "QuantWrapper",
    "FakeQuantWrapper",
    "FloatWrapper",
    "LinearQuantWrapper",
    "WeightFakeQuantWrapper",
    "EmbeddingQuantWrapper",
    "EltwiseAddQuantWrapper",
    "EltwiseMultQuantWrapper",
    "ConcatQuantWrapper",
    "QuantizedWeight",
    "BuildContext",
    "build_wrapper",
    "is_wrapper",
    "DTYPES",
]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def is_wrapper(module: nn.Module) -> bool:
    """True for a compress wrapper (its children belong to it).

    Example:
        >>> is_wrapper(FloatWrapper(nn.Tanh(), "fp16")), is_wrapper(nn.Tanh())
        (True, False)
    """
    return bool(getattr(module, "_compress_wrapper", False))


class FakeQuantWrapper(QuantWrapper):
    """Runs the module in float and quantizes + dequantizes its tensor output on the output grid.

    Example:
        >>> g = Grid(torch.tensor(127.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
        >>> FakeQuantWrapper(nn.Sigmoid(), g)(torch.tensor([0.0]))
        tensor([0.5039])
    """

    def __init__(self, wrapped: nn.Module, output_grid: Grid, half_range: bool = False, note: str = "") -> None:
        super().__init__(wrapped, "fake", note)
        self._set_grid("output", output_grid)
        self.half_range = half_range

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.wrapped(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            raise QuantizationError(
                f"{type(self.wrapped).__name__} returned {type(out).__name__}; output fake-quantization needs a "
                "float tensor. Leave this module unquantized with an override {match: <name>, none: true}."
            )
        fast = cpaths.fake_quant_values(self, out)  # the same float64 operations in one C pass, when it can run
        if fast is not None:
            return fast
        if self.half_range:
            out = torch.relu(out)
        scale = self.output_scale if self._floats["output"] is None else self._floats["output"][0]
        return self._emit_chunked(out, scale, out.dtype)


def _cast(obj: Any, dtype: torch.dtype) -> Any:
    """Cast every floating tensor inside tuples/lists/dicts of ``obj``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast(o, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj


def _first_float_dtype(obj: Any) -> torch.dtype | None:
    if isinstance(obj, torch.Tensor):
        return obj.dtype if obj.is_floating_point() else None
    if isinstance(obj, (tuple, list)):
        return next((d for d in map(_first_float_dtype, obj) if d is not None), None)
    if isinstance(obj, dict):
        return _first_float_dtype(list(obj.values()))
    return None


class FloatWrapper(nn.Module):
    """Runs a cast copy of the module in fp16 / bf16 / fp32 (the old tool's ``fp16: true``).

    Float inputs are cast to the precision; float outputs are cast back to the dtype of the first
    float input (for index inputs, e.g. an Embedding, to the module's own parameter dtype). The copy
    is private, so a Parameter shared with another module is never cast under that module's feet.

    Example:
        >>> w = FloatWrapper(nn.Linear(2, 2), "fp16")
        >>> w.wrapped.weight.dtype, w(torch.ones(1, 2)).dtype
        (torch.float16, torch.float32)
    """

    _compress_wrapper = True

    def __init__(self, module: nn.Module, precision: str, note: str = "", memo: dict[int, Any] | None = None) -> None:
        super().__init__()
        if precision not in DTYPES:
            raise QuantizationError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}.")
        self.kind = "float"
        self.precision = precision
        self.note = note
        self.own_dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
        # Copies made with one shared memo share what the originals shared: tied weights stay tied
        # (and are stored once) when both of their modules run in the same precision.
        self.wrapped = copy.deepcopy(module, memo if memo is not None else {}).to(DTYPES[precision])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        back = _first_float_dtype((args, kwargs)) or self.own_dtype
        dtype = DTYPES[self.precision]
        return _cast(self.wrapped(*_cast(args, dtype), **_cast(kwargs, dtype)), back)

    def describe(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return f"precision={self.precision}"


@dataclass
class BuildContext:
    """What building a wrapper needs beyond its own plan row.

    Attributes:
        legacy_symmetric: old-tool symmetric numerator ``2^(b-1)-1``.
        bank: quantized weights by ``id`` of the float Parameter, so tied weights are quantized once.
        float_memo: deepcopy memos per precision, so tied weights of float-wrapped modules stay tied.
        integer_kernels: ``auto`` (real integer products where exact) or ``off`` (float64 emulation only).
    """

    legacy_symmetric: bool = False
    bank: dict[int, QuantizedWeight] = field(default_factory=dict)
    integer_kernels: str = "auto"
    float_memo: dict[str, dict[int, Any]] = field(default_factory=dict)  # per precision, for FloatWrapper copies


def _shared_weight(module: nn.Module, plan: LayerPlan, ctx: BuildContext) -> tuple[QuantizedWeight, str]:
    """The module's quantized weight: from the bank when the Parameter is tied to an earlier module."""
    s = plan.settings
    key = id(module.weight)
    if key not in ctx.bank:
        per_channel = s["per_channel_wts"]
        w = quantize_weight(module.weight, s["bits_weights"], s["mode_weights"], per_channel, ctx.legacy_symmetric)
        w.info["owner"] = plan.name
        ctx.bank[key] = w
        return w, ""
    w = ctx.bank[key]
    mine = {"bits": s["bits_weights"], "mode": s["mode_weights"], "per_channel": s["per_channel_wts"]}
    differs = any(w.info[k] != v for k, v in mine.items())
    note = f"weight tied to {w.info['owner']}, quantized once there"
    return w, note + (f" (its settings {w.info} win over this layer's)" if differs else "")


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _build_linear(module: nn.Module, plan: LayerPlan, entry: Mapping[str, Any], ctx: BuildContext) -> nn.Module:
    s, name = plan.settings, plan.name
    qweight, note = _shared_weight(module, plan, ctx)
    if plan.kind == "weights_only":
        return WeightFakeQuantWrapper(module, qweight, _join(plan.note, note))
    records = input_records(entry, name)
    grid_in = activation_grid(records[0], s, f"{name} input 0", ctx.legacy_symmetric)
    grid_out = _output_grid(entry, plan, ctx)
    mult, half = s["scale_approx_mult_bits"], s["clip_half_range"]
    note = _join(plan.note, note)
    return LinearQuantWrapper(
        module, qweight, grid_in, grid_out, s["bits_accum"], mult, half, note, ctx.integer_kernels
    )


def _output_grid(entry: Mapping[str, Any], plan: LayerPlan, ctx: BuildContext) -> Grid:
    record = output_record(entry, plan.name)
    half = plan.settings["clip_half_range"]
    return activation_grid(record, plan.settings, f"{plan.name} output", ctx.legacy_symmetric, half)


_OPS = {"eltwise_add": EltwiseAddQuantWrapper, "eltwise_mult": EltwiseMultQuantWrapper, "concat": ConcatQuantWrapper}


def _build_op(module: nn.Module, plan: LayerPlan, entry: Mapping[str, Any], ctx: BuildContext) -> nn.Module:
    s, name = plan.settings, plan.name
    records = input_records(entry, name)
    grids = [activation_grid(r, s, f"{name} input {i}", ctx.legacy_symmetric) for i, r in enumerate(records)]
    out = _output_grid(entry, plan, ctx)
    mult, half = s["scale_approx_mult_bits"], s["clip_half_range"]
    return _OPS[plan.kind](module, grids, out, s["bits_accum"], mult, half, plan.note, ctx.integer_kernels)


def build_wrapper(
    module: nn.Module, plan: LayerPlan, entry: Mapping[str, Any] | None, ctx: BuildContext
) -> nn.Module | None:
    """The wrapper for ``module`` as ``plan`` says (None for kind ``none``).

    Args:
        module: the module to replace (it is kept as ``.wrapped``, never modified).
        plan: its plan row.
        entry: its stats entry ``{"inputs": {i: record}, "output": record}`` (None when the kind needs none).
        ctx: shared build state (tied weights, legacy formula).

    Example:
        >>> from compress.quant.config.plan import resolve_plan
        >>> from compress.quant.config.settings import default_settings
        >>> model = nn.Sequential(nn.Sigmoid())
        >>> (plan,) = resolve_plan(model, [], default_settings())
        >>> build_wrapper(model[0], plan, {"output": {"min": 0.0, "max": 1.0}}, BuildContext())
        FakeQuantWrapper(
          kind=fake, out_scale=127.500000, out_zp=0
          (wrapped): Sigmoid()
        )
    """
    wrapper = _build(module, plan, entry, ctx)
    if wrapper is not None:
        wrapper.layer_plan = plan  # what built it: an exported artifact stores it to rebuild the wrapper
    return wrapper


def _build(module: nn.Module, plan: LayerPlan, entry: Mapping[str, Any] | None, ctx: BuildContext) -> nn.Module | None:
    kind = plan.kind
    if kind == "none":
        return None
    if kind == "float":
        precision = plan.settings["precision"]
        return FloatWrapper(module, precision, plan.note, ctx.float_memo.setdefault(precision, {}))
    if kind == "embedding":
        qweight, note = _shared_weight(module, plan, ctx)
        return EmbeddingQuantWrapper(module, qweight, _join(plan.note, note))
    if kind in ("linear", "weights_only"):
        return _build_linear(module, plan, entry or {}, ctx)
    if kind in _OPS:
        return _build_op(module, plan, entry or {}, ctx)
    half = plan.settings["clip_half_range"]
    return FakeQuantWrapper(module, _output_grid(entry or {}, plan, ctx), half, plan.note)
