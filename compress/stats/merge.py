"""Merging two `Stats` as if their calibration data had been concatenated.

What is exact (up to float64 rounding): ``min``, ``max``, ``total_numel``, ``samples``,
``avg_min``/``avg_max`` (weighted by sample counts), ``mean`` (weighted by element counts),
``std`` (Chan's parallel variance formula), and histograms over the same ``[lo, hi]`` with
the same number of bins (counts add).

What is not: ``b = mean |x - m|`` around the *merged* mean ``m`` needs the data itself. With
part means ``m_i``, counts ``n_i`` and scales ``b_i`` the merge estimates part ``i``'s share as
``n_i * max(b_i, |m_i - m|)``, which lies between the true share's bounds
``n_i * |m_i - m|`` and ``n_i * (b_i + |m_i - m|)``. Hence

* ``b`` is exact when the parts have the same mean, and
* always ``|b_merged - b_true| <= sum_i n_i |m_i - m| / n``.

Histograms over different ranges are re-binned onto the union range by bin centre (counts
preserved, bin edges approximate); a histogram present in only one part is dropped.

Example:
    >>> from compress.stats.stats import Stats
    >>> rec = lambda lo, hi: {"min": lo, "max": hi, "avg_min": lo, "avg_max": hi, "mean": (lo + hi) / 2,
    ...                       "std": (hi - lo) / 2, "b": (hi - lo) / 2, "shape": "(1, 2)", "total_numel": 2,
    ...                       "samples": 1}
    >>> m = merge(Stats({"fc": {"output": rec(0.0, 2.0)}}), Stats({"fc": {"output": rec(2.0, 4.0)}}))
    >>> r = m["fc"]["output"]
    >>> r["min"], r["max"], r["avg_min"], r["mean"], r["total_numel"]
    (0.0, 4.0, 1.0, 2.0, 4)
"""

from __future__ import annotations

import math
from typing import Any

from compress.errors import StatsError
from compress.stats.stats import Stats, make_header

__all__ = ["merge", "merge_records", "merge_first_pass", "merge_second_pass"]


def merge(a: Stats, b: Stats) -> Stats:
    """The statistics of ``a``'s data followed by ``b``'s (see the module docstring for exactness).

    Raises:
        StatsError: the two were made for different models, or a record lacks the counts
            (``samples``, ``total_numel``) that merging needs (files of the old tool).

    Example:
        >>> from compress.stats.stats import Stats
        >>> merge(Stats({}, never_ran=["x"]), Stats({}, never_ran=["x", "y"])).never_ran
        ['x', 'y']
    """
    fa, fb = a.header.get("fingerprint"), b.header.get("fingerprint")
    if fa is not None and fb is not None and fa != fb:
        raise StatsError(f"Cannot merge statistics of different models (fingerprints {fa} and {fb}).")
    entries = {name: _merge_entry(a.get(name), b.get(name), name) for name in _union(list(a), list(b))}
    never = [n for n in _union(a.never_ran, b.never_ran) if n not in entries]
    parts = [{k: s.header.get(k) for k in ("source", "args", "seed", "date")} for s in (a, b)]
    return Stats(entries, make_header(fa or fb, "merge", {"parts": parts}, None), never_ran=never)


def _union(first: list[str], second: list[str]) -> list[str]:
    return list(dict.fromkeys(first + second))


def _merge_entry(ea: dict[str, Any] | None, eb: dict[str, Any] | None, name: str) -> dict[str, Any]:
    if ea is None or eb is None:
        return dict(ea or eb or {})
    out: dict[str, Any] = {}
    ia, ib = ea.get("inputs", {}), eb.get("inputs", {})
    if ia or ib:
        out["inputs"] = {i: _merge_optional(ia.get(i), ib.get(i), f"{name} input {i}") for i in sorted({*ia, *ib})}
    if "output" in ea or "output" in eb:
        out["output"] = _merge_optional(ea.get("output"), eb.get("output"), f"{name} output")
    return out


def _merge_optional(ra: dict[str, Any] | None, rb: dict[str, Any] | None, where: str) -> dict[str, Any]:
    if ra is None or rb is None:
        return dict(ra or rb or {})
    return merge_records(ra, rb, where)


def merge_records(ra: dict[str, Any], rb: dict[str, Any], where: str = "record") -> dict[str, Any]:
    """Merge two statistics records of one tensor (see the module docstring).

    Example:
        >>> r = {"min": 0.0, "max": 1.0, "avg_min": 0.0, "avg_max": 1.0, "mean": 0.5, "std": 0.5,
        ...      "total_numel": 2, "samples": 1, "shape": "(1, 2)"}
        >>> merge_records(r, r)["std"]
        0.5
    """
    (na, sa), (nb, sb) = _counts(ra, where), _counts(rb, where)
    n, s = na + nb, sa + sb
    mean = (na * ra["mean"] + nb * rb["mean"]) / n
    out = {
        "min": min(ra["min"], rb["min"]),
        "max": max(ra["max"], rb["max"]),
        "avg_min": (sa * ra["avg_min"] + sb * rb["avg_min"]) / s,
        "avg_max": (sa * ra["avg_max"] + sb * rb["avg_max"]) / s,
        "mean": mean,
        "std": _merged_std(ra, rb, na, nb),
        "b": _merged_b(ra, rb, na, nb, mean),
        "shape": ra.get("shape", rb.get("shape", "")),
        "total_numel": n,
        "samples": s,
    }
    out = {k: v for k, v in out.items() if v is not None}
    if "histogram" in ra and "histogram" in rb:
        out["histogram"] = merge_histograms(ra["histogram"], rb["histogram"])
    return out


def _counts(rec: dict[str, Any], where: str) -> tuple[int, int]:
    missing = [k for k in ("mean", "total_numel", "samples", "avg_min", "avg_max") if k not in rec]
    if missing:
        raise StatsError(
            f"Cannot merge statistics of {where}: the record lacks {', '.join(missing)} (files written by "
            "the old tool have no sample counts). Collect the statistics again with compress to merge them."
        )
    return rec["total_numel"], rec["samples"]


def _merged_std(ra: dict[str, Any], rb: dict[str, Any], na: int, nb: int) -> float | None:
    if "std" not in ra or "std" not in rb:
        return None
    delta = rb["mean"] - ra["mean"]
    m2 = ra["std"] ** 2 * na + rb["std"] ** 2 * nb + delta * delta * na * nb / (na + nb)
    return math.sqrt(m2 / (na + nb))


def _merged_b(ra: dict[str, Any], rb: dict[str, Any], na: int, nb: int, mean: float) -> float | None:
    if "b" not in ra or "b" not in rb:
        return None
    # Each part's sum |x - m| lies in [n_i |m_i - m|, n_i (b_i + |m_i - m|)]; max(...) stays inside.
    share_a = na * max(ra["b"], abs(ra["mean"] - mean))
    share_b = nb * max(rb["b"], abs(rb["mean"] - mean))
    return (share_a + share_b) / (na + nb)


def merge_histograms(ha: dict[str, Any], hb: dict[str, Any]) -> dict[str, Any]:
    """Sum two histograms; over different ranges, re-bin both onto the union range by bin centre.

    Example:
        >>> merge_histograms({"lo": 0.0, "hi": 2.0, "counts": [1, 2]}, {"lo": 0.0, "hi": 2.0, "counts": [3, 4]})
        {'lo': 0.0, 'hi': 2.0, 'counts': [4, 6]}
    """
    if (ha["lo"], ha["hi"], len(ha["counts"])) == (hb["lo"], hb["hi"], len(hb["counts"])):
        counts = [x + y for x, y in zip(ha["counts"], hb["counts"], strict=True)]
        return {"lo": ha["lo"], "hi": ha["hi"], "counts": counts}
    lo, hi = min(ha["lo"], hb["lo"]), max(ha["hi"], hb["hi"])
    bins = max(len(ha["counts"]), len(hb["counts"]))
    counts = [0] * bins
    for h in (ha, hb):
        width = (h["hi"] - h["lo"]) / len(h["counts"])
        for j, c in enumerate(h["counts"]):
            centre = h["lo"] + (j + 0.5) * width
            k = int((centre - lo) / (hi - lo) * bins) if hi > lo else 0
            counts[min(max(k, 0), bins - 1)] += c
    return {"lo": lo, "hi": hi, "counts": counts}


def merge_first_pass(parts: list[dict[Any, dict[str, Any] | None]]) -> dict[Any, dict[str, Any] | None]:
    """Merge the pass-1 records of several shards of one collection, slot by slot, in shard order.

    Each part maps a slot key to its record (``TensorAccumulator.first_state``), or None where that
    shard saw no data. min/max are exact; the sums follow `merge_records`.

    Example:
        >>> r = {"min": 0.0, "max": 1.0, "avg_min": 0.0, "avg_max": 1.0, "mean": 0.5, "std": 0.5,
        ...      "total_numel": 2, "samples": 1, "shape": "(1, 2)"}
        >>> merge_first_pass([{"x": r}, {"x": None}, {"x": dict(r, max=3.0)}])["x"]["max"]
        3.0
    """
    out: dict[Any, dict[str, Any] | None] = {}
    for part in parts:
        for key, rec in part.items():
            have = out.get(key)
            out[key] = rec if have is None else (have if rec is None else merge_records(have, rec, str(key)))
    return out


def merge_second_pass(parts: list[dict[Any, dict[str, Any]]]) -> dict[Any, dict[str, Any]]:
    """Add the pass-2 sums (value count, sum, sum |x - mean|, histogram counts) of several shards.

    Example:
        >>> s = {"numel": 2, "sum": 1.0, "absdev": 0.5, "hist": [1, 1]}
        >>> merge_second_pass([{"x": s}, {"x": s}])["x"]
        {'numel': 4, 'sum': 2.0, 'absdev': 1.0, 'hist': [2, 2]}
    """
    out: dict[Any, dict[str, Any]] = {}
    for part in parts:
        for key, st in part.items():
            have = out.get(key)
            if have is None:
                out[key] = dict(st)
                continue
            hist = have["hist"]
            if hist is not None and st["hist"] is not None:
                hist = [a + b for a, b in zip(hist, st["hist"], strict=True)]
            out[key] = {
                "numel": have["numel"] + st["numel"],
                "sum": have["sum"] + st["sum"],
                "absdev": have["absdev"] + st["absdev"],
                "hist": hist if hist is not None else st["hist"],
            }
    return out
