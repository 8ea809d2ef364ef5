"""Fixtures of the quantizer tests."""

from __future__ import annotations

import pytest

from compress.quant.kernels import ckernels


@pytest.fixture(params=["c", "torch"])
def kernels_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with the compiled C kernels and once with PyTorch ops only (both must give the same bits)."""
    if request.param == "torch":
        monkeypatch.setitem(ckernels._state, "lib", None)
    elif ckernels.library() is None:
        pytest.skip("no C compiler: the C kernels are not built here")
    return request.param
