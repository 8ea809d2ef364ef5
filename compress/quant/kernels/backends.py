"""The ways to compute one exact int8 product ``out[m, n] = sum_k a[m, k] * b[n, k]`` (int32), all bit-identical.

Every quantized Linear's integer product reduces to this (see intmatmul.py), and every backend gives the
same int32 result, so which one runs is a question of speed only (dispatch.py picks per CPU and shape):

- ``int_mm``: ``torch._int_mm``. Fast where oneDNN has VNNI/AMX kernels (and on CUDA); 13-60x slower than
  an fp32 product on AVX2-only CPUs (measured on an AMD EPYC with AVX2, issue 13).
- ``fp32``: a float32 GEMM of the integer-valued operands. A float32 holds every integer up to 2^24 exactly,
  so when every partial sum of a chunk of the reduction is bounded by ``max|a| * sum_k |b[n, k]| <= 2^24``
  the BLAS result is exact *in any summation order* (FMA included: each rounding is of an exact integer).
  The reduction is split into such chunks (for int8 codes at least 1024 long) and the chunks are added in
  int32, which cannot overflow (the caller proved the whole sum fits). Runs at BLAS fp32 speed on any CPU.
  It needs the IEEE float32 matmul (``torch.get_float32_matmul_precision() == "highest"``): under a
  TF32/bf16 setting it computes that call as a float64 product (exact below 2^53, untouched by the setting).
- ``c``: the C kernel ``gemm_s8s32`` (ckernels.c): 16-bit multiply-adds into int32 (AVX2 ``vpmaddwd``),
  which cannot overflow or saturate for 8-bit codes. Strong for few rows (batch-1 generation reads a
  quarter of the fp32 bytes) and on AVX2-only CPUs, where it beats an AVX2 fp32 GEMM.

Example:
    >>> a = torch.tensor([[1, -128], [127, 3]], dtype=torch.int8)
    >>> b = torch.tensor([[2, 5], [-1, -128]], dtype=torch.int8)
    >>> out = torch.empty(2, 2, dtype=torch.int32)
    >>> prepare("fp32", b, 128)(a, out)
    tensor([[ -638, 16383],
            [  269,  -511]], dtype=torch.int32)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import torch

from compress.quant.kernels import ckernels

__all__ = ["BACKENDS", "FP32_EXACT", "Product", "prepare", "unavailable", "fp32_chunk"]

BACKENDS = ("int_mm", "fp32", "c")
FP32_EXACT = 2**24  # every integer of magnitude <= 2^24 is a float32
# Rows per torch._int_mm call: one call on ~10^4 rows was measured ~3.5x slower than the same rows in
# chunks of 256..2048 (AVX-512 VNNI machine; the int32 output then stays in cache).
_MM_ROWS = 1024

Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``product(a8 [M, K] int8, out [M, N] int32) -> out``: the exact int8 product written into ``out``."""


def unavailable(name: str, device: torch.device) -> str:
    """Why backend ``name`` cannot run on ``device`` ("" when it can).

    Example:
        >>> unavailable("c", torch.device("cuda")), unavailable("fp32", torch.device("cpu"))
        ('the C kernels run on the CPU only', '')
    """
    if name not in BACKENDS:
        return f"unknown integer backend '{name}' (known: {', '.join(BACKENDS)})"
    if name == "c" and device.type != "cpu":
        return "the C kernels run on the CPU only"
    if name == "c" and ckernels.library() is None:
        return "the C kernels are not built here (no C compiler, COMPRESS_CKERNELS=0 or a failed build)"
    return ""


def fp32_chunk(b: torch.Tensor, a_max: int) -> int:
    """The longest reduction chunk whose float32 partial sums stay exact integers for inputs ``|a| <= a_max``.

    Example:
        >>> fp32_chunk(torch.full((4, 5000), -128, dtype=torch.int8), 128)  # 128 * 128 * 1024 = 2^24
        1024
    """
    b_max = int(b.to(torch.int32).abs().max()) if b.numel() else 0  # int8 abs(-128) would wrap to -128
    if b_max == 0 or a_max == 0:
        return max(b.shape[1], 1)
    return max(1, min(b.shape[1], FP32_EXACT // (a_max * b_max)))


def prepare(name: str, b: torch.Tensor, a_max: int) -> Product:
    """The product of backend ``name`` for int8 weight codes ``b`` ``[N, K]`` and inputs ``|a| <= a_max``.

    Everything that depends on the weights only (layouts, float copies, packing) is done here, once.
    """
    return {"int_mm": _int_mm, "fp32": _fp32, "c": _c}[name](b, a_max)


def _kn_operand(b: torch.Tensor) -> torch.Tensor:
    """The ``[K, N]`` right operand of ``_int_mm`` for int8 codes ``b`` ``[N, K]``.

    A transposed view of the contiguous ``[N, K]`` codes is read at least as fast as a ``[K, N]`` copy
    (4x faster for one row). For K == 1 that view has strides (1, 1), which the CPU ``_int_mm`` of
    torch 2.13 reads wrongly (measured), so K == 1 gets an explicitly row-major ``[1, N]`` tensor.
    """
    k, n = b.shape[1], b.shape[0]
    if k == 1:
        return torch.empty_strided((k, n), (n, 1), dtype=b.dtype, device=b.device).copy_(b.t())
    return b.contiguous().t()


def _int_mm(b: torch.Tensor, a_max: int) -> Product:
    weight_t = _kn_operand(b.to(torch.int8))

    def product(a8: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if a8.shape[0] <= _MM_ROWS:
            return torch._int_mm(a8, weight_t, out=out)
        for i in range(0, a8.shape[0], _MM_ROWS):
            torch._int_mm(a8[i : i + _MM_ROWS], weight_t, out=out[i : i + _MM_ROWS])
        return out

    return product


def _fp32_matmul_is_ieee() -> bool:
    """False under a TF32/bf16 float32-matmul setting, where a float32 GEMM is no longer exact."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if os.environ.get("ONEDNN_DEFAULT_FPMATH_MODE", "STRICT").upper() not in ("STRICT", "ANY_STRICT"):
        return False
    mkldnn = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return getattr(mkldnn, "fp32_precision", "none") in ("none", "ieee")


def _onednn_linear() -> Callable[..., torch.Tensor] | None:
    """oneDNN's float32 linear (measured about 2x MKL's sgemm on an AMD EPYC, AVX-512), where torch has it."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    try:
        probe = op(torch.ones(1, 2), torch.ones(3, 2), None, "none", [], "")
    except RuntimeError:
        return None
    return op if torch.equal(probe, torch.full((1, 3), 2.0)) else None


def _fp32(b: torch.Tensor, a_max: int) -> Product:
    chunk = fp32_chunk(b, a_max)
    # [N, K] row blocks per chunk of the reduction, for oneDNN's linear (or torch.mm of their transpose)
    weights = [b[:, k : k + chunk].to(torch.float32).contiguous() for k in range(0, b.shape[1], chunk)]
    starts = range(0, b.shape[1], chunk)
    linear = _onednn_linear() if b.device.type == "cpu" else None
    weight64 = b.to(torch.float64).t().contiguous()

    def fallback(a8: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        # float64 holds every such sum exactly and no matmul-precision setting touches it (int_mm may be inexact)
        return out.copy_(torch.mm(a8.to(torch.float64), weight64))

    def mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.mm(a, w.t()) if linear is None else linear(a, w, None, "none", [], "")

    def product(a8: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if not _fp32_matmul_is_ieee():
            return fallback(a8, out)
        a = a8.to(torch.float32)
        if len(weights) == 1:
            return out.copy_(mm(a, weights[0]))  # float32 -> int32 of exact integers: exact
        out.zero_()
        for k, w in zip(starts, weights, strict=True):
            out.add_(mm(a[:, k : k + chunk].contiguous(), w).to(torch.int32))
        return out

    return product


def _c(b: torch.Tensor, a_max: int) -> Product:
    lib, packed = ckernels.library(), ckernels.pack_s8_weights(b.to(torch.int8).cpu())
    local = threading.local()  # per-thread int16 scratch: one model may be shared by several threads

    def product(a8: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        rows, a8 = a8.shape[0], a8.contiguous()
        scratch = getattr(local, "a16", None)
        if scratch is None or scratch.numel() < rows * packed.k_padded:
            scratch = local.a16 = torch.empty(rows * packed.k_padded, dtype=torch.int16)
        lib.gemm_s8s32(
            a8.data_ptr(), rows, packed.k, packed.data.data_ptr(), packed.n, packed.k_padded, scratch.data_ptr(),
            out.data_ptr(),
        )  # fmt: skip
        return out

    product.packed = packed  # type: ignore[attr-defined]  (kept alive with the product)
    return product
