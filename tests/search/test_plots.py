"""The optional plots: written when matplotlib is there, skipped cleanly when it is not."""

from __future__ import annotations

import builtins
import math
from pathlib import Path
from typing import Any

import pytest

from compress.search import plots

SEARCH = {
    "sensitivity": [
        {"group": "a", "gain": 0.5, "only_float_delta_pct": 0.1, "only_quantized_delta_pct": 0.4},
        {"group": "b", "gain": math.nan},
    ],
    "trajectory": [{"phase": "base", "weight_bytes": 2048, "delta_pct": 0.7}],
}


@pytest.mark.plots
def test_plots_are_png_files_next_to_the_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    names = plots.write_plots(tmp_path, "s", SEARCH)
    assert names == ["s.sensitivity.png", "s.tradeoff.png"]
    assert all((tmp_path / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


@pytest.mark.plots
def test_without_matplotlib_nothing_is_written_and_nothing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert plots.write_plots(tmp_path, "s", SEARCH) == []
    assert not list(tmp_path.iterdir())
