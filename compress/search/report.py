"""The search's part of report.md: outcome, sensitivity table (worst groups first) and the trajectory.

Example:
    >>> search_md("s", {"target": {"max_delta_pct": 0.25}, "target_met": True, "trials": 3, "stopped": "finished",
    ...     "minutes": 0.1, "subset": "all", "sensitivity": [], "trajectory": [], "plots": [], "strategy": "greedy",
    ...     "ladder": {"name": "default"}, "rungs": {}, "files": {"trace": "s.search.csv", "best": "s.best.yaml"}})[0]
    '## Search: `s`'
"""

from __future__ import annotations

import math
from typing import Any

from tabulate import tabulate

from compress.search.ladder import rung_text

__all__ = ["search_md"]

_TRAJECTORY_SHOWN = 60  # the rest is in the trace file


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else ""


def search_md(name: str, s: dict[str, Any]) -> list[str]:
    """Markdown lines for one search experiment."""
    ((kind, limit),) = s["target"].items()
    unit = "%" if kind == "max_delta_pct" else ""
    md = [f"## Search: `{name}`", ""]
    md.append(
        f"Target: loss ≤ {limit:g}{unit} against float ({s.get('direction', '')}): "
        f"**{'met' if s['target_met'] else 'not met'}** on the whole evaluation split. Strategy `{s['strategy']}`, "
        f"ladder `{s['ladder']['name']}`, {s['trials']} trials on {s['subset']} in {s['minutes']:.2f} min "
        f"({s['stopped']}). Trace `{s['files']['trace']}`, best configuration `{s['files']['best']}`."
    )
    md += [""] + _rungs_md(s) + _sensitivity_md(s) + _trajectory_md(s)
    md += [f"![{p}]({p})" for p in s.get("plots", [])] + ([""] if s.get("plots") else [])
    return md


def _rungs_md(s: dict[str, Any]) -> list[str]:
    rungs = s.get("ladder", {}).get("rungs") or []
    moved = [[g, rung_text(rungs[k]) if k < len(rungs) else k] for g, k in s["rungs"].items() if k]
    if not moved:
        return ["Every group stays at the base rung.", ""]
    return ["Groups above the base rung:", "", tabulate(moved, headers=["group", "rung"], tablefmt="github"), ""]


def _sensitivity_md(s: dict[str, Any]) -> list[str]:
    rows = [
        [
            r["group"],
            r["modules"],
            _num(r.get("gain"), ".4g"),
            _num(r.get("only_float_delta_pct"), "+.3f"),
            _num(r.get("only_quantized_delta_pct"), "+.3f"),
            _num(r.get("sqnr_db"), ".1f"),
        ]
        for r in s["sensitivity"]
    ]
    heads = ["group", "modules", "gain", "Δ% only it float", "Δ% only it quantized", "worst SQNR dB"]
    out = ["Sensitivity (worst first; *gain*: base loss minus the loss with only this group float):", ""]
    return out + [tabulate(rows, headers=heads, tablefmt="github", disable_numparse=True), ""]


def _trajectory_md(s: dict[str, Any]) -> list[str]:
    traj = [r for r in s["trajectory"] if r.get("phase") != "sensitivity"]
    rows = [
        [
            r["trial"],
            r["phase"],
            r.get("group", ""),
            r.get("change", ""),
            r["data"],
            _num(r.get("delta_pct"), "+.3f"),
            "yes" if r.get("target_met") else "",
            r.get("weight_bytes", ""),
            r.get("note", ""),
        ]
        for r in traj[:_TRAJECTORY_SHOWN]
    ]
    heads = ["trial", "phase", "group", "change", "data", "Δ%", "met", "weight bytes", "note"]
    more = [f"({len(traj) - _TRAJECTORY_SHOWN} more rows in the trace.)", ""] if len(traj) > _TRAJECTORY_SHOWN else []
    out = ["Trajectory (sensitivity trials are in the trace):", ""]
    return out + [tabulate(rows, headers=heads, tablefmt="github", disable_numparse=True), ""] + more
