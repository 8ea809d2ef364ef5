"""Command-line behaviour: listing, usage errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from compress.cli import EXIT_USER_ERROR, main
from compress.registry import REGISTRIES
from tests.conftest import FIXTURES, ROOT, SCHEDULES


def test_list_shows_every_registered_component(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for kind, reg in REGISTRIES.items():
        assert f"{kind}:" in out
        for entry in reg:
            assert entry.name in out


def test_list_one_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list", "quantizers"]) == 0
    out = capsys.readouterr().out
    assert "post_train_linear" in out and "perplexity" not in out


def test_list_unknown_kind_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list", "quantizer"]) == EXIT_USER_ERROR
    assert "Did you mean 'quantizers'" in capsys.readouterr().err


def test_no_schedule_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USER_ERROR
    assert "give a schedule file" in capsys.readouterr().err


def test_bad_thread_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(SCHEDULES / "perf_rnn.yaml"), "--threads", "0"]) == EXIT_USER_ERROR
    assert "--threads" in capsys.readouterr().err


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    """The tiny Performance RNN schedule cut to a float, a cast, a partly fp16 and a fully 8-bit experiment."""
    data = yaml.safe_load((ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml").read_text())
    data["model"]["checkpoint"] = str(FIXTURES / "perf_rnn_tiny.pt")
    keep = ("fp32", "fp16", "eltwise_fp16", "int8_full")
    data["experiments"] = [e for e in data["experiments"] if e["name"] in keep]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_quiet_still_prints_the_table_and_the_absolute_report_path(
    tiny_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([str(tiny_study), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "[1/4]" not in printed  # the per-experiment lines are progress; --quiet drops them
    assert "eltwise_fp16 " in printed and "Δ vs fp32" in printed
    assert printed.strip().splitlines()[-1] == f"report: {out.resolve() / 'report.md'}"
    exps = {e["name"]: e for e in json.loads((out / "report.json").read_text())["experiments"]}
    assert exps["fp16"]["settings"]["stats"] is None  # a cast reads no statistics, so it lists none
    assert exps["int8_full"]["settings"]["stats"]["source"] == "generate"
    # A cell left op by op says why; the fully 8-bit one runs fused and says nothing.
    assert any("gru.cells.0: no fused integer loop (" in n for n in exps["eltwise_fp16"]["notes"])
    assert not any("no fused integer loop" in n for n in exps["int8_full"]["notes"])
    md = (out / "report.md").read_text()
    layer_header = md.split("## Per-layer table")[1].split("\n")[2]
    assert "sqnr_db" in layer_header and "weight_zero_point" not in layer_header
    assert "weight_zero_point" in (out / "layers.csv").read_text().splitlines()[0]


def test_plan_is_a_readable_table(tiny_study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tiny_study), "--plan"]) == 0
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) < 200 and "{" not in printed
    table = printed.split("experiment eltwise_fp16: post_train_linear")[1]
    assert table.split("\n")[1].split() == ["module", "type", "kind", "rule", "bits", "mode", "clip", "per_channel"]
    row = next(line for line in table.splitlines() if line.startswith("gru.cells.0.eltwiseadd_gate "))
    assert "#0 .*eltwise.* fp16=True" in row and row.split()[-1] == "fp16"
