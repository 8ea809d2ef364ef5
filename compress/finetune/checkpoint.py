"""The fine-tuning checkpoint in the report folder: written atomically, resumed from when it matches.

``<experiment>.finetune.pt`` holds the step reached, the trained model's state, the optimizer's and the
learning-rate schedule's state, the recurrent state carried between batches and the loss history, plus
a fingerprint of everything that determines the result (the finetune block, the quantizer, the
statistics, the float weights). A rerun with the same fingerprint continues from that step (or, when
the file says the run finished, only freezes its weights); a file with another fingerprint is
ignored and replaced. Loaded with ``torch.load(weights_only=True)``.

Example:
    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "x.finetune.pt"
    >>> save_checkpoint(path, {"fingerprint": "f", "step": 3, "model": {"w": torch.ones(1)}})
    >>> load_checkpoint(path, "f")["step"], load_checkpoint(path, "other")
    (3, None)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from compress.errors import CompressError
from compress.fileio import atomic_torch_save, read_regular_file

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT", "MAX_CHECKPOINT_BYTES"]

FORMAT = "compress-finetune-v1"
MAX_CHECKPOINT_BYTES = 4 << 30  # far above any recurrent model this tool fine-tunes


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (tensors, numbers, strings) atomically: a kill mid-write leaves the previous file."""
    atomic_torch_save({"format": FORMAT, **payload}, path)


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it exists and was written for ``fingerprint``; else None."""
    if not path.exists():
        return None
    data = read_regular_file(path, MAX_CHECKPOINT_BYTES, "the fine-tuning checkpoint")
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # a truncated or foreign file: say which and how to get past it
        raise CompressError(
            f"The fine-tuning checkpoint {path} cannot be read ({type(err).__name__}: {err}). Delete it to "
            "fine-tune from the start."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CompressError(f"{path} is not a compress fine-tuning checkpoint; delete or move it.")
    return payload if payload.get("fingerprint") == fingerprint else None
