"""Search tests draw no plots (matplotlib costs seconds per figure) except the one test that checks them."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_plots(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "plots" not in request.keywords:
        monkeypatch.setattr("compress.search.search.write_plots", lambda out_dir, name, search: [])
