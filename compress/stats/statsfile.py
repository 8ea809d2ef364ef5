"""The statistics YAML file: versioned writer and a validating reader that also reads old-tool files.

A file written by compress::

    compress_stats:            # header; absent in files of the old tool
      version: 1
      fingerprint: 3f2a9c0d1e4b5a67
      source: collect
      args: {batches: 8}
      seed: 0
      date: '2024-05-01T12:00:00+00:00'
      never_ran: [decoder_dropout]
    rnn.cells.0.eltwiseadd_gate:
      inputs:
        0: {min: ..., max: ..., avg_min: ..., ...}   # integer keys: input index
      output: {min: ..., ...}

Floats are written with ``repr`` precision, so save -> load gives back exactly the same numbers.
Old-tool files (no header) load with ``fingerprint: None``; their sentinel records for modules
that never ran (min > max, empty shape) become ``never_ran`` instead of numbers.

Example:
    >>> import tempfile
    >>> from compress.stats.stats import Stats
    >>> p = save_stats(Stats({"fc": {"output": {"min": -1.5, "max": 2.0}}}), tempfile.mkdtemp() + "/s.yaml")
    >>> load_stats(p)["fc"]["output"]["min"]
    -1.5
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from compress.errors import CompressError, StatsError
from compress.fileio import atomic_write_text, read_regular_file
from compress.safeyaml import decode_text, load_yaml
from compress.stats.stats import FORMAT_VERSION, RECORD_KEYS, Stats

__all__ = ["save_stats", "load_stats", "HEADER_KEY"]

HEADER_KEY = "compress_stats"
_HEADER_KEYS = {"version", "fingerprint", "source", "args", "seed", "date", "never_ran", "edits"}
_FLOAT_KEYS = ("min", "max", "avg_min", "avg_max", "mean", "std", "b")
_INT_KEYS = ("total_numel", "samples")
# A stats file of a large model with 4096-bin histograms is a few MB; 256 MiB is far beyond any real one.
MAX_STATS_BYTES = 256 << 20
MAX_STATS_ALIAS_NODES = 100_000


class _FlowList(list):
    """A list written on one line (histogram counts), keeping the rest of the file in block style."""


class _Dumper(yaml.SafeDumper):
    """A SafeDumper of our own, so registering the _FlowList representer leaves yaml's global one alone."""


_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def save_stats(stats: Stats, path: str | Path) -> Path:
    """Write ``stats`` to ``path`` (YAML, header first), atomically; returns the path.

    Example:
        >>> import tempfile
        >>> save_stats(Stats({}), tempfile.mkdtemp() + "/empty.yaml").name
        'empty.yaml'
    """
    if HEADER_KEY in stats:
        raise StatsError(f"A module named '{HEADER_KEY}' cannot be saved: the name is reserved for the header.")
    header = stats.header
    header["version"] = FORMAT_VERSION
    header["never_ran"] = stats.never_ran
    doc: dict[str, Any] = {HEADER_KEY: header}
    for name, entry in stats.items():
        doc[name] = {k: _flow_counts(v) if k == "output" else _flow_inputs(v) for k, v in entry.items()}
    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
    atomic_write_text(path, text)
    return Path(path)


def _flow_inputs(inputs: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {i: _flow_counts(rec) for i, rec in inputs.items()}


def _flow_counts(rec: dict[str, Any]) -> dict[str, Any]:
    if "histogram" not in rec:
        return rec
    hist = dict(rec["histogram"], counts=_FlowList(rec["histogram"]["counts"]))
    return dict(rec, histogram=hist)


def load_stats(path: str | Path) -> Stats:
    """Read a statistics file written by compress or by the old tool (``yaml.safe_load`` only).

    Raises:
        StatsError: naming the file (and module, tensor, key) when it is missing or malformed.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "old.yaml"
        >>> _ = p.write_text("fc:\\n  output: {min: -1.0, max: 1.0, avg_min: -0.5, avg_max: 0.5}\\n")
        >>> s = load_stats(p)
        >>> s.header["fingerprint"], s["fc"]["output"]["avg_max"]
        (None, 0.5)
    """
    p = Path(path)
    data = _read_yaml(p)
    where = f"Stats file '{p}'"
    header = _parse_header(data.pop(HEADER_KEY, None), where)
    entries: dict[str, dict[str, Any]] = {}
    never = list(header.pop("never_ran", []))
    legacy = header["version"] == 0
    for name, entry in data.items():
        parsed = _parse_entry(entry, f"{where}, module '{name}'", legacy)
        if parsed is None:
            never.append(str(name))
        else:
            entries[str(name)] = parsed
    return Stats(entries, header, never_ran=never, path=p)


def _read_yaml(p: Path) -> dict[str, Any]:
    try:
        raw = read_regular_file(p, MAX_STATS_BYTES, "stats file")
    except CompressError as e:
        raise StatsError(str(e)) from None
    # Bounded like a schedule (depth, aliases, duplicate keys); a real stats file has no aliases to speak of.
    data, _ = load_yaml(decode_text(raw, str(p), StatsError), str(p), StatsError, alias_budget=MAX_STATS_ALIAS_NODES)
    if not isinstance(data, dict):
        raise StatsError(
            f"Stats file '{p}' must be a mapping of module names to statistics, got {type(data).__name__}."
        )
    return data


def _parse_header(head: Any, where: str) -> dict[str, Any]:
    if head is None:
        return {"version": 0, "fingerprint": None, "source": "legacy", "args": {}, "seed": None, "date": None}
    if not isinstance(head, dict) or set(head) - _HEADER_KEYS:
        raise StatsError(f"{where}: '{HEADER_KEY}' must be a mapping with keys {sorted(_HEADER_KEYS)}, got {head!r}.")
    version = head.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise StatsError(
            f"{where} has format version {version!r}; this compress reads versions 1..{FORMAT_VERSION}. "
            "Upgrade compress or collect the statistics again."
        )
    fp = head.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise StatsError(f"{where}: the header's fingerprint must be a string, got {fp!r}.")
    never = head.get("never_ran") or []
    if not isinstance(never, list) or not all(isinstance(n, str) for n in never):
        raise StatsError(f"{where}: the header's never_ran must be a list of module names, got {never!r}.")
    return dict(head)


def _parse_entry(entry: Any, where: str, legacy: bool) -> dict[str, Any] | None:
    """The validated entry, or None for the old tool's never-ran sentinel records."""
    if not isinstance(entry, dict) or not entry or set(entry) - {"inputs", "output"}:
        raise StatsError(f"{where} must be a mapping with 'inputs' and/or 'output', got {entry!r}.")
    out: dict[str, Any] = {}
    if "inputs" in entry:
        out["inputs"] = _parse_inputs(entry["inputs"], where)
    if "output" in entry:
        out["output"] = _parse_record(entry["output"], f"{where} output")
    records = [(f"input {i}", r) for i, r in out.get("inputs", {}).items()]
    records += [("output", out["output"])] if "output" in out else []
    if legacy and any(_is_sentinel(r) for _, r in records):
        return None
    for label, rec in records:
        _check_order(rec, f"{where} {label}")
    return out


def _check_order(rec: dict[str, Any], where: str) -> None:
    for lo, hi in (("min", "max"), ("avg_min", "avg_max")):
        if lo in rec and hi in rec and rec[lo] > rec[hi]:
            raise StatsError(f"{where}: '{lo}' ({rec[lo]}) is above '{hi}' ({rec[hi]}); fix or re-collect the file.")


def _parse_inputs(inputs: Any, where: str) -> dict[int, dict[str, Any]]:
    if not isinstance(inputs, dict):
        raise StatsError(f"{where}: 'inputs' must map input indices to statistics, got {inputs!r}.")
    parsed: dict[int, dict[str, Any]] = {}
    for key, rec in inputs.items():
        if isinstance(key, bool) or not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            raise StatsError(f"{where}: input index {key!r} must be a non-negative integer.")
        parsed[int(key)] = _parse_record(rec, f"{where} input {int(key)}")
    return dict(sorted(parsed.items()))


def _is_sentinel(rec: dict[str, Any]) -> bool:
    # The old tool wrote min=+1.8e308, max=-1.8e308 and shape '' for modules that never ran.
    return rec["min"] > rec["max"] or rec.get("shape") == ""


def _parse_record(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise StatsError(f"{where} must be a mapping of statistics, got {rec!r}.")
    unknown = sorted(str(k) for k in set(rec) - set(RECORD_KEYS))
    if unknown:
        raise StatsError(f"{where}: unknown key(s) {unknown}; allowed: {list(RECORD_KEYS)}.")
    for key in ("min", "max"):
        if key not in rec:
            raise StatsError(f"{where}: '{key}' is required.")
    return {k: _check_value(k, v, where) for k, v in rec.items()}


def _check_value(key: str, value: Any, where: str) -> Any:
    if key in _FLOAT_KEYS:
        return _number(value, f"{where}: '{key}'")
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise StatsError(f"{where}: '{key}' must be a non-negative integer, got {value!r}.")
        return value
    if key == "shape":
        if not isinstance(value, str):
            raise StatsError(f"{where}: 'shape' must be a string such as '(10, 6000)', got {value!r}.")
        return value
    return _check_histogram(value, where)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise StatsError(f"{what} must be a number, got {value!r}.")
    if math.isinf(value):
        raise StatsError(f"{what} is infinite; statistics must be finite. Collect them again or edit the file.")
    return float(value)


def _check_histogram(hist: Any, where: str) -> dict[str, Any]:
    if not isinstance(hist, dict) or set(hist) != {"lo", "hi", "counts"}:
        raise StatsError(f"{where}: 'histogram' must be a mapping with keys lo, hi, counts, got {hist!r}.")
    counts = hist["counts"]
    if not isinstance(counts, list) or not counts or not all(_is_count(c) for c in counts):
        raise StatsError(f"{where}: histogram 'counts' must be a non-empty list of non-negative integers.")
    lo, hi = _number(hist["lo"], f"{where}: histogram 'lo'"), _number(hist["hi"], f"{where}: histogram 'hi'")
    if lo > hi:
        raise StatsError(f"{where}: histogram 'lo' ({lo}) is above 'hi' ({hi}).")
    return {"lo": lo, "hi": hi, "counts": list(counts)}


def _is_count(c: Any) -> bool:
    return isinstance(c, int) and not isinstance(c, bool) and c >= 0
