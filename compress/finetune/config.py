"""The ``finetune:`` block of an experiment: its schema, defaults and resolved form.

Example:
    >>> spec = finetune_spec({"steps": 100, "lr": 1e-4})
    >>> spec.optimizer, spec.schedule, spec.batch_size, spec.save_every
    ('adam', 'cosine', None, 50)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["FINETUNE_SCHEMA", "FinetuneSpec", "finetune_spec"]

_INT = {"type": "integer", "minimum": 0, "maximum": 10_000_000}

FINETUNE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Quantization-aware fine-tuning of this experiment's quantized model on the dataset's training split "
        "(straight-through estimators through every quantized op), then frozen back into the same integer model."
    ),
    "properties": {
        "steps": {**_INT, "description": "Optimizer steps; 0 keeps the post-training model exactly."},
        "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "description": "Peak learning rate (1e-4)."},
        "batch_size": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": 4096,
            "description": "Sequences per training batch; null: the dataset's own calibration batch size.",
        },
        "optimizer": {"enum": ["adam", "adamw", "sgd"], "description": "Optimizer (adam)."},
        "weight_decay": {"type": "number", "minimum": 0, "maximum": 1, "description": "Weight decay (0)."},
        "momentum": {"type": "number", "minimum": 0, "maximum": 1, "description": "SGD momentum (0.9)."},
        "schedule": {"enum": ["cosine", "constant"], "description": "Learning-rate schedule after warm-up (cosine)."},
        "warmup_steps": {**_INT, "description": "Linear warm-up steps (0)."},
        "grad_clip": {"type": ["number", "null"], "exclusiveMinimum": 0, "description": "Max gradient norm (1.0)."},
        "seed": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": 2**63 - 1,
            "description": "Seed; null: the schedule's.",
        },
        "save_every": {**_INT, "description": "Write the fine-tuned weights every N steps (50; 0: only at the end)."},
    },
    "required": ["steps"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class FinetuneSpec:
    """A resolved ``finetune:`` block (see :data:`FINETUNE_SCHEMA` for each field)."""

    steps: int
    lr: float = 1e-4
    batch_size: int | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    seed: int = 0
    save_every: int = 50

    def fingerprint(self, *extra: Any) -> str:
        """A digest of everything that determines the trained weights (``save_every`` does not).

        Example:
            >>> finetune_spec({"steps": 1}).fingerprint() == finetune_spec({"steps": 1, "save_every": 9}).fingerprint()
            True
        """
        fields = {k: v for k, v in asdict(self).items() if k != "save_every"}
        text = json.dumps([fields, *extra], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def finetune_spec(block: dict[str, Any], default_seed: int = 0) -> FinetuneSpec:
    """The block (already checked against :data:`FINETUNE_SCHEMA`) with its defaults filled in.

    Example:
        >>> finetune_spec({"steps": 5, "seed": None}, default_seed=3).seed
        3
    """
    args = {k: v for k, v in block.items() if v is not None or k in ("batch_size", "grad_clip")}
    args.setdefault("seed", default_seed)
    return FinetuneSpec(**args)
