"""Shared fixtures: paths, the tiny checkpoints, the test plugins and the example plugin (never installed)."""

from __future__ import annotations

import os
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
# First on the path for every test: this checkout's example plugin is the one imported, even where another
# copy is installed (its entry point would otherwise import that copy the first time plugins are loaded).
if str(PLUGIN) not in sys.path:
    sys.path.insert(0, str(PLUGIN))


@pytest.fixture
def plugin_path(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the test-only plugin modules importable (one of them fails on purpose)."""
    path = FIXTURES / "plugins"
    monkeypatch.syspath_prepend(str(path))
    return path


def _fake_dist_info(site: Path) -> None:
    """A dist-info that declares the example's ``compress.plugins`` entry point, as ``pip install`` would write."""
    info = site / "compress_plugin_example_tests-0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: compress-plugin-example-tests\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[compress.plugins]\nexample = compress_plugin_example\n")


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example plugin importable and declared as an entry point, without installing anything.

    Returns the environment for a subprocess: ``PYTHONPATH`` puts this checkout, the plugin's folder and a
    temporary site folder (holding only a generated dist-info with the entry point) before everything else,
    so this checkout's copies win over any installed ones (in this process the folder is already on the path).
    """
    site = tmp_path_factory.mktemp("plugin_site")
    _fake_dist_info(site)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(PLUGIN), str(site), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env


@pytest.fixture(scope="session")
def tiny_rollout_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """The tiny Performance RNN schedule with the rollout evaluator and a render block, fp32 and int8_full only.

    Shared by the rollout, render and generate tests (one run of a few seconds): returns the RunResult and
    the report folder, which holds ``int8_full.qpt`` and the rendered MIDI files.
    """
    from compress import engine, report
    from compress.schedule import load_schedule

    schedule = load_schedule(ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml")
    schedule.data["evaluate"] = {"name": "rollout", "args": ROLLOUT_TINY}
    schedule.data["experiments"] = [e for e in schedule.data["experiments"] if e["name"] in ("fp32", "int8_full")]
    schedule.data["render"] = {"experiments": ["int8_full"], "sequences": 2, "steps": 120}
    out = tmp_path_factory.mktemp("rollout_study")
    result = engine.run(schedule, out_dir=out, progress=False)
    report.write_report(result, out)
    return result, out


ROLLOUT_TINY = {"sequences": 4, "steps": 60, "window": 20, "seed": 0}  # seconds, not the 16 x 1000 default
