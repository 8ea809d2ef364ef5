"""Fixtures of the quantizer tests."""

from __future__ import annotations

import pytest

from compress.quant.kernels import backends, ckernels, dispatch


@pytest.fixture(params=["c", "torch"])
def kernels_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with the compiled C kernels and once with PyTorch ops only (both must give the same bits)."""
    if request.param == "torch":
        monkeypatch.setitem(ckernels._state, "lib", None)
    elif ckernels.library() is None:
        pytest.skip("no C compiler: the C kernels are not built here")
    return request.param


# (loops, int8 backend): the C loops or PyTorch ops around each product, times every product backend; the
# ``c`` backend is itself a C kernel, so it only runs with the C loops.
COMBOS = [("c", name) for name in backends.BACKENDS] + [("torch", n) for n in backends.BACKENDS if n != "c"]


@pytest.fixture(params=COMBOS, ids=[f"{loops}-{name}" for loops, name in COMBOS])
def int_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with every int8 product backend forced (``COMPRESS_INTEGER_KERNELS``), each with the C loops
    and with PyTorch ops around it: all give the same bits."""
    loops, name = request.param
    if loops == "torch":
        monkeypatch.setitem(ckernels._state, "lib", None)
    elif ckernels.library() is None:
        pytest.skip("no C compiler: the C kernels are not built here")
    if name in dispatch.probe()["inexact"]:  # e.g. oneDNN capped to AVX2: auto never uses it, forcing it is wrong
        pytest.skip(f"the {name} backend is not exact on this CPU (the probe found it; auto never uses it)")
    monkeypatch.setenv(dispatch.ENV, name)
    return name


def used_backends(module: object) -> set[str]:
    """The int8 backends that ran in ``module`` and its children (from each IntMatmul's call counts)."""
    found: set[str] = set()
    for child in getattr(module, "modules", lambda: [module])():
        found |= set(getattr(child, "used", {}))
    return found
