"""Quantization-aware fine-tuning of one experiment's quantized model (the ``finetune:`` block).

The engine calls :func:`finetune_experiment` after the quantizer has built the post-training model:
the model is thawed into its straight-through training form (compress/finetune/ste.py, freeze.py),
trained on the dataset's training split (loop.py; checkpoints in the report folder, checkpoint.py),
and frozen back by the experiment's own quantizer into the post-training integer semantics. With
``steps: 0`` the result is the post-training model itself, bit for bit. See docs/finetune.md.

Example:
    >>> sorted(FINETUNE_SCHEMA["properties"])[:3]
    ['batch_size', 'grad_clip', 'lr']
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.fileio import output_file
from compress.finetune.config import FINETUNE_SCHEMA, FinetuneSpec, finetune_spec
from compress.finetune.freeze import float_weights, freeze, thaw
from compress.finetune.loop import TrainLog, train
from compress.finetune.protocol import check_trainable

__all__ = ["FINETUNE_SCHEMA", "FinetuneSpec", "Finetuned", "finetune_experiment", "thaw", "freeze", "float_weights"]


@dataclass
class Finetuned:
    """The frozen result: the quantizer (on the fine-tuned float model), its quantized model, what happened."""

    quantizer: Any
    model: nn.Module
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def weights_digest(model: nn.Module) -> str:
    """sha256 of the model's state (names, dtypes, shapes, bytes): which float model was fine-tuned.

    Example:
        >>> len(weights_digest(nn.Linear(1, 1)))
        64
    """
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def finetune_experiment(
    block: dict[str, Any],
    *,
    float_model: nn.Module,
    qmodel: nn.Module,
    requantize: Callable[[nn.Module], Any],
    data: Any,
    name: str,
    identity: Any = None,
    out_dir: Path | None = None,
    progress: bool = False,
    default_seed: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> Finetuned:
    """Fine-tune ``qmodel`` (the quantizer's model of ``float_model``) and freeze it back.

    Args:
        block: the experiment's ``finetune:`` block.
        float_model: the (converted) float model the quantizer was given; never modified.
        qmodel: its post-training quantized model (its grids are the ones trained against).
        requantize: the experiment's quantizer factory, ``model -> quantizer`` (same args, same statistics).
        data: the dataset.
        name: the experiment (the checkpoint is ``<name>.finetune.pt``).
        identity: what else determines the result (quantizer spec, statistics key): part of the fingerprint.
        out_dir: the report folder for the checkpoint; None writes none.
        progress: progress bar with the running loss.
        default_seed: the schedule's seed, used when the block has none.
        on_step: called after every step with the steps done.

    Example:
        >>> # tuned = finetune_experiment(exp["finetune"], float_model=m, qmodel=q.prepare_model(),
        >>> #                             requantize=lambda f: make_quantizer(qspec, f, stats), data=data, name="x")
    """
    spec = finetune_spec(block, default_seed)
    check_trainable(float_model, data, f"experiment '{name}'")
    trainable = thaw(float_model, qmodel)
    fingerprint = spec.fingerprint(identity, weights_digest(float_model))
    file = f"{name}.finetune.pt"
    checkpoint = (output_file(out_dir, file, "a fine-tuning checkpoint"), fingerprint) if out_dir else None
    log = train(trainable, data, spec, checkpoint, progress, f"finetune {name}", on_step)
    quantizer, model = freeze(trainable, requantize)
    summary = {"spec": asdict(spec), **log.summary()}  # as resolved (defaults filled in), so a row can be rerun
    return Finetuned(quantizer, model, summary, [_note(spec, log, file)])


def _note(spec: FinetuneSpec, log: TrainLog, file: str) -> str:
    s = log.summary()
    resumed = f", resumed from step {log.resumed_from} of {file}" if log.resumed_from else ""
    first, last = s["train_loss_first"], s["train_loss_last"]
    loss = f"; training loss {first:.4f} -> {last:.4f} (mean of the first/last 10 steps)" if first is not None else ""
    return f"fine-tuned {spec.steps} steps ({spec.optimizer}, lr {spec.lr:g}, {spec.schedule}){resumed}{loss}"
