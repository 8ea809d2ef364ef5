"""A character-level dataset over any UTF-8 text file (default: the text shipped with this plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from compress.errors import DataError
from compress.registry import DATASETS

DEFAULT_TEXT = Path(__file__).with_name("text.txt")

SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "Text file; default: the plugin's own text."},
        "window": {"type": "integer", "minimum": 2, "maximum": 4096},
        "batch_size": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}

VOCAB = [chr(c) for c in range(32, 127)] + ["\n", "?"]


def encode(text: str) -> torch.Tensor:
    """Characters -> ids in :data:`VOCAB` (unknown characters map to '?')."""
    index = {c: i for i, c in enumerate(VOCAB)}
    return torch.tensor([index.get(c, len(VOCAB) - 1) for c in text], dtype=torch.long)


@DATASETS.register(
    "char_text", schema=SCHEMA, description="Characters of a text file: first 80% calibration, rest evaluation."
)
class CharText:
    """Fixed, non-overlapping windows; the first 80% of the text calibrates, the rest evaluates."""

    def __init__(self, path: str | None = None, window: int = 64, batch_size: int = 8) -> None:
        p = Path(path) if path else DEFAULT_TEXT
        if not p.is_file():
            raise DataError(f"char_text: no such text file {p}.")
        ids = encode(p.read_text(encoding="utf-8"))
        cut = int(len(ids) * 0.8)
        self.splits = {"calibration": ids[:cut], "evaluation": ids[cut:]}
        self.window, self.batch_size, self.path = window, batch_size, p

    def _windows(self, split: str) -> torch.Tensor:
        ids = self.splits[split]
        n = (len(ids) - 1) // self.window
        x = ids[: n * self.window].view(n, self.window)
        y = ids[1 : n * self.window + 1].view(n, self.window)
        return torch.stack([x, y], dim=0)

    def batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        xy = self._windows(split)
        for i in range(0, xy.shape[1], self.batch_size):
            chunk = xy[:, i : i + self.batch_size]
            yield chunk[0].t().contiguous(), chunk[1].t().contiguous()  # time-major [T, B]

    def num_batches(self, split: str) -> int:
        return -(-self._windows(split).shape[1] // self.batch_size)

    def describe(self) -> str:
        return f"char_text {self.path.name}: windows of {self.window}, batch {self.batch_size}"
