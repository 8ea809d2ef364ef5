"""What fine-tuning needs from a model and a dataset, checked before any work with one clear error.

* the model: ``training_loss(batch, state) -> (loss, state)``, a differentiable scalar (the shipped
  models return the mean NLL per token/event of the batch, what ``score_batch`` sums) and the state to
  carry to the next batch (None when batches are independent);
* the dataset: ``training_batches(batch_size, seed, start) -> Iterator[batch]``, an endless, seeded
  stream of batches of its training split beginning at step ``start`` (so a resumed run continues it).

Example:
    >>> check_trainable(object(), object(), "experiments[3].finetune")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    compress.errors.ModelError: ...
"""

from __future__ import annotations

from typing import Any

from compress.errors import DataError, ModelError

__all__ = ["check_trainable", "MODEL_METHOD", "DATA_METHOD"]

MODEL_METHOD = "training_loss(batch, state) -> (loss, state)"
DATA_METHOD = "training_batches(batch_size, seed, start) -> iterator of batches of its training split"


def check_trainable(model: Any, data: Any, where: str) -> None:
    """Raise ModelError / DataError naming every missing piece when ``model`` or ``data`` cannot be fine-tuned on."""
    missing = []
    if not callable(getattr(model, "training_loss", None)):
        missing.append(f"the model ({type(model).__name__}) has no method {MODEL_METHOD} (the loss to minimize)")
    if not callable(getattr(data, "training_batches", None)):
        missing.append(f"the dataset ({type(data).__name__}) has no method {DATA_METHOD}")
    if not missing:
        return
    error = ModelError if not callable(getattr(model, "training_loss", None)) else DataError
    raise error(
        f"{where} asks for fine-tuning, but " + "; and ".join(missing) + ". Add it to the plugin (see "
        "docs/finetune.md, 'What a model and a dataset provide'), or remove the finetune block."
    )
