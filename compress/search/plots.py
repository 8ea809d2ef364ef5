"""Optional plots of a search (the ``plots`` extra: matplotlib): per-group sensitivity, Δ against weight size.

Without matplotlib nothing is written and nothing fails: the report's tables say the same.
Files go next to report.md, atomically: ``<experiment>.sensitivity.png``, ``<experiment>.tradeoff.png``.

Example:
    >>> import tempfile, pathlib
    >>> names = write_plots(pathlib.Path(tempfile.mkdtemp()), "s", {"sensitivity": [], "trajectory": []})
    >>> names in ([], ["s.tradeoff.png"])
    True
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from compress.fileio import atomic_write_bytes, output_file

__all__ = ["write_plots"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_plots(out_dir: Path, experiment: str, search: dict[str, Any]) -> list[str]:
    """Write the plots that have data; returns their file names ([] without matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return []
    written = []
    rows = [r for r in search["sensitivity"] if math.isfinite(r.get("gain", math.nan))]
    if rows:
        written.append(_save(plt, _sensitivity_figure(plt, rows), out_dir, f"{experiment}.sensitivity.png"))
    written.append(_save(plt, _tradeoff_figure(plt, search["trajectory"]), out_dir, f"{experiment}.tradeoff.png"))
    return written


def _sensitivity_figure(plt: Any, rows: list[dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(rows) + 1.5))
    names = [r["group"] for r in rows][::-1]
    ax.barh(names, [r["only_float_delta_pct"] for r in rows][::-1], label="Δ% with only this group float")
    ax.barh(names, [r["only_quantized_delta_pct"] for r in rows][::-1], alpha=0.6, label="Δ% with only it quantized")
    ax.set_xlabel("Δ vs float (%)")
    ax.legend(loc="lower right", fontsize=7)
    ax.tick_params(axis="y", labelsize=6)
    return fig


def _tradeoff_figure(plt: Any, trajectory: list[dict[str, Any]]) -> Any:
    fig, ax = plt.subplots(figsize=(6, 4))
    for phase in dict.fromkeys(r["phase"] for r in trajectory):
        pts = [r for r in trajectory if r["phase"] == phase and r.get("weight_bytes")]
        ax.scatter([r["weight_bytes"] / 1024 for r in pts], [r["delta_pct"] for r in pts], s=10, label=phase)
    ax.set_xlabel("weight KiB")
    ax.set_ylabel("Δ vs float (%)")
    if trajectory:
        ax.legend(fontsize=7)
    return fig


def _save(plt: Any, fig: Any, out_dir: Path, name: str) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(output_file(out_dir, name, "a plot"), buf.getvalue())
    return name
