"""Fixed windows of an event corpus as a DataSource (calibration and evaluation batches).

A batch is ``(events, controls, z)``:

- ``events``: LongTensor ``[window, B]``, time-major, the targets; the model's input is
  the start event 239 followed by ``events[:-1]``;
- ``controls``: FloatTensor ``[window, B, 24]`` (density one-hot first, then the
  pitch-class histogram) or ``None`` when the dataset has ``controls: false``;
- ``z``: FloatTensor ``[B, init_dim]``, one fixed standard-normal draw per window, so the
  float model and every quantized variant see identical inputs.

Windows are non-overlapping runs of ``window`` consecutive events inside one file,
starting at event 0 of each file; a file's tail shorter than a window is not used.
Evaluation takes every window of its split in file order (the last, smaller batch is
kept, so every window is scored once); ``z`` comes from ``torch.Generator().manual_seed(seed)``.
Calibration takes ``calibration_batches`` batches of windows drawn without replacement
from its split by a ``numpy`` generator seeded with ``seed``, and its ``z`` from seed + 1.

Example:
    >>> from compress.data.corpus import EventCorpus, encode_notes
    >>> from compress.data.events import Note
    >>> piece = encode_notes([Note(0.1 * i, 0.1 * i + 0.5, 60 + i % 12, 64) for i in range(40)])
    >>> data = WindowedEvents(EventCorpus.from_files(["a.mid"], [piece]), "demo", evaluation_split="all",
    ...                       calibration_split="all", window=16, batch_size=2)
    >>> events, controls, z = next(iter(data.batches("evaluation")))
    >>> tuple(events.shape), tuple(controls.shape), tuple(z.shape)
    ((16, 2), (16, 2, 24), (2, 32))
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from compress.data.corpus import SPLITS, EventCorpus
from compress.data.events import expand_controls
from compress.errors import DataError

__all__ = ["Batch", "WindowedEvents", "windowed_schema", "make_batch"]

Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]
CALIBRATION_Z_OFFSET = 1  # calibration z uses seed + 1 so it never repeats the evaluation draws


def windowed_schema(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON schema of the windowing args shared by the event datasets, plus ``extra``."""
    split = {"type": "string", "enum": list(SPLITS)}
    properties: dict[str, Any] = {
        "calibration_split": {**split, "description": "Corpus split for calibration batches. Default: train."},
        "evaluation_split": {**split, "description": "Corpus split that is scored. Default: validation."},
        "window": {"type": "integer", "minimum": 2, "maximum": 100000, "description": "Events per window (200)."},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 4096, "description": "Windows per batch (64)."},
        "calibration_batches": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": 1_000_000,
            "description": "Calibration batches (8); null uses every window of the calibration split.",
        },
        "evaluation_batches": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": 1_000_000,
            "description": "Score only the first N evaluation batches (quick runs). Default: all (null).",
        },
        "seed": {
            "type": "integer",
            "minimum": 0,
            "maximum": 2**63 - 1,
            "description": "Seed of z and calibration sampling (0).",
        },
        "controls": {"type": "boolean", "description": "Feed the 24-dim controls (true) or the no-control flag."},
        "init_dim": {"type": "integer", "minimum": 1, "maximum": 4096, "description": "Width of z per window (32)."},
    }
    properties.update(extra or {})
    return {"type": "object", "properties": properties, "additionalProperties": False}


def make_batch(windows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], z: torch.Tensor, controls: bool) -> Batch:
    """Stack equal-length (events, density, hist) windows into one time-major batch.

    Example:
        >>> w = (np.zeros(3, np.uint8), np.zeros(3, np.uint8), np.zeros((3, 12), np.uint8))
        >>> tuple(make_batch([w, w], torch.zeros(2, 32), False)[0].shape)
        (3, 2)
    """
    events = torch.from_numpy(np.stack([w[0] for w in windows], axis=1).astype(np.int64))
    if not controls:
        return events, None, z
    dense = np.stack([expand_controls(w[1], w[2]) for w in windows], axis=1)
    return events, torch.from_numpy(dense), z


class WindowedEvents:
    """DataSource over non-overlapping event windows of an :class:`EventCorpus` (see module docstring)."""

    def __init__(
        self,
        corpus: EventCorpus,
        name: str,
        *,
        calibration_split: str = "train",
        evaluation_split: str = "validation",
        window: int = 200,
        batch_size: int = 64,
        calibration_batches: int | None = 8,
        evaluation_batches: int | None = None,
        seed: int = 0,
        controls: bool = True,
        init_dim: int = 32,
    ) -> None:
        self.corpus, self.name = corpus, name
        self.window, self.batch_size, self.seed = window, batch_size, seed
        self.controls, self.init_dim = controls, init_dim
        self.split_names = {"calibration": calibration_split, "evaluation": evaluation_split}
        self._windows = {role: self._split_windows(split) for role, split in self.split_names.items()}
        self._windows["calibration"] = self._sample(self._windows["calibration"], calibration_batches)
        if evaluation_batches is not None:
            self._windows["evaluation"] = self._windows["evaluation"][: evaluation_batches * batch_size]

    def _split_windows(self, split: str) -> list[tuple[int, int]]:
        files = self.corpus.split(split)
        found = [
            (i, start)
            for i in files
            for start in range(
                0, int(self.corpus.offsets[i + 1] - self.corpus.offsets[i]) - self.window + 1, self.window
            )
        ]
        if not found:
            raise DataError(
                f"{self.name}: split '{split}' ({len(files)} files, {self.corpus.num_events(files)} events) has no "
                f"window of {self.window} events; use a smaller 'window', more files, or split 'all'."
            )
        return found

    def _sample(self, windows: list[tuple[int, int]], batches: int | None) -> list[tuple[int, int]]:
        if batches is None:
            return windows
        order = np.random.default_rng(self.seed).permutation(len(windows))
        return [windows[k] for k in order[: batches * self.batch_size]]

    def _check_role(self, split: str) -> str:
        if split not in self._windows:
            raise DataError(f"Unknown data split '{split}'; a DataSource serves 'calibration' and 'evaluation'.")
        return split

    def num_batches(self, split: str) -> int:
        """Batches that :meth:`batches` yields for ``split``."""
        return math.ceil(len(self._windows[self._check_role(split)]) / self.batch_size)

    def num_tokens(self, split: str) -> int:
        """Scored events (targets) in ``split``."""
        return len(self._windows[self._check_role(split)]) * self.window

    def batches(self, split: str) -> Iterator[Batch]:
        """Yield the batches of ``split`` ('calibration' or 'evaluation'); identical on every call.

        Example:
            >>> # data.batches("evaluation") -> (events [T, B], controls [T, B, 24] | None, z [B, 32])
        """
        windows = self._windows[self._check_role(split)]
        seed = self.seed + (CALIBRATION_Z_OFFSET if split == "calibration" else 0)
        z_all = torch.randn(len(windows), self.init_dim, generator=torch.Generator().manual_seed(seed))
        for b in range(0, len(windows), self.batch_size):
            chunk = [self._cut(i, start) for i, start in windows[b : b + self.batch_size]]
            yield make_batch(chunk, z_all[b : b + len(chunk)], self.controls)

    def training_batches(self, batch_size: int | None = None, seed: int = 0, start: int = 0) -> Iterator[Batch]:
        """Endless batches of windows of the corpus **train** split (fine-tuning), from step ``start`` on.

        Each pass over the split is a permutation drawn from ``(seed, pass)`` cut into full batches of
        ``batch_size`` windows (default: the dataset's); every window gets a fresh standard-normal ``z``
        drawn from the same seed, as evaluation windows do.

        Example:
            >>> # events, controls, z = next(data.training_batches(8, seed=0))
        """
        windows = self._split_windows("train")
        size = batch_size or self.batch_size
        per_pass = len(windows) // size
        if per_pass == 0:
            raise DataError(f"{self.name}: the train split has {len(windows)} windows, fewer than one batch of {size}.")
        rounds, first = divmod(start, per_pass)
        while True:
            key = [seed, rounds]
            order = np.random.default_rng(key).permutation(len(windows))
            z = torch.randn(len(windows), self.init_dim, generator=torch.Generator().manual_seed(seed * 7919 + rounds))
            for b in range(first, per_pass):
                chosen = order[b * size : (b + 1) * size]
                yield make_batch([self._cut(*windows[k]) for k in chosen], z[torch.from_numpy(chosen)], self.controls)
            rounds, first = rounds + 1, 0

    def _cut(self, file: int, start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        events, density, hist = self.corpus.file(file)
        end = start + self.window
        return events[start:end], density[start:end], hist[start:end]

    def streams(self, split: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Whole-file (events, density, hist) arrays of a corpus split (train/validation/test/all)."""
        return [self.corpus.file(i) for i in self.corpus.split(split)]

    def describe(self) -> str:
        """One line: corpus, splits, windows and batch size."""
        files = {s: len(self.corpus.split(s)) for s in ("train", "validation", "test")}
        parts = []
        for role in ("calibration", "evaluation"):
            n = len(self._windows[role])
            parts.append(
                f"{role}={self.split_names[role]} {n} windows ({n * self.window} events, "
                f"{self.num_batches(role)} batches)"
            )
        return (
            f"{self.name}: {len(self.corpus.names)} files ({files['train']}/{files['validation']}/{files['test']} "
            f"train/validation/test), window {self.window}, batch {self.batch_size}, "
            f"controls {'on' if self.controls else 'off'}; " + "; ".join(parts)
        )
