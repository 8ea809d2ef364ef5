"""Optional fused C kernels for the integer path: one pass per tensor instead of one PyTorch op per step.

``ckernels.c`` (shipped with the package) holds plain C functions on raw buffers. On first use it is
compiled with the system C compiler into the compress cache folder (``$COMPRESS_CACHE`` or
``~/.cache/compress``), keyed by a hash of the source, the compiler and the machine, written
atomically, and loaded with ``ctypes``. Nothing is downloaded; when there is no compiler, or
``COMPRESS_CKERNELS=0``, :func:`library` returns None and the pure PyTorch code runs instead.

The kernels repeat the wrappers' float64 operations element by element in the same order (see the
C file), so both paths give the same bits: tests compare them with ``torch.equal``.

Example:
    >>> lib = library()  # None without a C compiler
    >>> lib is None or hasattr(lib, "lstm_step")
    True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from compress.utils import RuntimeCache, cache_dir

__all__ = [
    "library",
    "usable",
    "linear_values",
    "linear_affine_codes",
    "linear_byte_codes",
    "Requant",
    "LstmStep",
    "GruStep",
    "requant_args",
    "ptr",
    "PackedWeights",
    "pack_s8_weights",
]

SOURCE = Path(__file__).with_name("ckernels.c")
# No FMA contraction and no fast-math: every float64 operation must round exactly as PyTorch's does.
# (-fno-trapping-math / -fno-math-errno only drop FP-exception and errno bookkeeping, so that nearbyint
# and the clamps vectorize; they change no result.)
# COMPRESS_CKERNELS_MARCH (default native) lets a benchmark build for an older ISA, e.g. x86-64-v3 (AVX2).
_MARCH = os.environ.get("COMPRESS_CKERNELS_MARCH", "native")
FLAGS = [
    "-O3",
    f"-march={_MARCH}",
    "-fno-fast-math",
    "-ffp-contract=off",
    "-fno-trapping-math",
    "-fno-math-errno",
    "-mprefer-vector-width=512",  # AVX-512 CPUs: the requantization loops run twice as wide (decoder -15%)
]
FLAGS += ["-fPIC", "-shared"]
_state: dict[str, Any] = {}
# Output elements per chunk of a linear layer: the chunk's int32 products and int8 inputs stay in a core's L2
# (at least 128 rows: wide outputs such as a word-LM decoder run their int8 product faster in taller chunks).
_CHUNK = 1 << 17
_MIN_ROWS = 128


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build(cc: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run([cc, *FLAGS, str(SOURCE), "-o", str(out), "-lm"], check=True, capture_output=True, timeout=120)
        os.replace(out, target)


def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (no C compiler, ``COMPRESS_CKERNELS=0``, or a failed build: warned once)."""
    if "lib" in _state:
        return _state["lib"]
    _state["lib"] = None
    cc = _compiler()
    if os.environ.get("COMPRESS_CKERNELS", "1") == "0" or cc is None:
        return None
    try:
        key = hashlib.sha256(SOURCE.read_bytes() + f"{cc}|{FLAGS}|{platform.machine()}|{_cpu()}".encode())
        target = cache_dir() / "kernels" / f"ckernels-{key.hexdigest()[:16]}.so"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            _build(cc, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as err:
        warnings.warn(f"compress: C kernels unavailable ({type(err).__name__}); using PyTorch ops.", stacklevel=2)
        return None
    _declare(lib)
    _state["lib"] = lib
    return lib


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):  # -march=native code must not meet another CPU through a shared cache
                return hashlib.sha256(line.encode()).hexdigest()
    except OSError:
        pass
    return platform.processor()


class Requant(ctypes.Structure):
    """Mirror of the C ``Requant`` struct (field order and types must match ckernels.c)."""

    _fields_ = [
        ("mm", ctypes.c_void_p), ("a8", ctypes.c_void_p), ("M", ctypes.c_int64), ("N", ctypes.c_int64),
        ("K", ctypes.c_int64), ("cw", ctypes.c_void_p), ("cst", ctypes.c_void_p), ("acc_lo", ctypes.c_double),
        ("acc_hi", ctypes.c_double), ("relu_lo", ctypes.c_double), ("r", ctypes.c_void_p), ("zp", ctypes.c_double),
        ("qmin", ctypes.c_double), ("qmax", ctypes.c_double),
    ]  # fmt: skip


class LstmStep(ctypes.Structure):
    """Mirror of the C ``LstmStep`` struct."""

    _fields_ = [
        ("rq", Requant), ("B", ctypes.c_int64), ("H", ctypes.c_int64), ("n_h", ctypes.c_int64),
        ("n_c", ctypes.c_int64), ("n_g", ctypes.c_int64), ("n_mi", ctypes.c_int64), ("x", ctypes.c_void_p),
        ("goff", ctypes.c_void_p), ("gate", ctypes.c_void_p), ("mulf", ctypes.c_void_p), ("muli", ctypes.c_void_p),
        ("cell", ctypes.c_void_p), ("hid", ctypes.c_void_p), ("h_in", ctypes.c_void_p), ("h_values", ctypes.c_void_p),
        ("c", ctypes.c_void_p), ("h", ctypes.c_void_p), ("out", ctypes.c_void_p), ("codes", ctypes.c_void_p),
        ("gates", ctypes.c_void_p),
    ]  # fmt: skip


class GruStep(ctypes.Structure):
    """Mirror of the C ``GruStep`` struct."""

    _fields_ = [
        ("rq", Requant), ("B", ctypes.c_int64), ("H", ctypes.c_int64), ("n_h", ctypes.c_int64),
        ("n_nr", ctypes.c_int64), ("n_n", ctypes.c_int64), ("n_hs", ctypes.c_int64), ("n_zh", ctypes.c_int64),
        ("x", ctypes.c_void_p), ("goff", ctypes.c_void_p), ("h_qmin", ctypes.c_double), ("rz", ctypes.c_void_p),
        ("new_reset", ctypes.c_void_p), ("new_gate", ctypes.c_void_p), ("keep_new", ctypes.c_void_p),
        ("keep_old", ctypes.c_void_p), ("hid", ctypes.c_void_p), ("h_in", ctypes.c_void_p),
        ("h_values", ctypes.c_void_p), ("h", ctypes.c_void_p), ("out", ctypes.c_void_p), ("codes", ctypes.c_void_p),
    ]  # fmt: skip


def _declare(lib: ctypes.CDLL) -> None:
    p, i32, i64, f64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
    lib.requant_values_f32.argtypes = [p, f64, f64, p, p, p]
    lib.requant_affine_i32.argtypes = [p, i32, p, p, p]
    lib.requant_codes_u8.argtypes = [p, p, p]
    lib.quantize_i8.argtypes = [p, i64, f64, f64, f64, f64, i32, p]
    lib.lstm_step.argtypes = [p, i64]
    lib.pack_s8_weights.argtypes = [p, i64, i64, p]
    lib.gemm_s8s32.argtypes = [p, i64, i64, p, i64, i64, p, p]
    lib.gemm_s8s32_scalar.argtypes = lib.gemm_s8s32.argtypes
    lib.gemm_s8s32_isa.restype = ctypes.c_int
    lib.gru_step.argtypes = [p, i64]
    fns = (lib.requant_values_f32, lib.requant_affine_i32, lib.requant_codes_u8, lib.quantize_i8, lib.lstm_step)
    for fn in (*fns, lib.gru_step, lib.pack_s8_weights, lib.gemm_s8s32, lib.gemm_s8s32_scalar):
        fn.restype = None


class PackedWeights:
    """int8 weight codes ``[N, K]`` packed for ``gemm_s8s32``: int16 panels of 8 columns, K padded to even."""

    def __init__(self, b: torch.Tensor) -> None:
        self.n, self.k = b.shape
        self.k_padded = self.k + self.k % 2
        self.data = torch.empty(((self.n + 7) // 8) * 8 * self.k_padded, dtype=torch.int16)
        library().pack_s8_weights(b.contiguous().data_ptr(), self.n, self.k, self.data.data_ptr())


def pack_s8_weights(b: torch.Tensor) -> PackedWeights:
    """``b`` (int8 ``[N, K]``, CPU) packed for the C product (needs :func:`library`).

    Example:
        >>> lib = library()
        >>> lib is None or pack_s8_weights(torch.ones(3, 5, dtype=torch.int8)).data.numel() == 8 * 6
        True
    """
    return PackedWeights(b)


def ptr(t: torch.Tensor | None) -> int | None:
    """Address of a contiguous CPU tensor's data (None for None)."""
    return None if t is None else t.data_ptr()


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
    out = torch.empty(*x.shape[:-1], fc.int_mm.out_features, dtype=x.dtype)
    zp, scale, fn = fc._floats["output"][1], float(fc.output_scale), library().requant_values_f32
    lut = ptr(_dequant_table(fc, zp))
    return out if _rows(fc, x, lambda rq, rows, tmp: fn(ctypes.byref(rq), zp, scale, lut, rows, tmp), out) else None


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
    ok = _rows(fc, x, lambda rq, rows, tmp: fn(ctypes.byref(rq), mul, offsets.data_ptr(), rows, tmp), out)
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
    return _rows(fc, x, lambda rq, rows, tmp: fn(ctypes.byref(rq), rows, tmp), out)


def _rows(fc: Any, x: torch.Tensor, emit: Any, out: torch.Tensor) -> bool:
    """Quantize ``x`` (C), the int8 product (its dispatched backend), then ``emit(requant_args, out_ptr,
    scratch_ptr)`` (C), by row chunks.

    False when the product refuses the shape: the wrapper then notes it and emulates such calls.
    """
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    rows, k = flat.shape
    plan = _row_plan(fc, rows, k)
    out_flat = out.view(rows, -1)
    step, quantize, a8, acc = plan["step"], plan["quantize"], plan["a8"], plan["acc"]
    for i in range(0, rows, step):
        m = min(step, rows - i)
        quantize(flat[i].data_ptr(), m * k, a8.data_ptr())
        try:
            plan["product"](m)(a8[:m], acc[:m])
        except RuntimeError as err:
            fc._refuse(x, err)
            return False
        plan["args"].M = m
        emit(plan["args"], out_flat[i].data_ptr(), plan["scratch"].data_ptr())
    return True


def _row_plan(fc: Any, rows: int, k: int) -> dict[str, Any]:
    """Buffers, the ``Requant`` struct and bound calls of ``fc``'s C path for ``rows`` rows, kept per thread
    (a one-step call at batch 1 would otherwise spend more on building them than on its product)."""
    mm = fc.int_mm
    step = max(_MIN_ROWS, _CHUNK // max(mm.out_features, k))
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
    plans[key] = {
        "step": step, "a8": a8, "acc": acc, "scratch": torch.empty(mm.out_features, dtype=torch.float64),
        "args": requant_args(fc, acc, a8, keep), "keep": keep,
        "quantize": functools.partial(_quantize, lib, scale, zp, qmin, qmax, mm.x_shift),
        "product": functools.lru_cache(maxsize=4)(lambda m: mm.product_for(m, a8.device)),
    }  # fmt: skip
    return plans[key]


def _quantize(lib: ctypes.CDLL, scale: float, zp: float, qmin: float, qmax: float, shift: int, src: int, count: int,
              dst: int) -> None:  # fmt: skip
    lib.quantize_i8(src, count, scale, zp, qmin, qmax, shift, dst)
