"""The quantization wrappers' C paths: an integer Linear (input codes, the dispatched int8 product, the
requantization), an element-wise fake quantization and a quantized embedding lookup, each in a few C calls
instead of a dozen PyTorch ops.

The C functions (ckernels.c) repeat the wrappers' float64 operations element by element in the same order,
so every path here returns the bits the wrapper's PyTorch code returns; each returns None (or False) when
it cannot run and the wrapper then runs its own code.

Example:
    >>> linear_values(object(), torch.zeros(1)) is None
    True
"""

from __future__ import annotations

import ctypes
import functools
import math
import threading
from typing import Any

import torch

from compress.quant.kernels.ckernels import Requant, library, ptr
from compress.utils import RuntimeCache

__all__ = ["usable", "linear_values", "linear_affine_codes", "linear_byte_codes", "requant_args", "row_plan",
           "fake_quant_values", "embedding_values"]  # fmt: skip

# Output elements per chunk of a linear layer: the chunk's int32 products and int8 inputs stay in a core's L2
# (at least 128 rows: wide outputs such as a word-LM decoder run their int8 product faster in taller chunks).
_CHUNK = 1 << 17
MIN_ROWS = 128


def requant_args(fc: Any, mm: torch.Tensor, a8: torch.Tensor, keep: list[torch.Tensor]) -> Requant:
    """The ``Requant`` of LinearQuantWrapper ``fc`` (int8 kernel, int32-exact) for products ``mm`` of inputs ``a8``.

    ``keep`` receives the tensors whose addresses the struct holds (the caller keeps them alive).
    """
    n = mm.shape[1]
    arrays = _static_arrays(fc, n)
    keep.extend(arrays)
    lo, hi = (float(b) for b in fc.accum) if fc._clamp_acc else (-math.inf, math.inf)
    qmin, qmax = fc._qrange["output"]
    return Requant(
        ptr(mm), ptr(a8), mm.shape[0], n, a8.shape[1], ptr(arrays[1]), ptr(arrays[2]), lo, hi,
        0.0 if fc.half_range else -math.inf, ptr(arrays[0]), fc._floats["output"][1], qmin, qmax,
    )  # fmt: skip


def _static_arrays(fc: Any, n: int) -> list[torch.Tensor]:
    """fc's per-column requantization factors, weight-side and constant terms, built once per wrapper."""
    cached = fc.__dict__.get("_c_arrays")
    if cached is None or cached[0].numel() != n:
        im = fc.int_mm
        r = fc.requant_scale if fc._requant is None else torch.tensor(fc._requant, dtype=torch.float64)
        zeros = torch.zeros(n, dtype=torch.int32)
        cached = [r.detach().cpu().to(torch.float64).expand(n).contiguous()]
        cached += [zeros if im.c_w32 is None else im.c_w32.cpu(), zeros if im.const32 is None else im.const32.cpu()]
        fc.__dict__["_c_arrays"] = cached
    return cached


def usable(fc: Any, x: torch.Tensor) -> bool:
    """True when the C kernels can compute LinearQuantWrapper ``fc`` on ``x``: a CPU float32 Linear on the
    int8 kernel whose sum provably fits int32, per-tensor input/output grids, no saturation counting.

    Example:
        >>> usable(object(), torch.zeros(1))
        False
    """
    static = getattr(fc, "__dict__", {}).get("_c_usable")
    if static is None:
        static = _statically_usable(fc)
        if hasattr(fc, "__dict__"):
            fc.__dict__["_c_usable"] = static  # the wrapper's structure never changes after it is built
    if not static or fc.track_saturation or x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() < 1:
        return False
    return fc._use_int_mm(x) and library() is not None


def _statically_usable(fc: Any) -> bool:
    mm = getattr(fc, "int_mm", None)
    if mm is None or not mm.exact_int32 or not getattr(fc, "_linear", False):
        return False
    return fc._floats["input"] is not None and fc._floats["output"] is not None


def linear_values(fc: Any, x: torch.Tensor) -> torch.Tensor | None:
    """``fc(x)`` (float32 dequantized outputs) computed by the C kernels, or None when they cannot run.

    Example:
        >>> linear_values(object(), torch.zeros(1)) is None
        True
    """
    if not usable(fc, x):
        return None
    n, emit = _values_emitter(fc)
    out = torch.empty(*x.shape[:-1], n, dtype=x.dtype)
    return out if _rows(fc, x, emit, out) else None


def _values_emitter(fc: Any) -> tuple[int, Any]:
    """fc's output width and its bound ``emit(requant_ref, out_ptr, scratch_ptr)`` of float32 values (cached)."""
    cached = fc.__dict__.setdefault("_c_tables", RuntimeCache())
    if "emit" not in cached:
        zp, scale, fn = fc._floats["output"][1], float(fc.output_scale), library().requant_values_f32
        cached["emit"] = (
            fc.int_mm.out_features,
            functools.partial(_emit_values, fn, zp, scale, ptr(_dequant_table(fc, zp))),
        )
    return cached["emit"]


def _emit_values(fn: Any, zp: float, scale: float, lut: int | None, ref: Any, out: int, scratch: int) -> None:
    fn(ref, zp, scale, lut, out, scratch)


_MAX_TABLE_CODES = 4096  # beyond that (16-bit outputs) a table costs more cache than the division it saves


def _dequant_table(fc: Any, zp: float) -> torch.Tensor | None:
    """float32 value of every output code, ``(code + zp) / scale`` as the wrapper computes it, or None if too wide."""
    cached = fc.__dict__.setdefault("_c_tables", RuntimeCache())
    if "values" not in cached:
        qmin, qmax = fc._qrange["output"]
        table = None
        if qmax - qmin < _MAX_TABLE_CODES:
            codes = torch.arange(qmin, qmax + 1, dtype=torch.float64)
            table = codes.add_(zp).div_(fc.output_scale.detach().cpu()).to(torch.float32).contiguous()
        cached["values"] = table
    return cached["values"]


def linear_affine_codes(fc: Any, x: torch.Tensor, mul: int, offsets: torch.Tensor) -> torch.Tensor | None:
    """int32 ``code * mul + offsets`` of ``fc(x)``'s output codes by the C kernels, or None when they cannot run.

    Example:
        >>> linear_affine_codes(object(), torch.zeros(1), 1, torch.zeros(1, dtype=torch.int32)) is None
        True
    """
    if not usable(fc, x):
        return None
    out = torch.empty(*x.shape[:-1], fc.int_mm.out_features, dtype=torch.int32)
    fn = library().requant_affine_i32
    ok = _rows(fc, x, lambda ref, rows, tmp: fn(ref, mul, offsets.data_ptr(), rows, tmp), out)
    return out if ok else None


def linear_byte_codes(fc: Any, x: torch.Tensor, out: torch.Tensor) -> bool:
    """Write ``fc(x)``'s output codes minus ``qmin`` as uint8 into ``out``; False when the C kernels cannot.

    Only for output grids of at most 256 codes (the fused loops' ``fc_gate_x``).

    Example:
        >>> linear_byte_codes(object(), torch.zeros(1), torch.zeros(1, dtype=torch.uint8))
        False
    """
    if not usable(fc, x) or fc._qrange["output"][1] - fc._qrange["output"][0] > 255:
        return False
    fn = library().requant_codes_u8
    return _rows(fc, x, lambda ref, rows, tmp: fn(ref, rows, tmp), out)


def _rows(fc: Any, x: torch.Tensor, emit: Any, out: torch.Tensor) -> bool:
    """Quantize ``x`` (C), the int8 product (its dispatched backend), then ``emit(requant_ref, out_ptr,
    scratch_ptr)`` (C), by row chunks (a batch-1 call is one chunk: no slicing).

    False when the product refuses the shape: the wrapper then notes it and emulates such calls.
    """
    flat = x.reshape(-1, x.shape[-1])
    flat = flat if flat.is_contiguous() else flat.contiguous()
    rows, k = flat.shape
    plan = row_plan(fc, rows, k)
    step, src, dst = plan["step"], flat.data_ptr(), out.data_ptr()
    if rows <= step:
        return _chunk(fc, x, plan, src, rows, emit, dst)
    src_row, dst_row = k * flat.element_size(), out.numel() // rows * out.element_size()  # bytes per row
    for i in range(0, rows, step):
        if not _chunk(fc, x, plan, src + i * src_row, min(step, rows - i), emit, dst + i * dst_row):
            return False
    return True


def _chunk(fc: Any, x: torch.Tensor, plan: dict[str, Any], src: int, m: int, emit: Any, dst: int) -> bool:
    """One chunk of :func:`_rows`: ``m`` rows from address ``src`` to address ``dst``."""
    plan["quantize"](src, m * plan["k"], plan["a8_ptr"])
    try:
        a8, acc, product = plan["views"](m)
        product(a8, acc)
    except RuntimeError as err:
        fc._refuse(x, err)
        return False
    plan["args"].M = m
    emit(plan["ref"], dst, plan["scratch_ptr"])
    return True


def row_plan(fc: Any, rows: int, k: int) -> dict[str, Any]:
    """Buffers, the ``Requant`` struct and bound calls of ``fc``'s C path for ``rows`` rows, kept per thread
    (a one-step call at batch 1 would otherwise spend more on building them than on its product)."""
    mm = fc.int_mm
    step = max(MIN_ROWS, _CHUNK // max(mm.out_features, k))
    key = (min(step, rows), k, threading.get_ident())
    plans = fc.__dict__.setdefault("_c_row_plans", RuntimeCache())
    if key in plans:
        return plans[key]
    if len(plans) > 16:  # many distinct row counts (unequal batches): keep memory bounded
        plans.clear()
    a8 = torch.empty(key[0], k, dtype=torch.int8)
    acc = torch.empty(key[0], mm.out_features, dtype=torch.int32)
    keep: list[torch.Tensor] = []
    (scale, zp), (qmin, qmax), lib = fc._floats["input"], fc._qrange["input"], library()
    scratch, args = torch.empty(mm.out_features, dtype=torch.float64), requant_args(fc, acc, a8, keep)

    @functools.lru_cache(maxsize=4)
    def views(m: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        return a8[:m], acc[:m], mm.product_for(m, a8.device)

    plans[key] = {
        "step": step, "k": k, "a8": a8, "acc": acc, "scratch": scratch, "args": args, "ref": ctypes.byref(args),
        "keep": keep, "a8_ptr": a8.data_ptr(), "scratch_ptr": scratch.data_ptr(), "views": views,
        "quantize": functools.partial(_quantize, lib, scale, zp, qmin, qmax, mm.x_shift),
    }  # fmt: skip
    return plans[key]


def _quantize(lib: ctypes.CDLL, scale: float, zp: float, qmin: float, qmax: float, shift: int, src: int, count: int,
              dst: int) -> None:  # fmt: skip
    lib.quantize_i8(src, count, scale, zp, qmin, qmax, shift, dst)


def fake_quant_values(wrapper: Any, value: torch.Tensor) -> torch.Tensor | None:
    """FakeQuantWrapper ``wrapper``'s output fake quantization of ``value`` by the C kernels, or None when they
    cannot run (per-channel or unknown grid, half range, saturation counting, gradients, not float32 CPU).

    Example:
        >>> fake_quant_values(object(), torch.zeros(1)) is None
        True
    """
    consts = getattr(wrapper, "_floats", {}).get("output")
    if consts is None or wrapper.track_saturation or wrapper.half_range or value.dtype != torch.float32:
        return None
    if value.device.type != "cpu" or (value.requires_grad and torch.is_grad_enabled()) or library() is None:
        return None
    x = value.contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    (scale, zp), (qmin, qmax) = consts, wrapper._qrange["output"]
    out_scale = float(wrapper.output_scale)
    library().fake_quant_f32(x.data_ptr(), x.numel(), scale, zp, 1 if zp else 0, qmin, qmax, out_scale, out.data_ptr())
    return out


def embedding_values(wrapper: Any, idx: torch.Tensor) -> torch.Tensor | None:
    """EmbeddingQuantWrapper ``wrapper``'s float32 rows for ``idx`` by the C kernels (``code / scale`` per element,
    as the wrapper divides), or None when they cannot run (codes neither int8 nor int32, not float32, not CPU, an
    index out of range: the wrapper's own lookup then raises PyTorch's error).

    Example:
        >>> embedding_values(object(), torch.zeros(1, dtype=torch.long)) is None
        True
    """
    qweight = getattr(wrapper, "qweight", None)
    if qweight is None or wrapper.out_dtype != torch.float32 or idx.dtype != torch.int64 or library() is None:
        return None
    codes, scale = qweight.int_weight, qweight.scale
    if (
        codes.dtype not in (torch.int8, torch.int32)
        or codes.dim() != 2
        or codes.device.type != "cpu"
        or idx.device.type != "cpu"
    ):
        return None
    if scale.dtype != torch.float64 or not codes.is_contiguous() or not scale.is_contiguous():
        return None
    flat = idx.reshape(-1)
    flat = flat if flat.is_contiguous() else flat.contiguous()
    out = torch.empty(*idx.shape, codes.shape[1], dtype=torch.float32)
    per_row = int(scale.dim() > 0)
    wide = int(codes.dtype == torch.int32)
    args = (
        codes.data_ptr(),
        wide,
        *codes.shape,
        scale.data_ptr(),
        per_row,
        flat.data_ptr(),
        flat.numel(),
        out.data_ptr(),
    )
    return out if library().embedding_rows_f32(*args) == 0 else None
