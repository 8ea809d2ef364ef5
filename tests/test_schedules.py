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
    assert ("ModularLSTM" in out or "ModularGRU" in out) and "experiment int8_full" in out


SEED_STUDIES = [p for p in SHIPPED if not p.stem.endswith(("_qat", "_search"))]  # those ask other questions
QAT_STUDIES = [p for p in SHIPPED if p.stem.endswith("_qat")]


@pytest.mark.parametrize("path", SEED_STUDIES, ids=[p.stem for p in SEED_STUDIES])
def test_shipped_schedule_has_the_seed_study(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    names = {e["name"] for e in data["experiments"]}
    assert SEED_EXPERIMENTS <= names
    assert any("stats_edits" in e for e in data["experiments"]), "the notebook's ±6 edit must be one variant"


def test_both_shipped_models_have_a_qat_study() -> None:
    assert sorted(p.stem for p in QAT_STUDIES) == ["perf_rnn_qat", "word_lm_qat"]


@pytest.mark.parametrize("path", QAT_STUDIES, ids=[p.stem for p in QAT_STUDIES])
def test_qat_study_pairs_each_fine_tuned_experiment_with_its_post_training_twin(path: Path) -> None:
    exps = {e["name"]: e for e in yaml.safe_load(path.read_text())["experiments"]}
    for x in ("w4a8", "int8_full"):
        ptq, qat = exps[f"{x}_ptq"], exps[f"{x}_qat"]
        assert "finetune" not in ptq and qat["finetune"]["steps"] > 0
        same = ("quantizer", "args", "overrides", "stats", "stats_edits")
        assert {k: ptq.get(k) for k in same} == {k: qat.get(k) for k in same}, x
    assert exps["w4a8_ptq"]["args"]["bits_parameters"] == 4 and "bits_activations" not in exps["w4a8_ptq"]["args"]


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
    exported = [e["name"] for e in yaml.safe_load(path.read_text())["experiments"] if e.get("export")]
    assert exported
    for name in exported:
        assert rows[name]["artifact_bytes"] == (tmp_path / "a" / f"{name}.qpt").stat().st_size > 0
    int8 = {r["module"]: r for r in rows["int8_full_qat" if "int8_full_qat" in rows else "int8_full"]["layers"]}
    gates, cell_out = (".eltwiseadd_gate", ".act_h") if "gru_tiny" not in path.stem else (".eltwiseadd_new", ".act_n")
    assert any(gates in m for m in int8) and any(cell_out in m for m in int8)
    for label, files in a.get("renders", {}).items():  # the render block's generations, linked from report.md
        assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files), label
