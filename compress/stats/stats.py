"""The `Stats` object: per-module calibration statistics plus a header saying how they were made.

Layout (the old tool's, plain Python values)::

    {module_name: {"inputs": {0: record, 1: record}, "output": record}}

where a record is ``{min, max, avg_min, avg_max, mean, std, b, shape, total_numel, samples}``
and, when collected with histograms, ``histogram: {lo, hi, counts}`` (``len(counts)`` equal-width
bins over ``[lo, hi]``, which are the record's collected ``min``/``max``; values equal to ``hi``
are in the last bin). Files of the old tool lack ``samples`` (and sometimes ``b``/``total_numel``).

Example:
    >>> s = Stats({"fc": {"output": {"min": -1.0, "max": 2.0}}}, make_header("abc", "python", {}, None))
    >>> s["fc"]["output"]["max"], s.missing(["fc", "act"])
    (2.0, ['act'])
"""

from __future__ import annotations

import copy
import datetime
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from compress.errors import StatsError

__all__ = ["Stats", "FORMAT_VERSION", "RECORD_KEYS", "make_header", "model_fingerprint"]

FORMAT_VERSION = 1
RECORD_KEYS = ("min", "max", "avg_min", "avg_max", "mean", "std", "b", "shape", "total_numel", "samples", "histogram")


def model_fingerprint(model: nn.Module) -> str:
    """A 16-hex-digit hash of the model's parameter names, shapes and dtypes, in model order.

    Values and devices are left out on purpose: the same architecture with other weights (a
    fine-tuned checkpoint) keeps its fingerprint, and moving the model to a GPU does not change
    it; converting an ``nn.LSTM`` to a modular one (new parameter names) or casting to float16 does.

    Example:
        >>> model_fingerprint(nn.Linear(2, 3)) == model_fingerprint(nn.Linear(2, 3))
        True
        >>> model_fingerprint(nn.Linear(2, 3)) == model_fingerprint(nn.Linear(3, 2))
        False
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}\n".encode())
    return h.hexdigest()[:16]


def make_header(
    fingerprint: str | None, source: str, args: Mapping[str, Any], seed: int | None, *, date: str | None = None
) -> dict[str, Any]:
    """A `Stats` header: format version, model fingerprint and how the statistics were made.

    Example:
        >>> make_header("ab12", "collect", {"batches": 4}, 0, date="2024-01-01T00:00:00+00:00")["source"]
        'collect'
    """
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {
        "version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "source": source,
        "args": dict(args),
        "seed": seed,
        "date": date or now,
    }


class Stats(Mapping[str, dict]):
    """Immutable mapping ``module name -> {"inputs": {i: record}, "output": record}``.

    Items are returned as copies, so a consumer that edits what it reads (e.g. clipping ranges)
    cannot change statistics shared with other experiments; use `apply_edits` or `replace`.

    Args:
        entries: the per-module statistics (copied).
        header: ``version``, ``fingerprint`` (None for old-tool files), ``source``, ``args``,
            ``seed``, ``date`` and optionally ``edits`` (the rules applied so far).
        never_ran: observed modules that never ran during calibration (they have no entry).
        path: the file these statistics were loaded from, for messages.

    Example:
        >>> s = Stats({}, never_ran=["decoder"])
        >>> s.never_ran, s.missing(["decoder"])
        (['decoder'], ['decoder'])
    """

    def __init__(
        self,
        entries: Mapping[str, Mapping[str, Any]],
        header: Mapping[str, Any] | None = None,
        never_ran: Iterable[str] = (),
        path: str | Path | None = None,
    ) -> None:
        self._entries: dict[str, dict[str, Any]] = copy.deepcopy(dict(entries))
        self._header = copy.deepcopy(dict(header)) if header else make_header(None, "unknown", {}, None)
        self._never_ran = [n for n in never_ran if n not in self._entries]
        self.path = Path(path) if path is not None else None

    def __getitem__(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._entries[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        src = self._header.get("source")
        return f"Stats({len(self)} modules, source={src!r}, never_ran={len(self._never_ran)})"

    @property
    def header(self) -> dict[str, Any]:
        """A copy of the header (version, fingerprint, source, args, seed, date[, edits])."""
        return copy.deepcopy(self._header)

    @property
    def never_ran(self) -> list[str]:
        """Observed modules that never ran during calibration, in model order."""
        return list(self._never_ran)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A deep copy of the entries as plain dicts (the old tool's layout).

        Example:
            >>> Stats({"a": {"output": {"min": 0.0, "max": 1.0}}}).to_dict()
            {'a': {'output': {'min': 0.0, 'max': 1.0}}}
        """
        return copy.deepcopy(self._entries)

    def replace(
        self,
        entries: Mapping[str, Mapping[str, Any]] | None = None,
        header: Mapping[str, Any] | None = None,
        never_ran: Iterable[str] | None = None,
    ) -> Stats:
        """A new `Stats` with the given parts replaced (this one is not changed).

        Example:
            >>> Stats({}).replace(header={"source": "file"}).header["source"]
            'file'
        """
        return Stats(
            self._entries if entries is None else entries,
            self._header if header is None else header,
            self._never_ran if never_ran is None else never_ran,
            self.path,
        )

    def missing(self, names: Iterable[str]) -> list[str]:
        """The ``names`` that have no statistics (never ran, or not observed), in the given order.

        Example:
            >>> Stats({"a": {}}).missing(["a", "b"])
            ['b']
        """
        return [n for n in names if n not in self._entries]

    def check_model(self, model: nn.Module, force: bool = False) -> None:
        """Raise StatsError when these statistics were made for another model, unless ``force``.

        With a fingerprint (files written by compress) the fingerprints must agree; without one
        (old-tool files) every module named in the statistics must exist in ``model``.

        Example:
            >>> m = nn.Linear(2, 2)
            >>> Stats({}, make_header(model_fingerprint(m), "python", {}, None)).check_model(m)
        """
        if force:
            return
        expected = self._header.get("fingerprint")
        if expected is None:
            self._check_names(model)
        elif expected != model_fingerprint(model):
            raise StatsError(
                f"Statistics {self._where()}were collected for another model (fingerprint {expected}, "
                f"this model has {model_fingerprint(model)}: parameter names, shapes or dtypes differ). "
                "Collect statistics for this model, or set 'force: true' to use them anyway."
            )

    def _check_names(self, model: nn.Module) -> None:
        known = {name for name, _ in model.named_modules()}
        unknown = [n for n in self._entries if n not in known]
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise StatsError(
                f"Statistics {self._where()}name {len(unknown)} module(s) this model does not have: {shown}. "
                "The file has no fingerprint (old format), so names are all that can be checked. Collect "
                "statistics for this model, or set 'force: true' to use them anyway."
            )

    def _where(self) -> str:
        return f"in '{self.path}' " if self.path else ""

    def save(self, path: str | Path) -> Path:
        """Write these statistics as a versioned YAML file, atomically; returns the path.

        Example:
            >>> import tempfile
            >>> p = Stats({"a": {"output": {"min": 0.0, "max": 1.0}}}).save(tempfile.mkdtemp() + "/s.yaml")
            >>> p.read_text().splitlines()[0]
            'compress_stats:'
        """
        from compress.stats.statsfile import save_stats

        return save_stats(self, path)
