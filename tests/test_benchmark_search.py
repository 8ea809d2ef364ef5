"""benchmarks/search.py's RESULTS.md section from a report (the searches themselves take minutes: not run here)."""

from __future__ import annotations

import importlib.util
from typing import Any

from tests.conftest import ROOT


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_search", ROOT / "benchmarks" / "search.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_section_says_target_size_wall_time_and_whether_the_replay_matched() -> None:
    search = {"target_met": True, "minutes": 2.5, "trials": 70, "stopped": "finished"}
    search["configuration"] = {"overrides": [{"match": "a", "fp16": True}]}
    report = {
        "schedule": "m_search",
        "checkpoint_bytes": 4000,
        "experiments": [
            {"name": "fp32", "value": 2.0, "delta_pct": 0.0, "weight_bytes": 4000},
            {"name": "s", "value": 2.004, "delta_pct": 0.2, "weight_bytes": 1000, "search": search},
            {
                "name": "t",
                "value": 2.01,
                "delta_pct": 0.5,
                "weight_bytes": 1000,
                "search": {**search, "target_met": False},
            },
        ],
    }
    text = _module().section({"m_search": (report, {"s": 2.004, "t": 2.0100001}, {"wall_s": 300.0})})
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| m_search")}
    assert "| met |" in rows["`s`"] and "4.00×" in rows["`s`"] and "bit for bit" in rows["`s`"]
    assert "not met" in rows["`t`"] and "DIFFERS" in rows["`t`"]
    assert "whole study 5.0 min" in text and "`a` fp16=True" in text
