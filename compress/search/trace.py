"""Never lose a result: the trial trace (``<experiment>.search.csv``) and the best configuration (``.best.yaml``).

Both files are rewritten atomically (compress/fileio.py) inside the report folder: the trace after
every trial, the best configuration after every improvement. A search that is killed, or runs out
of budget, leaves both, and ``best.yaml``'s header says whether the target was met and on which data.

``<experiment>.best.yaml`` holds a one-item list: the experiment entry (``name``, ``args``,
``overrides``, and the experiment's other keys but ``search``), ready to paste under a schedule's
``experiments:``; it then reproduces the search's number exactly.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> t = Trace(d, "s")
    >>> t.append({"trial": 1, "phase": "base", "value": 2.0})
    >>> (d / "s.search.csv").read_text().splitlines()[1].startswith("1,base")
    True
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import yaml

from compress.fileio import atomic_write_text, output_file

__all__ = ["Trace", "TRACE_COLUMNS", "write_best", "best_header"]

TRACE_COLUMNS = (
    "trial",
    "phase",
    "group",
    "change",
    "data",
    "value",
    "delta",
    "delta_pct",
    "target_met",
    "weight_bytes",
    "integer_ops",
    "seconds",
    "note",
)


class Trace:
    """The rows of one search, rewritten whole and atomically after each ``append``."""

    def __init__(self, out_dir: Path, experiment: str) -> None:
        self.path = output_file(out_dir, f"{experiment}.search.csv", "a search trace")
        self.rows: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any]) -> None:
        """Add one trial's row and rewrite the file (a crash leaves the previous complete file)."""
        self.rows.append(dict(row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=TRACE_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: _cell(r.get(k)) for k in TRACE_COLUMNS})
        atomic_write_text(self.path, buf.getvalue())


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return "" if v is None else v


def best_header(experiment: str, target: str, met: bool, where: str, value: float, trial: int) -> str:
    """The comment block on top of best.yaml (what it is and how good it is).

    Example:
        >>> best_header("s", "loss <= 0.25%", True, "first 4 batches", 2.0, 7).splitlines()[1]
        '# target loss <= 0.25%: met on first 4 batches (value 2.0, trial 7).'
    """
    verdict = "met" if met else "NOT met"
    return (
        f"# Best configuration so far of search experiment '{experiment}' (compress).\n"
        f"# target {target}: {verdict} on {where} (value {value!r}, trial {trial}).\n"
        "# Paste this entry under a schedule's experiments: (without search:) to reproduce it exactly.\n"
    )


def write_best(out_dir: Path, experiment: str, entry: dict[str, Any], header: str) -> Path:
    """Rewrite ``<experiment>.best.yaml`` atomically with ``entry`` as a one-item experiments list."""
    path = output_file(out_dir, f"{experiment}.best.yaml", "the best configuration of a search")
    body = yaml.safe_dump([entry], sort_keys=False, default_flow_style=None, width=100)
    atomic_write_text(path, header + body)
    return path
