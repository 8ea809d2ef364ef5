"""Shared fixtures: paths, the tiny checkpoints, and the plugin folder on sys.path."""

from __future__ import annotations

from pathlib import Path

import pytest

import compress.components  # noqa: F401  (registers the built-ins)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SCHEDULES = ROOT / "schedules"


@pytest.fixture
def plugin_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the test-only plugin modules importable (one of them fails on purpose)."""
    path = FIXTURES / "plugins"
    monkeypatch.syspath_prepend(str(path))
    return path
