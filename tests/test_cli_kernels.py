"""``--kernels`` and the integer backend a schedule asks for, end to end through the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from compress.cli import EXIT_USER_ERROR, main
from compress.quant.kernels import backends, dispatch
from tests.conftest import ROOT


def test_kernels_prints_cpu_flags_and_a_choice_per_class(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--kernels"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("CPU: ") and "ISA flags:" in out and "C kernels:" in out
    for cls in dispatch.CLASSES:
        line = next(line for line in out.splitlines() if line.strip().startswith(cls))
        assert line.split("auto -> ")[1].split()[0] in backends.BACKENDS


def _tiny_schedule(tmp_path: Path, kernels: str) -> Path:
    """The tiny Performance RNN schedule with one int8 experiment that asks for ``kernels``."""
    src = ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml"
    doc = yaml.safe_load(src.read_text())
    doc["model"]["checkpoint"] = str(ROOT / "tests" / "fixtures" / "perf_rnn_tiny.pt")
    doc["stats"].pop("save", None)
    doc["experiments"] = [
        {"name": "fp32", "quantizer": None},
        {"name": "int8", "args": {"mode": "asymmetric_signed", "integer_kernels": kernels, "missing_stats": "warn"}},
    ]
    doc["report"] = {k: v for k, v in doc.get("report", {}).items() if k != "layers_for"}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("kernels", ["fp32", "int_mm"])
def test_a_schedule_forces_a_backend_and_the_report_names_it(kernels: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(_tiny_schedule(tmp_path, kernels)), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader((out / "layers.csv").open()))
    fc = next(r for r in rows if r["experiment"] == "int8" and r["module"].endswith("fc_gate_x"))
    assert fc["kernel"].split(",")[0] == kernels


def test_a_bad_environment_value_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(dispatch.ENV, "turbo")
    path = _tiny_schedule(tmp_path, "auto")
    assert main([str(path), "--out", str(tmp_path / "out"), "--quiet"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "COMPRESS_INTEGER_KERNELS='turbo'" in err and "Traceback" not in err
