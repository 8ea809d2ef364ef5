"""The engine end to end on the example plugin's small model: files, reproducibility, paths, plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from compress import engine, experiment, report
from compress.quant import records
from compress.schedule import load_schedule
from tests.conftest import FIXTURES, PLUGIN, ROOT


@pytest.fixture
def schedule_copy(plugin_env: dict[str, str], tmp_path: Path) -> Path:
    """The plugin schedule copied to a temporary folder (so relative paths resolve there)."""
    import compress_plugin_example  # noqa: F401  (registers the plugin's components in this process)

    target = tmp_path / "study" / "schedule.yaml"
    target.parent.mkdir()
    shutil.copy(PLUGIN / "schedule.yaml", target)
    return target


def _run(path: Path, out: Path) -> dict:
    result = engine.run(load_schedule(path), out_dir=out, progress=False)
    report.write_report(result, out)
    return json.loads((out / "report.json").read_text())


def test_run_writes_every_report_file(schedule_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = _run(schedule_copy, out)
    for name in ("report.md", "report.json", "layers.csv", "manifest.json"):
        assert (out / name).stat().st_size > 0, name
    assert list(out.glob("stats-*.yaml")), "the statistics used must be saved next to the report"
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["schedule_sha256"]) == 64 and manifest["versions"]["torch"]
    assert [e["name"] for e in data["experiments"]] == ["fp32", "pow2_w8", "pow2_w4", "int8"]
    assert data["experiments"][0]["delta_pct"] == 0.0
    assert "| experiment" in (out / "report.md").read_text()


def test_same_schedule_twice_gives_identical_numbers(schedule_copy: Path, tmp_path: Path) -> None:
    a = _run(schedule_copy, tmp_path / "a")
    b = _run(schedule_copy, tmp_path / "b")
    assert [e["metrics"] for e in a["experiments"]] == [e["metrics"] for e in b["experiments"]]
    stats_a = sorted((tmp_path / "a").glob("stats-*.yaml"))[0]
    stats_b = sorted((tmp_path / "b").glob("stats-*.yaml"))[0]
    strip = lambda p: {k: v for k, v in yaml.safe_load(p.read_text()).items() if k != "compress_stats"}  # noqa: E731
    assert strip(stats_a) == strip(stats_b)


def test_relative_paths_resolve_against_the_schedule_folder(
    schedule_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "first"
    _run(schedule_copy, out)
    stats_file = sorted(out.glob("stats-*.yaml"))[0]
    shutil.copy(stats_file, schedule_copy.parent / "saved_stats.yaml")
    data = yaml.safe_load(schedule_copy.read_text())
    data["stats"] = {"source": "file", "args": {"path": "saved_stats.yaml"}}
    schedule_copy.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    second = _run(schedule_copy, tmp_path / "second")
    assert second["experiments"][1]["value"] > 0


def test_plan_resolves_without_evaluating(schedule_copy: Path) -> None:
    result = engine.plan(load_schedule(schedule_copy))
    assert result.conversions[0]["max_abs_error"] < engine.DEFAULT_CONVERSION_TOLERANCE
    plans = {e.name: e.plan for e in result.experiments}
    assert plans["fp32"] == [] and {r["module"] for r in plans["pow2_w4"]} >= {"embed", "head"}
    assert all(e.eval_seconds == 0.0 for e in result.experiments)


@pytest.fixture
def tiny_perf_study(tmp_path: Path) -> Path:
    """The tiny Performance RNN schedule cut to three quantized experiments over both built-in quantizers."""
    data = yaml.safe_load((ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml").read_text())
    data["model"]["checkpoint"] = str(FIXTURES / "perf_rnn_tiny.pt")
    data["experiments"] = [e for e in data["experiments"] if e["name"] in ("bf16", "sym8", "avg_clip")]
    data["report"]["layers_for"] = "sym8"
    path = tmp_path / "perf_rnn_tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_float_reference_is_captured_once_per_study_with_unchanged_rows(
    tiny_perf_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    captured: list[list[str]] = []
    real_capture = records.capture_outputs

    def counting_capture(model: Any, names: list[str], run: Any) -> dict[str, list]:
        captured.append(list(names))
        return real_capture(model, names, run)

    monkeypatch.setattr(records, "capture_outputs", counting_capture)
    shared = engine.run(load_schedule(tiny_perf_study), out_dir=tmp_path / "shared", progress=False)
    assert len(captured) == 1, "the float model must run once for every experiment's layer rows"
    captured.clear()
    monkeypatch.setattr(experiment, "_accepts_reference", lambda fn: False)  # as before: each experiment captures
    own = engine.run(load_schedule(tiny_perf_study), out_dir=tmp_path / "own", progress=False)
    assert len(captured) == 3
    assert all(e.layers for e in shared.experiments)
    assert [e.layers for e in shared.experiments] == [e.layers for e in own.experiments]
