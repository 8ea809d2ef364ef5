"""Turn a run's results into tables and files: terminal summary, report.md, report.json, layers.csv, manifest.json.

The comparison table reads like this (values from a real run are in the README)::

    | experiment | perplexity | Δ vs fp32 | weights | eval s | × fp32 |
    |------------|-----------:|----------:|--------:|-------:|-------:|
    | fp32       |      2.963 |     +0.00% |  5.2 MB |   3.10 |   1.00 |
    | sym8       |      3.402 |    +14.80% |  1.3 MB |   4.90 |   1.58 |

Example:
    >>> fmt_bytes(1536)
    '1.5 KiB'
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from compress.fileio import atomic_write_json, atomic_write_text
from compress.layer_tables import (
    MD_LAYER_KEYS,
    TERMINAL_LAYER_KEYS,
    TERMINAL_WORST_LAYERS,
    fmt_cell,
    kept_columns,
    layer_rows,
    layer_table,
    layers_experiment,
    plan_table,
)
from compress.results import ExperimentResult, RunResult

__all__ = [
    "comparison_rows",
    "layer_rows",
    "render_terminal",
    "render_markdown",
    "write_report",
    "fmt_bytes",
    "plan_table",
    "experiment_line",
    "manifest",
]


def fmt_bytes(n: float) -> str:
    """Human-readable binary size."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _baseline(result: RunResult) -> ExperimentResult | None:
    floats = [e for e in result.experiments if e.settings.get("quantizer") is None]
    return floats[0] if floats else (result.experiments[0] if result.experiments else None)


def _extra_metric_names(result: RunResult) -> list[str]:
    names: list[str] = []
    for e in result.experiments:
        for k in e.metrics:
            if (k.startswith(e.metric + "_") or k in e.extra_metrics) and k not in names:
                names.append(k)
    return names


def comparison_rows(result: RunResult) -> list[dict[str, Any]]:
    """One row per experiment: metric, Δ vs the float baseline, deployed weight bytes, eval time and ratio."""
    base = _baseline(result)
    extras = _extra_metric_names(result)
    rows = []
    for e in result.experiments:
        row: dict[str, Any] = {"experiment": e.name, e.metric or "metric": e.value}
        row["delta_pct"] = _delta(e.value, base.value if base else float("nan"))
        if base is not None and base.unit == "fraction":  # accuracy-like: 0.92 -> 0.91 is -1.00 points
            row["delta_points"] = (e.value - base.value) * 100.0
        for k in extras:
            row[k] = e.metrics.get(k, float("nan"))
            bk = base.metrics.get(k, float("nan")) if base else float("nan")
            row[f"delta_{k}_pct"] = _delta(row[k], bk)
        row["weight_bytes"] = e.weight_bytes
        row["artifact_bytes"] = e.artifact_bytes
        row["eval_seconds"] = e.eval_seconds
        row["time_ratio"] = e.eval_seconds / base.eval_seconds if base and base.eval_seconds > 0 else float("nan")
        rows.append(row)
    return rows


def _delta(v: float, ref: float) -> float:
    return (v - ref) / ref * 100.0 if ref and math.isfinite(ref) and ref != 0 else float("nan")


_NOT_METRICS = ("experiment", "weight_bytes", "artifact_bytes", "eval_seconds", "time_ratio")


def _artifact_cell(n: int | None, checkpoint_bytes: int) -> str:
    """Exported artifact size and how many times smaller than the fp32 checkpoint ("" when not exported)."""
    if n is None:
        return ""
    return fmt_bytes(n) + (f" (÷{checkpoint_bytes / n:.2f})" if checkpoint_bytes and n else "")


def _display_comparison(rows: list[dict[str, Any]], base_name: str, checkpoint_bytes: int = 0) -> list[list[Any]]:
    out = []
    exported = any(r["artifact_bytes"] is not None for r in rows)
    for r in rows:
        cells = [r["experiment"]]
        for k, v in r.items():
            if k in _NOT_METRICS:
                continue
            cells.append(f"{v:+.2f}%" if k.endswith("_pct") else f"{v:+.2f}" if k == "delta_points" else f"{v:.4f}")
        cells.append(fmt_bytes(r["weight_bytes"]))
        cells += [_artifact_cell(r["artifact_bytes"], checkpoint_bytes)] if exported else []
        cells += [f"{r['eval_seconds']:.2f}", f"{r['time_ratio']:.2f}"]
        out.append(cells)
    return out


def _comparison_headers(
    rows: list[dict[str, Any]], base_name: str, checkpoint_bytes: int = 0, higher_is_better: bool = False
) -> list[str]:
    arrow = " ↑" if higher_is_better else " ↓"  # the evaluator's direction: which sign of Δ is a loss
    heads = ["experiment"]
    for k in rows[0]:
        if k in _NOT_METRICS:
            continue
        heads.append(
            f"Δ vs {base_name}"
            if k == "delta_pct"
            else "Δ points"
            if k == "delta_points"
            else ("Δ" if k.startswith("delta_") else k + arrow)
        )
    heads.append("weights")
    if any(r["artifact_bytes"] is not None for r in rows):
        heads.append(f"artifact (fp32: {fmt_bytes(checkpoint_bytes)})")
    return heads + ["eval s", f"× {base_name}"]


def comparison_table(result: RunResult, fmt: str) -> str:
    rows = comparison_rows(result)
    if not rows:
        return "(no experiments)"
    base = _baseline(result)
    name = base.name if base else "baseline"
    ckpt = result.checkpoint_bytes
    return tabulate(
        _display_comparison(rows, name, ckpt),
        headers=_comparison_headers(rows, name, ckpt, bool(base and base.higher_is_better)),
        tablefmt=fmt,
        disable_numparse=True,
    )


def experiment_line(done: list[ExperimentResult], e: ExperimentResult, total: int) -> str:
    """One line for experiment ``e`` (the last of ``done``), printed as the study runs; the table comes at the end.

    Example:
        >>> done = [ExperimentResult("fp32", {"quantizer": None}, "ppl", 2.0, eval_seconds=1.0)]
        >>> done.append(ExperimentResult("q8", {}, "ppl", 2.1, weight_bytes=1024, eval_seconds=0.5))
        >>> experiment_line(done, done[1], 3)
        '[2/3] q8: ppl 2.1000 (+5.00% vs fp32), weights 1.0 KiB, eval 0.50 s'
    """
    floats = [d for d in done if d.settings.get("quantizer") is None]
    base = floats[0] if floats else None
    vs = f" vs {base.name}" if base is not None else ""
    parts = [f"{e.metric} {e.value:.4f} ({_delta(e.value, base.value if base else math.nan):+.2f}%{vs})"]
    parts += [f"{k} {v:.4f}" for k, v in e.metrics.items() if k.startswith(e.metric + "_") or k in e.extra_metrics]
    parts += [f"weights {fmt_bytes(e.weight_bytes)}", f"eval {e.eval_seconds:.2f} s"]
    return f"[{len(done)}/{total}] {e.name}: " + ", ".join(parts)


def _settings_text(e: ExperimentResult) -> str:
    return json.dumps(e.settings, indent=2, sort_keys=False, default=str)


def render_terminal(result: RunResult, out_dir: Path | None = None) -> str:
    """A screenful: conversion check, comparison table, the worst layers, where the files are."""
    parts = [f"compress: {result.schedule.name} on {result.device}"]
    for c in result.conversions:
        parts.append(
            f"converted with {c['policy']}: {len(c['replaced'])} module(s); "
            f"max |Δ output| = {c['max_abs_error']:.3g} (tolerance {c['tolerance']:g})"
        )
    parts += ["", comparison_table(result, "simple")]
    exp = layers_experiment(result)
    if exp is not None:
        parts += [
            "",
            f"worst {min(TERMINAL_WORST_LAYERS, len(exp.layers))} layers of '{exp.name}' by SQNR (all in layers.csv):",
            layer_table(kept_columns(layer_rows(exp), TERMINAL_LAYER_KEYS), "simple", TERMINAL_WORST_LAYERS),
        ]
    if out_dir is not None:
        parts += ["", f"report: {(out_dir / 'report.md').resolve()}"]
    return "\n".join(parts)


def render_markdown(result: RunResult) -> str:
    """report.md: comparison, conversion check, statistics, per-layer table and settings of each experiment."""
    s = result.schedule
    md = [
        f"# compress report: {s.name}",
        "",
        f"Schedule `{s.path.name}`, device `{result.device}`, "
        f"seed {s.data.get('seed', 0)}, {time.strftime('%Y-%m-%d %H:%M:%S')}.",
        "",
        "## Comparison",
        "",
        comparison_table(result, "github"),
        "",
    ]
    md += _renders_md(result)
    md += _conversion_md(result) + _stats_md(result) + _timings_md(result) + _distribution_md(result)
    exp = layers_experiment(result)
    if exp is not None:
        md += [f"## Per-layer table: `{exp.name}` (worst SQNR first; every column in layers.csv)", ""]
        md += [layer_table(kept_columns(layer_rows(exp), MD_LAYER_KEYS), "github"), ""]
    md += _search_md(result)
    md += ["## Settings of each experiment", ""]
    for e in result.experiments:
        md += [f"### {e.name}", "", "```json", _settings_text(e), "```", ""]
        md += [f"- {note}" for note in e.notes] + ([""] if e.notes else [])
    return "\n".join(md)


def _renders_md(result: RunResult) -> list[str]:
    """Links to the render block's generations (same seeds and draws for every model)."""
    if not result.renders:
        return []
    md = ["## Listen", "", "Generations from the same seeds and random numbers (the schedule's `render:` block):", ""]
    for label, files in result.renders.items():
        md.append(f"- `{label}`: " + ", ".join(f"[{f}]({f})" for f in files))
    return md + [""]


def _search_md(result: RunResult) -> list[str]:
    from compress.search import search_md  # the search package owns its tables

    return [line for e in result.experiments if e.search is not None for line in search_md(e.name, e.search)]


def _conversion_md(result: RunResult) -> list[str]:
    if not result.conversions:
        return []
    out = ["## Conversion check", ""]
    for c in result.conversions:
        out.append(
            f"- `{c['policy']}`: max |Δ output| vs the unconverted model = {c['max_abs_error']:.3g} "
            f"(tolerance {c['tolerance']:g})"
        )
        out += [f"  - {r}" for r in c["replaced"]]
    return out + [""]


def _stats_md(result: RunResult) -> list[str]:
    if not result.stats:
        return []
    out = ["## Calibration statistics", ""]
    for info in result.stats.values():
        out.append(f"- `{info['file']}` from `{json.dumps(info['spec'], default=str)}`")
        out += [f"  - edit: {line}" for line in info["edits"]]
    return out + [""]


def _timings_md(result: RunResult) -> list[str]:
    rows = [[k, f"{v:.2f}"] for k, v in result.timings.items()]
    return ["## Stage times", "", tabulate(rows, headers=["stage", "seconds"], tablefmt="github"), ""] if rows else []


def _distribution_md(result: RunResult) -> list[str]:
    d = result.distribution
    if d.get("processes", 1) <= 1:
        return []
    out = ["## Processes", "", f"{d['processes']} processes (backend {d.get('backend')}); where each part ran:", ""]
    rows = [["statistics", f"`{k}`", v] for k, v in d.get("statistics", {}).items()]
    rows += [["experiment", f"`{k}`", v] for k, v in d.get("experiments", {}).items()]
    out += [tabulate(rows, headers=["part", "name", "ran on"], tablefmt="github"), ""]
    times = d.get("timings_by_rank") or []
    if times:
        stages = list(dict.fromkeys(k for t in times for k in t))
        trows = [[f"rank {r}"] + [f"{t.get(k, 0.0):.2f}" for k in stages] for r, t in enumerate(times)]
        out += ["Stage seconds by rank:", "", tabulate(trows, headers=["", *stages], tablefmt="github"), ""]
    return out


def report_json(result: RunResult) -> dict[str, Any]:
    """The machine-readable report (version 1)."""
    return {
        "format": "compress-report",
        "version": 1,
        "schedule": result.schedule.name,
        "device": result.device,
        "checkpoint_bytes": result.checkpoint_bytes,
        "conversions": result.conversions,
        "timings": result.timings,
        "distribution": result.distribution,
        "stats": list(result.stats.values()),
        "renders": result.renders,
        "experiments": [
            {
                "name": e.name,
                "metric": e.metric,
                "value": e.value,
                "metrics": e.metrics,
                "higher_is_better": e.higher_is_better,
                "delta_pct": r["delta_pct"],
                **({"delta_points": r["delta_points"]} if "delta_points" in r else {}),
                "weight_bytes": e.weight_bytes,
                "artifact_bytes": e.artifact_bytes,
                "eval_seconds": e.eval_seconds,
                "settings": e.settings,
                "notes": e.notes,
                "layers": e.layers,
                **({"search": e.search} if e.search is not None else {}),
            }
            for e, r in zip(result.experiments, comparison_rows(result), strict=False)
        ],
    }


def layers_csv(result: RunResult) -> str:
    rows = [{"experiment": e.name, **r} for e in result.experiments for r in layer_rows(e)]
    heads: list[str] = []
    for r in rows:
        heads += [k for k in r if k not in heads]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=heads or ["experiment"])
    writer.writeheader()
    for r in rows:
        writer.writerow({k: fmt_cell(v) if isinstance(v, (list, tuple)) else v for k, v in r.items()})
    return buf.getvalue()


def manifest(result: RunResult) -> dict[str, Any]:
    """Resolved schedule, its hash, seed, library versions and device."""
    import numpy
    import torch

    import compress

    canonical = json.dumps(result.schedule.data, sort_keys=True, default=str)
    return {
        "schedule_path": str(result.schedule.path),
        "schedule": result.schedule.data,
        "schedule_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "seed": result.schedule.data.get("seed", 0),
        "device": result.device,
        "processes": result.distribution.get("processes", 1),
        "distribution": result.distribution,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "compress": compress.__version__,
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
    }


def write_report(result: RunResult, out_dir: Path) -> list[Path]:
    """Write every report file atomically into ``out_dir``; returns the paths written."""
    formats = (result.schedule.data.get("report") or {}).get("formats") or ["md", "json", "csv"]
    written = []
    if "md" in formats:
        written.append(_write(out_dir / "report.md", render_markdown(result)))
    if "json" in formats:
        atomic_write_json(out_dir / "report.json", _jsonable(report_json(result)))
        written.append(out_dir / "report.json")
    if "csv" in formats:
        written.append(_write(out_dir / "layers.csv", layers_csv(result)))
    atomic_write_json(out_dir / "manifest.json", _jsonable(manifest(result)))
    return written + [out_dir / "manifest.json"]


def _write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    return str(obj)
