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
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from compress.utils import cache_dir

__all__ = ["library", "Requant", "LstmStep", "GruStep", "ptr", "PackedWeights", "pack_s8_weights"]

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
        ("gates", ctypes.c_void_p), ("c_out", ctypes.c_void_p), ("c_values", ctypes.c_void_p),
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
    lib.fake_quant_f32.argtypes = [p, i64, f64, f64, i32, f64, f64, f64, p]
    lib.embedding_rows_f32.argtypes = [p, i32, i64, i64, p, i32, p, i64, p]
    lib.embedding_rows_f32.restype = ctypes.c_int32
    fns = (lib.requant_values_f32, lib.requant_affine_i32, lib.requant_codes_u8, lib.quantize_i8, lib.lstm_step)
    for fn in (*fns, lib.gru_step, lib.fake_quant_f32, lib.pack_s8_weights, lib.gemm_s8s32, lib.gemm_s8s32_scalar):
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
