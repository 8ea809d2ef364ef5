"""The example plugin, never installed: found via its entry point, its schedule run through the CLI.

Its components show the whole plugin contract, so the report must show each part: an evaluator with a
direction, a quantizer's deployed weight size and per-layer SQNR, and compress's own quantizer beside it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from tests.conftest import FIXTURES, PLUGIN

TIMEOUT_S = 120


def _compress(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "compress", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=TIMEOUT_S)


def test_plugin_components_are_listed_through_the_entry_point(plugin_env: dict[str, str], tmp_path: Path) -> None:
    proc = _compress(["--list"], plugin_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("char_gru", "char_text", "pow2_weights", "char_accuracy"):
        assert name in proc.stdout


def test_plugin_schedule_from_another_folder_reports_every_part_of_the_contract(
    plugin_env: dict[str, str], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _compress([str(PLUGIN / "schedule.yaml"), "--quiet"], plugin_env, elsewhere)
    assert proc.returncode == 0, proc.stderr
    out = elsewhere / "runs" / "plugin_example"  # the current folder's runs/<name>/, not the schedule's folder
    assert proc.stdout.strip().splitlines()[-1] == f"report: {out.resolve() / 'report.md'}"
    assert not (PLUGIN / "runs").exists()

    exps = {e["name"]: e for e in json.loads((out / "report.json").read_text())["experiments"]}
    assert list(exps) == ["fp32", "pow2_w8", "pow2_w4", "int8"]
    assert all(e["metric"] == "accuracy" and e["higher_is_better"] for e in exps.values())
    nll = {n: e["metrics"]["nll"] for n, e in exps.items()}
    assert nll["pow2_w4"] > nll["fp32"] and abs(nll["pow2_w8"] - nll["fp32"]) / nll["fp32"] < 0.01
    # deployed_weight_bytes: 8 and 4 bits per rounded weight, not the float copy's 32
    weights = {n: e["weight_bytes"] for n, e in exps.items()}
    assert weights["fp32"] > 3 * weights["pow2_w8"] and weights["pow2_w8"] > 1.7 * weights["pow2_w4"]
    # stats only where a quantizer reads them (pow2_weights says uses_stats = False)
    assert [n for n, e in exps.items() if e["settings"]["stats"]] == ["int8"]

    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| experiment"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells == [
        "experiment", "accuracy ↑", "Δ vs fp32", "Δ points", "accuracy_top3 ↑", "Δ", "weights", "eval s", "× fp32"
    ]  # fmt: skip
    # unit "fraction": an accuracy's Δ in points too (0.92 -> 0.91 is -1.00 points), and in %
    w4, fp32 = exps["pow2_w4"], exps["fp32"]
    assert w4["delta_points"] == (w4["value"] - fp32["value"]) * 100.0 and fp32["delta_points"] == 0.0
    assert w4["delta_pct"] == (w4["value"] - fp32["value"]) / fp32["value"] * 100.0
    layer_header = md.split("## Per-layer table: `pow2_w4`")[1].split("\n")[2]
    assert [c.strip() for c in layer_header.strip("|").split("|")] == ["module", "type", "bits", "sqnr_db"]
    with (out / "layers.csv").open() as f:
        rows = list(csv.DictReader(f))
    pow2 = [r for r in rows if r["experiment"] == "pow2_w4"]
    assert {r["module"] for r in pow2} == {"embed", "rnn.cells.0.fc_gate_x", "rnn.cells.0.fc_gate_h", "head"}
    assert all(float(r["sqnr_db"]) > 0 and float(r["weight_step"]) > 0 for r in pow2)
    assert any(r["experiment"] == "int8" and r["kernel"] for r in rows)


def test_piped_run_prints_each_experiment_row_before_the_run_ends(plugin_env: dict[str, str], tmp_path: Path) -> None:
    data = yaml.safe_load((PLUGIN / "schedule.yaml").read_text())
    gate = tmp_path / "gate"
    data["plugins"] = ["compress_plugin_example", "gated_evaluator"]
    data["evaluate"] = {"name": "gated_perplexity", "args": {"gate": str(gate)}}
    data["experiments"] = data["experiments"][:2]
    data["report"] = {"layers_for": "pow2_w8"}
    schedule = tmp_path / "piped.yaml"
    schedule.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**plugin_env, "PYTHONPATH": f"{FIXTURES / 'plugins'}:{plugin_env['PYTHONPATH']}"}
    cmd = [sys.executable, "-m", "compress", str(schedule), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    lines: list[str] = []
    first_row = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[1/2] fp32:"):
                first_row.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # The second experiment's evaluation waits for the gate, so this row can only come from a flush mid-run.
        assert first_row.wait(TIMEOUT_S), f"no row for the first experiment while the run was held: {lines}"
        assert proc.poll() is None
    finally:
        gate.touch()
        proc.wait(TIMEOUT_S)
        reader.join(TIMEOUT_S)
    assert proc.returncode == 0
    assert any(line.startswith("[2/2] pow2_w8:") for line in lines) and lines[-1].startswith("report: ")
