"""``export: true`` in a schedule writes <experiment>.qpt, reports its size, and the artifact scores the same."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from compress import engine, report
from compress.quant import load_quantized
from compress.registry import EVALUATORS
from compress.schedule import load_schedule
from tests.conftest import FIXTURES

SCHEDULE = {
    "version": 1,
    "name": "export_tiny",
    "seed": 0,
    "device": "cpu",
    "model": {"name": "performance_rnn", "checkpoint": str(FIXTURES / "perf_rnn_tiny.pt")},
    "data": {
        "name": "bach_chorales",
        "args": {
            "evaluation_split": "validation",
            "window": 30,
            "batch_size": 4,
            "calibration_batches": 1,
            "evaluation_batches": 1,
            "max_files": 12,
        },
    },
    "convert": ["rnn_to_modular"],
    "stats": {"source": "collect", "args": {"batches": 1}},
    "quantizer": {
        "name": "post_train_linear",
        "args": {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg", "missing_stats": "warn"},
    },
    "evaluate": {"name": "perplexity"},
    "experiments": [{"name": "fp32", "quantizer": None}, {"name": "int8_full", "export": True}],
}


def test_export_writes_artifact_reports_size_and_scores_identically(tmp_path: Path) -> None:
    path = tmp_path / "schedule.yaml"
    path.write_text(yaml.safe_dump(SCHEDULE))
    schedule = load_schedule(path)
    out = tmp_path / "out"
    result = engine.run(schedule, out_dir=out, progress=False)
    report.write_report(result, out)

    fp32, int8 = result.experiments
    artifact = out / "int8_full.qpt"
    assert fp32.artifact_bytes is None and not (out / "fp32.qpt").exists()
    assert int8.artifact_bytes == artifact.stat().st_size
    assert 0 < int8.artifact_bytes < result.checkpoint_bytes / 2
    data = json.loads((out / "report.json").read_text())
    assert data["checkpoint_bytes"] == result.checkpoint_bytes
    assert [e["artifact_bytes"] for e in data["experiments"]] == [None, int8.artifact_bytes]
    table = (out / "report.md").read_text()
    assert "artifact (fp32: " in table and "(÷" in table

    model = load_quantized(artifact)
    again = EVALUATORS.get("perplexity").obj(model, engine.build_data(schedule), progress=False)
    assert again["value"] == int8.value and again["metrics"] == int8.metrics
