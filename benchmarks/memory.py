"""Calibration memory as the calibration data grows 1x, 4x, 16x: a summary of ``stats_memory.py``'s measurement.

The measurement itself (fresh subprocess per size, peak RSS before and after collection) is
``benchmarks/stats_memory.py``'s; this module calls it and states whether the peak stayed flat.

Example:
    >>> # rows = measure_memory(base=4, seq=20, batch=8)
    >>> # print(memory_section(rows, base=4, seq=20, batch=8))
"""

from __future__ import annotations

import argparse
from typing import Any

import stats_memory
from benchutil import md_table

# Growth of the peak after the 1x point that still counts as flat: allocator noise measured by
# stats_memory.py on repeated runs of one size reaches a few MiB (see its section in RESULTS.md).
FLAT_MIB = 8.0
MODEL = {"model": "modular", "vocab": 1000, "emb": 64, "hidden": 128}


def measure_memory(base: int, seq: int, batch: int) -> list[dict[str, Any]]:
    """``stats_memory.run_sizes`` on its default model (modular LSTM 64 -> 128 x2, vocab 1000)."""
    return stats_memory.run_sizes(argparse.Namespace(base=base, seq=seq, batch=batch, **MODEL))


def is_flat(rows: list[dict[str, Any]]) -> bool:
    """True when no size's peak grew by more than ``FLAT_MIB`` after the 1x point.

    Example:
        >>> is_flat([{"growth_after_1x_mib": 0.2}, {"growth_after_1x_mib": 1.0}])
        True
    """
    return all(r["growth_after_1x_mib"] <= FLAT_MIB for r in rows)


def memory_section(rows: list[dict[str, Any]], base: int, seq: int, batch: int) -> str:
    """The '## Calibration memory vs data size' section body."""
    table = md_table(
        [
            "data",
            "batches",
            "peak RSS (MiB)",
            "added by collection (MiB)",
            "peak growth after 1x (MiB)",
            "activations if kept (MiB)",
            "collection s",
        ],
        [
            [
                f"{r['factor']}x",
                r["batches"],
                f"{r['rss_peak_mib']:.1f}",
                f"{r['added_mib']:.1f}",
                f"{r['growth_after_1x_mib']:.1f}",
                f"{r['if_kept_mib']:.1f}",
                f"{r['seconds']:.2f}",
            ]
            for r in rows
        ],
        "lrrrrrr",
    )
    last = rows[-1]
    verdict = (
        f"**Flat**: {last['factor']}x the data grows the peak by {last['growth_after_1x_mib']:.1f} MiB after the 1x "
        f"point (threshold {FLAT_MIB:g} MiB), while keeping the observed activations would take "
        f"{last['if_kept_mib']:.0f} MiB."
        if is_flat(rows)
        else f"**Not flat**: the peak grew by up to {max(r['growth_after_1x_mib'] for r in rows):.1f} MiB after the "
        f"1x point (threshold {FLAT_MIB:g} MiB)."
    )
    return (
        "`benchmarks/stats_memory.py` (one fresh subprocess per size, `compress.stats.collect_stats`, both passes) "
        f"on a modular LSTM {MODEL['emb']} -> {MODEL['hidden']} x2, vocab {MODEL['vocab']}, {base} batch(es) of "
        f"[{seq}, {batch}] tokens at 1x. See the *Calibration memory* section for the word-LM-sized run and how "
        f"the columns are measured.\n\n{table}\n\n{verdict}"
    )
