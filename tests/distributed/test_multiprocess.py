"""Two processes on the loopback interface (gloo) give the one-process report; a failing rank ends all."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.distributed.launch import PLUGINS, ROOT, launch

TINY = ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml"
RTOL = 1e-12


def _schedule(tmp_path: Path, name: str, edit) -> Path:
    data = yaml.safe_load(TINY.read_text())
    data["model"]["checkpoint"] = str(ROOT / "tests" / "fixtures" / "perf_rnn_tiny.pt")
    edit(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _sharded(data: dict[str, Any]) -> None:
    """Three experiments and one collect source: with 2 ranks, two experiments are spread, the third and
    the statistics are sharded (see compress.distributed.placement)."""
    data["data"]["args"].update(calibration_batches=3, evaluation_batches=3)
    data["stats"] = {"source": "collect", "args": {"batches": 3, "histogram_bins": 32}, "save": "stats-collect.yaml"}
    exps = {e["name"]: e for e in data["experiments"]}
    args = {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "laplace"}  # uses 'b'
    laplace = {"name": "laplace", "args": args}
    data["experiments"] = [exps["fp32"], exps["int8_full"], laplace]


def _one_process(schedule: Path, out: Path) -> None:
    env_run = [sys.executable, "-m", "compress", str(schedule), "--quiet", "--out", str(out)]
    subprocess.run(env_run, cwd=ROOT, check=True, timeout=180, env=_solo_env())


def _solo_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(PLUGINS), env.get("PYTHONPATH", "")])
    return env


def _close(a: Any, b: Any, scale: float = 0.0) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        return a == b or (math.isfinite(a) and abs(a - b) <= RTOL * max(abs(a), abs(b), scale))
    return a == b


def _compare_stats(one: Path, two: Path) -> None:
    a, b = yaml.safe_load(one.read_text()), yaml.safe_load(two.read_text())
    a.pop("compress_stats", None), b.pop("compress_stats", None)  # the header holds the date
    assert a.keys() == b.keys()
    for module, entry in a.items():
        records = [(entry["output"], b[module]["output"])] if "output" in entry else []
        records += [(r, b[module]["inputs"][i]) for i, r in entry.get("inputs", {}).items()]
        for ra, rb in records:
            assert ra.keys() == rb.keys(), module
            assert ra["min"] == rb["min"] and ra["max"] == rb["max"], module  # bit for bit
            for key, va in ra.items():
                # A mean near 0 is compared on the scale of its spread: float64 sums in another order.
                assert _close(va, rb[key], ra.get("std", 0.0)), (module, key, va, rb[key])


def _compare_reports(one: Path, two: Path) -> None:
    a, b = json.loads((one / "report.json").read_text()), json.loads((two / "report.json").read_text())
    assert [e["name"] for e in a["experiments"]] == [e["name"] for e in b["experiments"]]
    for ea, eb in zip(a["experiments"], b["experiments"], strict=True):
        assert ea["settings"] == eb["settings"]
        assert ea["metrics"].keys() == eb["metrics"].keys()
        for k, v in ea["metrics"].items():
            assert _close(v, eb["metrics"][k]), (ea["name"], k, v, eb["metrics"][k])
    rows_a = list(csv.DictReader((one / "layers.csv").open()))
    rows_b = list(csv.DictReader((two / "layers.csv").open()))
    assert len(rows_a) == len(rows_b)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for k, v in ra.items():
            try:
                assert _close(float(v), float(rb[k])), (k, v, rb[k])
            except ValueError:
                assert v == rb[k], (k, v, rb[k])  # the plan: module, rule, bits, mode, kernel


def test_two_processes_sharded_equal_one_process(tmp_path: Path) -> None:
    schedule = _schedule(tmp_path, "sharded", _sharded)
    _one_process(schedule, tmp_path / "one")
    ranks = launch([str(schedule), "--quiet", "--out", str(tmp_path / "two")])
    assert ranks.codes == [0, 0], ranks.stderr
    _compare_reports(tmp_path / "one", tmp_path / "two")
    _compare_stats(tmp_path / "one" / "stats-collect.yaml", tmp_path / "two" / "stats-collect.yaml")
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["processes"] == 2
    d = manifest["distribution"]
    assert d["statistics"] == {"stats-collect.yaml": "sharded over 2 processes"}
    assert d["experiments"] == {"fp32": "rank 1", "int8_full": "rank 0", "laplace": "sharded over 2 processes"}
    assert "## Processes" in (tmp_path / "two" / "report.md").read_text()
    assert not (tmp_path / "one" / "report.md").read_text().count("## Processes")


@pytest.mark.slow
def test_two_processes_spread_equal_one_process_on_the_tiny_studies(tmp_path: Path) -> None:
    for tiny in ("perf_rnn_tiny", "word_lm_tiny"):
        schedule = ROOT / "tests" / "schedules_tiny" / f"{tiny}.yaml"
        _one_process(schedule, tmp_path / tiny / "one")
        ranks = launch([str(schedule), "--quiet", "--out", str(tmp_path / tiny / "two")])
        assert ranks.codes == [0, 0], ranks.stderr
        _compare_reports(tmp_path / tiny / "one", tmp_path / tiny / "two")
        for f in sorted((tmp_path / tiny / "one").glob("stats-*.yaml")):
            _compare_stats(f, tmp_path / tiny / "two" / f.name)


def _failing(data: dict[str, Any]) -> None:
    data["plugins"] = ["rank_failure_for_tests"]
    data["evaluate"] = {"name": "fail_on_rank_for_tests"}
    data["experiments"] = data["experiments"][:2]  # fp32 on rank 0 (passes), fp16 on rank 1 (fails)
    data["report"].pop("layers_for")


def test_a_rank_failing_ends_the_run_with_one_message_and_no_report(tmp_path: Path) -> None:
    schedule = _schedule(tmp_path, "failing", _failing)
    out = tmp_path / "out"
    ranks = launch([str(schedule), "--quiet", "--out", str(out)], extra_env={"COMPRESS_TEST_FAIL_RANK": "1"})
    assert ranks.codes == [2, 2], ranks.stderr
    text = "".join(ranks.stderr)
    assert text.count("failed on purpose") == 1, ranks.stderr
    assert "Traceback" not in text
    assert not (out / "report.md").exists() and not (out / "report.json").exists()


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_without_a_report(tmp_path: Path) -> None:
    schedule = _schedule(tmp_path, "killed", _failing)
    out = tmp_path / "out"
    env = {"COMPRESS_TEST_FAIL_RANK": "1", "COMPRESS_TEST_FAIL_MODE": "kill"}
    ranks = launch([str(schedule), "--quiet", "--out", str(out)], extra_env=env)
    assert ranks.codes[1] == 9 and ranks.codes[0] == 1, ranks.stderr  # not a user error
    assert "stopped" in ranks.stderr[0]
    assert not (out / "report.md").exists()


def test_a_bad_schedule_is_shown_once(tmp_path: Path) -> None:
    schedule = _schedule(tmp_path, "bad", lambda d: d.update(seed=-1))
    ranks = launch([str(schedule), "--quiet", "--out", str(tmp_path / "out")])
    assert ranks.codes == [2, 2], ranks.stderr
    assert "".join(ranks.stderr).count("seed: -1 is out of range") == 1, ranks.stderr
