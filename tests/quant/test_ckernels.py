"""Building and loading the optional C kernels: cached, atomic, and a clear fallback when they cannot be built."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.quant.kernels import ckernels


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache folder and no library loaded yet in this process."""
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    monkeypatch.setattr(ckernels, "_state", {})
    return tmp_path


def test_disabled_by_environment(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPRESS_CKERNELS", "0")
    assert ckernels.library() is None
    assert not (fresh / "kernels").exists()


def test_failing_compiler_warns_once_and_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/bin/false")
    with pytest.warns(UserWarning, match="C kernels unavailable"):
        assert ckernels.library() is None
    assert ckernels.library() is None  # remembered: no second build, no second warning
    assert not list((fresh / "kernels").glob("*.so"))  # nothing half-written is left to load later


def test_built_once_into_the_cache(fresh: Path) -> None:
    if ckernels._compiler() is None:
        pytest.skip("no C compiler")
    lib = ckernels.library()
    assert lib is not None and hasattr(lib, "lstm_step")
    built = list((fresh / "kernels").glob("ckernels-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    ckernels._state.clear()
    assert ckernels.library() is not None
    assert built[0].stat().st_mtime_ns == stamp  # loaded from the cache, not rebuilt
