"""The example plugin package is installed and its schedule runs end to end through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import PLUGIN


def test_plugin_components_are_listed(installed_plugin: None) -> None:
    out = subprocess.run([sys.executable, "-m", "compress", "--list"], capture_output=True, text=True, check=True)
    for name in ("char_gru", "char_text", "pow2_weights"):
        assert name in out.stdout


def test_plugin_schedule_runs(installed_plugin: None, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "compress", str(PLUGIN / "schedule.yaml"), "--out", str(tmp_path), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    ppl = {e["name"]: e["value"] for e in report["experiments"]}
    # 4-bit power-of-two weights must cost accuracy; 8-bit must stay within 1% of float.
    assert ppl["pow2_w4"] > ppl["fp32"]
    assert abs(ppl["pow2_w8"] - ppl["fp32"]) / ppl["fp32"] < 0.01
    assert report["conversions"][0]["replaced"], "the char GRU must have been converted"
