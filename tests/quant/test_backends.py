"""Every int8 product backend equals an independent int64 reference bit for bit, on odd and long shapes."""

from __future__ import annotations

import pytest
import torch

from compress.quant.kernels import backends, ckernels, dispatch

# Reduction lengths around the fp32 backend's chunk (1024 for full-range int8 codes), up to 4096.
SHAPES = [(1, 1, 1), (1, 5, 3), (3, 17, 9), (4, 256, 1024), (5, 255, 1001), (64, 256, 1024), (9, 1023, 17),
          (2, 1025, 40), (7, 4096, 33), (1, 4096, 64), (300, 200, 70)]  # fmt: skip


def available() -> list[str]:
    return [b for b in backends.BACKENDS if not backends.unavailable(b, torch.device("cpu"))]


def operands(rows: int, k: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-128, 128, (rows, k), generator=g, dtype=torch.int8)
    b = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    a[0, : (k + 1) // 2], b[0, : (k + 1) // 2] = -128, -128  # the extreme product, where saturating kernels fail
    return a, b


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.to(torch.int64) @ b.to(torch.int64).t()).to(torch.int32)


@pytest.mark.parametrize("name", backends.BACKENDS)
@pytest.mark.parametrize(("rows", "k", "n"), SHAPES)
def test_backend_equals_int64_reference(name: str, rows: int, k: int, n: int) -> None:
    if name not in available():
        pytest.skip(backends.unavailable(name, torch.device("cpu")))
    if name in dispatch.probe()["inexact"]:
        pytest.skip(f"the {name} backend is not exact on this CPU (the probe found it; auto never uses it)")
    a, b = operands(rows, k, n, seed=rows + k + n)
    out = torch.full((rows, n), 7, dtype=torch.int32)  # stale contents must be overwritten
    assert torch.equal(backends.prepare(name, b, 128)(a, out), reference(a, b))


def test_fp32_chunks_keep_every_partial_sum_exact() -> None:
    assert backends.fp32_chunk(torch.full((2, 4096), -128, dtype=torch.int8), 128) == 1024  # 2^24 / 2^14
    assert backends.fp32_chunk(torch.full((2, 4096), 7, dtype=torch.int8), 8) == 4096  # small codes: one chunk
    # A sum of 4096 products of -128 * -128 = 2^26 is not a float32-exact partial sum of one chunk: it needs four.
    a = torch.full((1, 4096), -128, dtype=torch.int8)
    b = a.clone()
    b[0, ::3] = 127
    out = torch.empty(1, 1, dtype=torch.int32)
    assert torch.equal(backends.prepare("fp32", b, 128)(a, out), reference(a, b))


def test_fp32_steps_aside_under_reduced_matmul_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = operands(4, 300, 20, seed=1)
    product, out = backends.prepare("fp32", b, 128), torch.empty(4, 20, dtype=torch.int32)
    dtypes = []
    real = torch.mm
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "medium")
    monkeypatch.setattr(torch, "mm", lambda x, y, **kw: dtypes.append(x.dtype) or real(x, y, **kw))
    assert torch.equal(product(a, out), reference(a, b)) and dtypes == [torch.float64]  # the exact float64 product


def test_c_vector_path_equals_its_scalar_loop() -> None:
    lib = ckernels.library()
    if lib is None:
        pytest.skip("no C compiler")
    for rows, k, n in SHAPES:
        a, b = operands(rows, k, n, seed=3)
        packed = ckernels.pack_s8_weights(b)
        scratch = torch.empty(rows * packed.k_padded, dtype=torch.int16)
        vector, scalar = (torch.empty(rows, n, dtype=torch.int32) for _ in range(2))
        args = (a.data_ptr(), rows, k, packed.data.data_ptr(), n, packed.k_padded, scratch.data_ptr())
        lib.gemm_s8s32(*args, vector.data_ptr())
        lib.gemm_s8s32_scalar(*args, scalar.data_ptr())
        assert torch.equal(vector, scalar) and torch.equal(vector, reference(a, b))


def test_unavailable_reasons() -> None:
    assert "unknown" in backends.unavailable("gpu_magic", torch.device("cpu"))
    assert backends.unavailable("int_mm", torch.device("cpu")) == ""
