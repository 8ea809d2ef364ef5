"""Helpers shared by the comparison benchmarks (``benchmarks/run.py``): timing, tables, machine, RESULTS.md.

Timing is wall clock (what a user waits for). On a shared machine every figure is a median over
repetitions that are interleaved (one of each variant per round), and ratios are taken inside a
round, so a neighbour that slows one round slows every variant of it alike.

Example:
    >>> md_table(["a", "b"], [[1, "x"]])
    '| a | b |\\n|---|---|\\n| 1 | x |'
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def median(values: Sequence[float]) -> float:
    """The median (the middle run, or the mean of the two middle ones).

    Example:
        >>> median([3.0, 1.0, 2.0])
        2.0
    """
    return float(statistics.median(values))


def seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call of ``fn`` and its result.

    Example:
        >>> t, r = seconds(lambda: 3)
        >>> r, t >= 0
        (3, True)
    """
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved(fns: Mapping[str, Callable[[], Any]], rounds: int) -> list[dict[str, float]]:
    """Time every function once per round, round after round; one ``{name: seconds}`` dict per round.

    Example:
        >>> rows = interleaved({"a": lambda: None, "b": lambda: None}, 2)
        >>> len(rows), sorted(rows[0])
        (2, ['a', 'b'])
    """
    out = []
    for _ in range(rounds):
        out.append({name: seconds(fn)[0] for name, fn in fns.items()})
    return out


def median_ratio(rounds: list[dict[str, float]], num: str, den: str) -> float:
    """Median over rounds of ``time[num] / time[den]``, each ratio taken inside one round.

    Example:
        >>> median_ratio([{"a": 2.0, "b": 1.0}, {"a": 6.0, "b": 2.0}, {"a": 4.0, "b": 2.0}], "a", "b")
        2.0
    """
    return median([r[num] / r[den] for r in rounds])


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one letter per column (``l`` or ``r``), default all left.

    Example:
        >>> md_table(["n"], [[1]], align="r").splitlines()[1]
        '|---:|'
    """
    marks = {"l": "---", "r": "---:"}
    rule = [marks[a] for a in (align or "l" * len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_bytes(n: float) -> str:
    """Bytes in KiB/MiB with 2 decimals (``1536`` -> ``1.50 KiB``).

    Example:
        >>> fmt_bytes(3 * 2**20)
        '3.00 MiB'
    """
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def fmt_pct(value: float) -> str:
    """A signed percentage with 2 decimals.

    Example:
        >>> fmt_pct(1.234), fmt_pct(-0.5)
        ('+1.23%', '-0.50%')
    """
    return f"{value:+.2f}%"


def pct_delta(value: float, reference: float) -> float:
    """``100 * (value / reference - 1)``.

    Example:
        >>> pct_delta(110.0, 100.0)
        10.000000000000009
    """
    return 100.0 * (value / reference - 1.0)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine(threads: int) -> str:
    """One line: CPU, cores, OS, Python, torch, threads and the OpenMP wait policy."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    return (
        f"{cpu_model()}, {cores} cores (shared with other jobs), {platform.system()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
        f"torch.set_num_threads({threads}), OMP_WAIT_POLICY={policy}"
    )


def today() -> str:
    """Today's date, ISO format."""
    return datetime.date.today().isoformat()


# ----------------------------------------------------------------------------- RESULTS.md


def replace_sections(text: str, sections: Mapping[str, str]) -> str:
    """Replace each ``## title`` section of ``text`` by its new body (appended when absent); others stay.

    ``sections`` maps a full heading line (``"## Scaling"``) to the section's text after the heading.

    Example:
        >>> replace_sections("# R\\n\\n## A\\nold\\n\\n## B\\nkeep\\n", {"## A": "new"})
        '# R\\n\\n## A\\n\\nnew\\n\\n## B\\nkeep\\n'
    """
    for heading, body in sections.items():
        block = f"{heading}\n\n{body.strip()}\n"
        start = _find_heading(text, heading)
        if start < 0:
            text = text.rstrip("\n") + "\n\n" + block
            continue
        end = text.find("\n## ", start + len(heading))
        rest = "" if end < 0 else "\n" + text[end + 1 :]
        text = text[:start] + block + rest
    return text.rstrip("\n") + "\n"


def _find_heading(text: str, heading: str) -> int:
    # A heading counts only at the start of a line and as the whole line ("## Scaling" must not
    # match "## Scaling of something").
    pos = 0
    while True:
        pos = text.find(heading, pos)
        if pos < 0:
            return -1
        line_end = text.find("\n", pos)
        whole = text[pos : len(text) if line_end < 0 else line_end].rstrip() == heading
        if (pos == 0 or text[pos - 1] == "\n") and whole:
            return pos
        pos += len(heading)


def write_sections(path: Path, sections: Mapping[str, str]) -> None:
    """Read ``path`` (or start a new results file), replace our sections, write it atomically."""
    from compress.fileio import atomic_write_text

    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    atomic_write_text(path, replace_sections(text, sections))


# ----------------------------------------------------------------------------- schedules and studies


def trimmed_schedule(src: Path, dest_dir: Path, keep: Sequence[str]) -> Path:
    """A copy of schedule ``src`` in ``dest_dir`` with only the experiments named in ``keep``.

    Relative paths (the model checkpoint, path-valued component args) are made absolute against
    ``src``'s folder, so the copy runs from anywhere.
    """
    import compress.components  # noqa: F401  (registers the built-ins, whose schemas name path args)
    from compress.registry import DATASETS, MODELS

    data = yaml.safe_load(src.read_text(encoding="utf-8"))
    base = src.resolve().parent
    data["model"]["checkpoint"] = _absolute(base, data["model"].get("checkpoint"))
    for block, registry in (("model", MODELS), ("data", DATASETS)):
        args = data[block].get("args") or {}
        for key, sub in registry.get(data[block]["name"]).schema.get("properties", {}).items():
            if isinstance(sub, dict) and sub.get("format") == "path" and isinstance(args.get(key), str):
                args[key] = _absolute(base, args[key])
    data["experiments"] = [e for e in data["experiments"] if e["name"] in keep]
    report = data.get("report") or {}
    if report.get("layers_for") not in keep:
        report.pop("layers_for", None)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / src.name
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def _absolute(base: Path, value: str | None) -> str | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def study_env(threads: int) -> dict[str, str]:
    """The environment of a study subprocess: ours, with the thread count fixed."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_study(schedule: Path, out_dir: Path, threads: int) -> tuple[float, dict[str, Any]]:
    """Run ``python -m compress SCHEDULE --out OUT --quiet`` as a user would; wall seconds and report.json."""
    cmd = [sys.executable, "-m", "compress", str(schedule), "--out", str(out_dir), "--quiet"]
    wall, proc = seconds(lambda: subprocess.run(cmd, cwd=ROOT, env=study_env(threads), capture_output=True, text=True))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return wall, json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
