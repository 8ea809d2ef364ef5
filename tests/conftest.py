"""Shared fixtures: paths, the tiny checkpoints, and the plugin folder on sys.path."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import compress.components  # noqa: F401  (registers the built-ins)

# As the CLI: one intra-op thread (small recurrent ops only pay for thread barriers; see compress.cli).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SCHEDULES = ROOT / "schedules"
PLUGIN = ROOT / "examples" / "plugin_example"


@pytest.fixture
def plugin_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the test-only plugin modules importable (one of them fails on purpose)."""
    path = FIXTURES / "plugins"
    monkeypatch.syspath_prepend(str(path))
    return path


def _installed() -> bool:
    return any(
        ep.value == "compress_plugin_example" for ep in importlib.metadata.entry_points(group="compress.plugins")
    )


@pytest.fixture(scope="session")
def installed_plugin() -> None:
    """Install the example (editable, no dependencies: it needs only compress) unless it already is."""
    if not _installed():
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(PLUGIN)]
        subprocess.run(cmd, check=True, capture_output=True)
    # An editable install is seen by new interpreters (its .pth file); this one needs the folder on its path.
    if str(PLUGIN) not in sys.path:
        sys.path.insert(0, str(PLUGIN))
