"""Encoded event corpora: parallel conversion, an .npz cache, file-level splits.

A corpus is every file's event array plus its compressed controls, concatenated with
offsets. Converting scores or MIDI files is slow, so a corpus is built once (2 worker
processes) and cached in :func:`compress.utils.cache_dir` under a key made from the
file list and :data:`~compress.data.events.ENCODING_VERSION`; the cache is written atomically.

Splits are by file: files are ranked by the SHA-1 of their name, the first 10% go to
``validation``, the next 10% to ``test``, the rest to ``train`` (each split in file-name
order). The split depends only on the set of names (not on their order or on any seed);
adding files can move a file across the 10% boundaries.

Example:
    >>> split_names([f"f{i}.mid" for i in range(10)])["validation"]
    ['f9.mid']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from compress.data.events import ENCODING_VERSION, Note, compute_controls, notes_to_events
from compress.errors import DataError
from compress.fileio import atomic_write_with
from compress.utils import cache_dir

__all__ = ["SPLITS", "Encoded", "EventCorpus", "encode_notes", "build_corpus", "split_names", "corpus_key"]

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test", "all")
HELD_OUT_FRACTION = 0.1  # validation and test each; the rest is train
CONVERT_WORKERS = 2

Encoded = tuple[np.ndarray, np.ndarray, np.ndarray]  # events uint8 [N], density uint8 [N], hist uint8 [N, 12]


def encode_notes(notes: Sequence[Note]) -> Encoded:
    """Events and compressed controls of one piece, shifted so its first note starts at 0.

    Example:
        >>> events, density, hist = encode_notes([Note(3.0, 3.5, 60, 64)])
        >>> int(events[0]), hist.shape
        (192, (5, 12))
    """
    origin = min((n.start for n in notes), default=0.0)
    events = notes_to_events([n._replace(start=n.start - origin, end=n.end - origin) for n in notes])
    density, hist = compute_controls(events)
    return events, density, hist


@dataclass(frozen=True)
class EventCorpus:
    """Encoded files: ``names[i]`` owns ``events[offsets[i]:offsets[i + 1]]`` (and the controls)."""

    names: tuple[str, ...]
    offsets: np.ndarray
    events: np.ndarray
    density: np.ndarray
    hist: np.ndarray

    def file(self, i: int) -> Encoded:
        """Events, density and histogram of file ``i``."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.events[a:b], self.density[a:b], self.hist[a:b]

    def split(self, name: str) -> list[int]:
        """Indices of the files in split ``name`` (train/validation/test/all), in file order."""
        if name not in SPLITS:
            raise DataError(f"Unknown corpus split '{name}'; choose one of {', '.join(SPLITS)}.")
        if name == "all":
            return list(range(len(self.names)))
        chosen = set(split_names(self.names)[name])
        return [i for i, n in enumerate(self.names) if n in chosen]

    def num_events(self, indices: Sequence[int]) -> int:
        """Total events of the given files."""
        return int(sum(self.offsets[i + 1] - self.offsets[i] for i in indices))

    @classmethod
    def from_files(cls, names: Sequence[str], encoded: Sequence[Encoded]) -> EventCorpus:
        """Concatenate per-file arrays (in the given order)."""
        lengths = [len(e[0]) for e in encoded]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        cat = [np.concatenate([e[k] for e in encoded]) if encoded else np.zeros(0, np.uint8) for k in range(3)]
        hist = cat[2].reshape(-1, 12)
        return cls(tuple(names), offsets, cat[0].astype(np.uint8), cat[1].astype(np.uint8), hist.astype(np.uint8))

    def save(self, path: Path) -> None:
        """Write the corpus as an .npz file, atomically."""
        arrays = {
            "names": np.asarray(self.names, dtype=str),
            "offsets": self.offsets,
            "events": self.events,
            "density": self.density,
            "hist": self.hist,
        }
        atomic_write_with(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: Path) -> EventCorpus:
        """Read a corpus written by :meth:`save` (no pickles)."""
        with np.load(path, allow_pickle=False) as z:
            return cls(tuple(str(n) for n in z["names"]), z["offsets"], z["events"], z["density"], z["hist"])


def split_names(names: Sequence[str]) -> dict[str, list[str]]:
    """Assign file names to train/validation/test by their hash rank (see the module docstring).

    With fewer than 3 files everything is train.

    Example:
        >>> {k: len(v) for k, v in split_names([f"{i}.mid" for i in range(408)]).items()}
        {'train': 326, 'validation': 41, 'test': 41}
    """
    ranked = sorted(names, key=lambda n: hashlib.sha1(n.encode("utf-8")).hexdigest())
    held = max(1, round(len(names) * HELD_OUT_FRACTION)) if len(names) >= 3 else 0
    validation, test = set(ranked[:held]), set(ranked[held : 2 * held])
    return {
        "train": [n for n in names if n not in validation and n not in test],
        "validation": [n for n in names if n in validation],
        "test": [n for n in names if n in test],
    }


def corpus_key(parts: object) -> str:
    """A short stable hash of JSON-serialisable ``parts`` plus the encoding version.

    Example:
        >>> len(corpus_key(["a.mid"]))
        16
    """
    text = json.dumps({"encoding": ENCODING_VERSION, "parts": parts}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _convert_all(paths: Sequence[Path], convert: Callable[[Path], Encoded], workers: int) -> list[Encoded]:
    # The first conversion takes minutes on a busy machine: a bar on a terminal (disable=None: off when piped).
    bar = tqdm(total=len(paths), desc="converting (once, then cached)", unit="file", disable=None, leave=False)
    try:
        if workers <= 1 or len(paths) < 4:
            return [_ticked(convert(p), bar) for p in paths]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return [_ticked(e, bar) for e in pool.map(convert, paths, chunksize=4)]
    finally:
        bar.close()


def _ticked(item: Encoded, bar: tqdm) -> Encoded:
    bar.update()
    return item


def build_corpus(
    prefix: str,
    paths: Sequence[Path],
    names: Sequence[str],
    convert: Callable[[Path], Encoded],
    key: str,
    *,
    workers: int = CONVERT_WORKERS,
) -> EventCorpus:
    """Load the cached corpus for ``key`` or convert ``paths`` (in parallel) and cache it.

    Args:
        prefix: cache file name prefix (``bach_chorales``, ``midi_folder``).
        paths: the source files.
        names: a stable name per file (used for splits and stored in the cache).
        convert: a picklable top-level function path -> :data:`Encoded`.
        key: the cache key (see :func:`corpus_key`).
        workers: conversion processes.

    Returns:
        The corpus, files in the order given.

    Example:
        >>> build_corpus("x", [], [], encode_notes, "k").names  # doctest: +SKIP
        ()
    """
    path = cache_dir() / f"{prefix}-{key}.npz"
    if path.is_file():
        try:
            corpus = EventCorpus.load(path)
            if list(corpus.names) == list(names):
                return corpus
        except (OSError, ValueError, KeyError) as exc:  # a damaged cache is rebuilt, not fatal
            log.warning("Rebuilding unreadable corpus cache %s (%s)", path, exc)
    # Said on stderr even when piped: a first run is otherwise minutes of silence.
    print(f"{prefix}: converting {len(paths)} files once; later runs read the cache {path}", file=sys.stderr)
    corpus = EventCorpus.from_files(names, _convert_all(paths, convert, workers))
    corpus.save(path)
    return corpus


def file_fingerprint(path: Path) -> list[object]:
    """Name, size and modification time of a file: changes when the file does."""
    stat = os.stat(path)
    return [str(path), stat.st_size, stat.st_mtime_ns]
