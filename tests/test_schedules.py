"""Every shipped schedule resolves (--plan); the tiny copies run end to end, twice, identically."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from compress import engine, report
from compress.cli import main
from compress.schedule import load_schedule
from tests.conftest import ROOT, SCHEDULES

SHIPPED = sorted(SCHEDULES.glob("*.yaml"))
TINY = sorted((ROOT / "tests" / "schedules_tiny").glob("*.yaml"))
SEED_EXPERIMENTS = {"fp32", "fp16", "sym8", "asym8_per_channel", "eltwise_fp16", "avg_clip", "int8_full"}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_schedule_plans(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(path), "--plan", "--quiet"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "ModularLSTM" in out and "experiment int8_full" in out


SEED_STUDIES = [p for p in SHIPPED if not p.stem.endswith("_search")]  # the *_search schedules ask another question


@pytest.mark.parametrize("path", SEED_STUDIES, ids=[p.stem for p in SEED_STUDIES])
def test_shipped_schedule_has_the_seed_study(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    names = {e["name"] for e in data["experiments"]}
    assert SEED_EXPERIMENTS <= names
    assert any("stats_edits" in e for e in data["experiments"]), "the notebook's ±6 edit must be one variant"


SEARCHES = [p for p in SHIPPED if p.stem.endswith("_search")]


@pytest.mark.parametrize("path", SEARCHES, ids=[p.stem for p in SEARCHES])
def test_shipped_search_schedule_asks_the_question_of_issue_16(path: Path) -> None:
    from compress.search import LADDERS

    exps = {e["name"]: e for e in yaml.safe_load(path.read_text())["experiments"]}
    assert exps["fp32"]["quantizer"] is None and "int8_full" in exps
    searches = [e for e in exps.values() if "search" in e]
    assert any(e["search"]["target"] == {"max_delta_pct": 0.25} and e.get("export") for e in searches)
    ladders = [e["search"].get("ladder", "default") for e in searches]
    rungs = [LADDERS[x] if isinstance(x, str) else x for x in ladders]
    floats = ("fp16", "bf16", "fp32", "precision", "none", "quantize")
    on_grid = lambda rs: (
        not any(k in r for r in rs for k in floats)
        and all(  # noqa: E731
            r.get(b, 8) is not None for r in rs for b in ("bits_activations", "bits_weights")
        )
    )
    assert any(on_grid(rs) for rs in rungs), "one search keeps every op on an integer grid"
    assert not on_grid(LADDERS["default"])


def _trials(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _run(path: Path, out: Path) -> dict:
    result = engine.run(load_schedule(path), out_dir=out, progress=False)
    report.write_report(result, out)
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("path", TINY, ids=[p.stem for p in TINY])
def test_tiny_schedule_runs_twice_identically(path: Path, tmp_path: Path) -> None:
    a = _run(path, tmp_path / "a")
    b = _run(path, tmp_path / "b")
    for ea, eb in zip(a["experiments"], b["experiments"], strict=True):
        assert ea["metrics"] == eb["metrics"], ea["name"]
        scales = lambda e: [(r["module"], r.get("output_scale"), r.get("weight_scale")) for r in e["layers"]]  # noqa: E731
        assert scales(ea) == scales(eb), ea["name"]
    stats = sorted((tmp_path / "a").glob("stats-*.yaml"))
    assert stats
    for sa in stats:
        body = lambda p: {k: v for k, v in yaml.safe_load(p.read_text()).items() if k != "compress_stats"}  # noqa: E731
        assert body(sa) == body(tmp_path / "b" / sa.name)
    for trace in sorted((tmp_path / "a").glob("*.search.csv")):  # a search tries the same trials, in order
        assert _trials(trace) == _trials(tmp_path / "b" / trace.name)
    rows = {e["name"]: e for e in a["experiments"]}
    assert rows["fp32"]["delta_pct"] == 0.0
    assert all(e["layers"] for name, e in rows.items() if name not in ("fp32", "fp16", "bf16"))
    artifact = tmp_path / "a" / "int8_full.qpt"  # the schedules export int8_full
    assert rows["int8_full"]["artifact_bytes"] == artifact.stat().st_size > 0
    int8 = {r["module"]: r for r in rows["int8_full"]["layers"]}
    assert any(".eltwiseadd_gate" in m for m in int8) and any(".act_h" in m for m in int8)
