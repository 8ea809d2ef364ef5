"""Performance RNN checkpoint files: our format, the public ``.sess`` format, plain state dicts.

Our format is a ``torch.save`` of a plain dict (loadable with ``weights_only=True``)::

    {"format": "compress-checkpoint", "version": 1, "model": "performance_rnn",
     "args": {event_dim, control_dim, init_dim, hidden_dim, num_layers, dropout, cell},
     "state_dict": {...}, "card": {...}}

The public ``.sess`` files hold ``model_config`` (init_dim, event_dim, control_dim,
hidden_dim, gru_layers, gru_dropout) and ``model_state``; the cell (LSTM or GRU) is read
from the shape of ``gru.weight_ih_l0`` (4 or 3 gate blocks).

Example:
    >>> read_checkpoint("/nonexistent.pt")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    compress.errors.ModelError: ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from compress.errors import ModelError
from compress.fileio import atomic_torch_save
from compress.models.checks import check_state_dict, load_weights

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "read_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "compress-checkpoint"
CHECKPOINT_VERSION = 1
SESS_KEYS = {"init_dim": "init_dim", "event_dim": "event_dim", "control_dim": "control_dim",
             "hidden_dim": "hidden_dim", "gru_layers": "num_layers", "gru_dropout": "dropout"}  # fmt: skip


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    """Read ``(architecture args or None, state dict)`` from a Performance RNN checkpoint.

    Accepts our format (``{"format": "compress-checkpoint", "version": 1, "model":
    "performance_rnn", "args", "state_dict", "card"}``), the public ``.sess`` format
    (``model_config`` + ``model_state``; the cell is read from the weight shapes) and a
    plain state dict. Loading is weights-only on the CPU.

    Raises:
        ModelError: missing, unreadable or foreign files.

    Example:
        >>> read_checkpoint("/nonexistent.pt")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.ModelError: ...
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"Performance RNN checkpoint '{path}' does not exist; check the model's 'checkpoint' path.")
    obj = load_weights(path, "checkpoint")
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _read_own(obj, path)
    if isinstance(obj, dict) and "model_state" in obj:
        state = check_state_dict(obj["model_state"], path)
        raw_config = obj.get("model_config") or {}
        if not isinstance(raw_config, dict):
            raise ModelError(f"Checkpoint '{path}': 'model_config' must be a mapping, got {raw_config!r:.80}.")
        config = {SESS_KEYS[k]: v for k, v in raw_config.items() if k in SESS_KEYS}
        return ({**config, "cell": _cell_of(state, path)} if config else None), state
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None, obj
    raise ModelError(f"'{path}' is not a Performance RNN checkpoint (our format, a .sess file or a state dict).")


def _read_own(obj: dict[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if obj.get("version") != CHECKPOINT_VERSION or obj.get("model") != "performance_rnn":
        raise ModelError(
            f"Checkpoint '{path}' is version {obj.get('version')} of model '{obj.get('model')}'; this loader "
            f"reads version {CHECKPOINT_VERSION} of 'performance_rnn'."
        )
    for key in ("args", "state_dict"):
        if key not in obj:
            raise ModelError(f"Checkpoint '{path}' lacks '{key}'; the file is damaged or was not written by compress.")
    if not isinstance(obj["args"], dict):
        raise ModelError(f"Checkpoint '{path}': 'args' must be a mapping, got {obj['args']!r:.80}.")
    return dict(obj["args"]), check_state_dict(obj["state_dict"], path)


def _cell_of(state: dict[str, torch.Tensor], path: Path) -> str:
    w_ih, w_hh = state.get("gru.weight_ih_l0"), state.get("gru.weight_hh_l0")
    if w_ih is None or w_hh is None:
        raise ModelError(f"Checkpoint '{path}' has no 'gru.weight_ih_l0'/'gru.weight_hh_l0'; not a Performance RNN.")
    if w_ih.dim() != 2 or w_hh.dim() != 2 or 0 in w_ih.shape or 0 in w_hh.shape:
        raise ModelError(
            f"Checkpoint '{path}': the recurrent weights have shapes {tuple(w_ih.shape)} and {tuple(w_hh.shape)}; "
            "they must be non-empty matrices."
        )
    gates = w_ih.shape[0] // w_hh.shape[1]
    if gates not in (3, 4):
        raise ModelError(f"Checkpoint '{path}': gru weights have {gates} gate blocks; expected 4 (LSTM) or 3 (GRU).")
    return "lstm" if gates == 4 else "gru"


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str], card: dict[str, Any] | None = None) -> None:
    """Save ``model`` in our checkpoint format (atomically), with an optional model card dict.

    The card is reduced to JSON types (other values become strings) so the file stays
    loadable with ``weights_only=True``.

    Example:
        >>> import tempfile
        >>> from compress.models.performance_rnn import performance_rnn
        >>> p = Path(tempfile.mkdtemp()) / "m.pt"
        >>> save_checkpoint(performance_rnn(hidden_dim=8, num_layers=1), p)
        >>> read_checkpoint(p)[0]["hidden_dim"]
        8
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    obj = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": "performance_rnn",
           "args": model.arch_args(), "state_dict": state, "card": _plain(card or {})}  # fmt: skip
    atomic_torch_save(obj, path)


def _plain(card: dict[str, Any]) -> dict[str, Any]:
    # e.g. torch.__version__ is a TorchVersion, which the weights-only unpickler refuses
    return json.loads(json.dumps(card, default=str))
