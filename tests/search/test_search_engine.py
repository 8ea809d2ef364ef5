"""The search through the real engine on the tiny word LM, with one group made very sensitive by construction.

A statistics edit shrinks the averaged output range of cell 0's tanh (``act_g``) to ±0.02, so with the
base clip mode (``avg``) that group's 8-bit outputs are almost all clipped; the ``clip_acts: none``
rung reads the untouched ``[min, max]`` and repairs it. The right answer is therefore: cell 0 at that
rung, everything else at the base.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from compress import engine, report
from compress.schedule import load_schedule
from tests.conftest import ROOT

TINY = ROOT / "tests" / "schedules_tiny" / "word_lm_tiny.yaml"
CKPT = str(ROOT / "tests" / "fixtures" / "word_lm_tiny.pt")
SABOTAGE = [{"match": r"rnn\.cells\.0\.act_g", "tensor": "output", "set": {"avg_min": -0.02, "avg_max": 0.02}}]
SEARCH = {
    "target": {"max_delta_pct": 6.0},
    "ladder": [{}, {"clip_acts": "none"}, {"fp32": True}],
    "groups": [{"name": "cell0", "match": r"rnn\.cells\.0\..*"}, {"name": "cell1", "match": r"rnn\.cells\.1\..*"}],
    "subset": {"batches": 3},
    "budget": {"trials": 40},
}


def _schedule(folder: Path, experiments: list[dict[str, Any]]) -> Path:
    data = yaml.safe_load(TINY.read_text())
    data["model"]["checkpoint"] = data["data"]["args"]["vocab_from_checkpoint"] = CKPT
    data["quantizer"]["args"].update(mode="asymmetric_signed", per_channel_wts=True, clip_acts="avg")
    data["experiments"] = [{"name": "fp32", "quantizer": None}, *experiments]
    data["report"] = {"formats": ["md", "json"]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _run(path: Path, out: Path) -> dict[str, Any]:
    result = engine.run(load_schedule(path), out_dir=out, progress=False)
    report.write_report(result, out)
    return {e["name"]: e for e in json.loads((out / "report.json").read_text())["experiments"]}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("search")
    exps = [
        {"name": "sabotaged", "stats_edits": SABOTAGE},
        {"name": "search", "stats_edits": SABOTAGE, "export": True, "search": SEARCH},
    ]
    return folder, _run(_schedule(folder, exps), folder / "out")


def test_the_sensitive_group_is_ranked_first_and_repaired_at_the_cheapest_rung(
    searched: tuple[Path, dict[str, Any]],
) -> None:
    _, rows = searched
    s = rows["search"]["search"]
    assert rows["sabotaged"]["delta_pct"] > 6.0  # the base misses the target by construction
    assert s["sensitivity"][0]["group"] == "cell0"
    assert s["rungs"] == {"cell0": 1, "cell1": 0, "encoder": 0, "decoder": 0}
    assert s["target_met"] and rows["search"]["delta_pct"] <= 6.0
    assert rows["search"]["weight_bytes"] == rows["sabotaged"]["weight_bytes"]  # a clip mode costs no bytes


def test_report_json_md_and_the_files_of_a_search(searched: tuple[Path, dict[str, Any]]) -> None:
    folder, rows = searched
    out = folder / "out"
    s = rows["search"]["search"]
    assert rows["search"]["artifact_bytes"] == (out / "search.qpt").stat().st_size > 0  # export: the best one
    with open(out / "search.search.csv", newline="") as f:
        trace = list(csv.DictReader(f))
    assert len(trace) == s["trials"] and trace[-1]["data"] == "all evaluation batches"  # confirmed on all
    md = (out / "report.md").read_text()
    assert "## Search: `search`" in md and "Sensitivity (worst first" in md and "Trajectory" in md
    assert yaml.safe_load((out / "search.best.yaml").read_text())[0] == s["configuration"]


def test_best_yaml_pasted_as_a_plain_experiment_replays_bit_for_bit(
    searched: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    folder, rows = searched
    (entry,) = yaml.safe_load((folder / "out" / "search.best.yaml").read_text())
    assert "search" not in entry
    replay = _run(_schedule(tmp_path, [entry]), tmp_path / "out")["search"]
    assert replay["value"] == rows["search"]["value"]  # the same float, not approximately
    assert replay["weight_bytes"] == rows["search"]["weight_bytes"]
    assert replay["metrics"] == rows["search"]["metrics"]
