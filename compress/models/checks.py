"""Checkpoints checked before anything is built from them: a bounded, weights-only read and shape checks.

A checkpoint is user input: its ``args`` are checked against the model's own argument schema, the model is
first built on PyTorch's ``meta`` device (shapes only, no memory) to count its parameters and to compare
every tensor of the state dict with the shape the model expects, and only then built for real. A file
that holds pickled code is refused in compress's own words (PyTorch's message suggests turning the safety
off, which is the one thing not to do).

Example:
    >>> from torch import nn
    >>> check_and_build(lambda: nn.Linear(2, 3), {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, "m.pt")
    Linear(in_features=2, out_features=3, bias=True)
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import jsonschema
import torch
from torch import nn

from compress.errors import CompressError, ModelError
from compress.fileio import open_regular_file

__all__ = ["MAX_CHECKPOINT_BYTES", "MAX_PARAMETERS", "load_weights", "check_args", "check_and_build"]

MAX_CHECKPOINT_BYTES = 8 << 30  # 8 GiB: far above the recurrent models compress studies
MAX_PARAMETERS = 1 << 30  # 4 GiB of float32 weights


def load_weights(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load(path, weights_only=True)`` of a regular file under the size limit, errors in compress's words.

    Example:
        >>> load_weights("/dev/null", "checkpoint")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.ModelError: Checkpoint '/dev/null' is not a regular file ...
    """
    try:
        f = open_regular_file(path, MAX_CHECKPOINT_BYTES, what)
    except CompressError as exc:
        raise ModelError(str(exc)) from None
    with f:
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Unsupported global" in str(exc) or "GLOBAL " in str(exc):  # a class or function to import
                raise ModelError(
                    f"{what.capitalize()} '{path}' holds Python objects or code, not only tensors and plain "
                    "values; compress never runs code from a checkpoint, so the file is refused. Save the "
                    "model's state_dict (tensors only) and use that file."
                ) from None
            raise _unreadable(path, what, exc) from None
        except Exception as exc:  # truncated zips, foreign formats, ...: torch raises many types
            raise _unreadable(path, what, exc) from None


def _unreadable(path: str | os.PathLike[str], what: str, exc: Exception) -> ModelError:
    text = str(exc).split("WeightsUnpickler error:", 1)[-1].strip()
    first = text.splitlines()[0][:200] if text else "no detail"
    if "weights_only" in first:  # never pass on PyTorch's advice to turn the safety off
        first = "not a plain weights file"
    return ModelError(
        f"{what.capitalize()} '{path}' cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {first}). "
        "Is it truncated or another kind of file?"
    )


def _is_integer(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def check_args(args: Any, schema: dict[str, Any], path: Any, model: str) -> dict[str, Any]:
    """``args`` (a checkpoint's architecture) if it fits the model's argument schema, else a ModelError.

    Example:
        >>> check_args({"n": 5.0}, {"properties": {"n": {"type": "integer"}}}, "m.pt", "m")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        compress.errors.ModelError: Checkpoint 'm.pt': its model args do not fit 'm': n: 5.0 is not of type 'integer'...
    """
    if not isinstance(args, dict):
        raise ModelError(f"Checkpoint '{path}': 'args' must be a mapping of architecture arguments, got {args!r:.80}.")
    errors = sorted(_Validator(schema).iter_errors(args), key=lambda e: list(map(str, e.path)))
    if errors:
        text = "; ".join(f"{'.'.join(map(str, e.path)) or 'args'}: {e.message[:120]}" for e in errors[:5])
        raise ModelError(f"Checkpoint '{path}': its model args do not fit '{model}': {text}. Is the file damaged?")
    return args


def check_state_dict(state: Any, path: Any) -> dict[str, torch.Tensor]:
    """``state`` if it maps names to tensors.

    Example:
        >>> check_state_dict({"w": 1}, "m.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        compress.errors.ModelError: Checkpoint 'm.pt': the state dict must map names to tensors; 'w' holds a int...
    """
    if not isinstance(state, dict) or not state:
        raise ModelError(f"Checkpoint '{path}' has no state dict (a non-empty mapping of names to tensors).")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ModelError(
                f"Checkpoint '{path}': the state dict must map names to tensors; {key!r} holds a "
                f"{type(value).__name__}."
            )
    return state


def check_and_build(
    factory: Callable[[], nn.Module], state: dict[str, torch.Tensor] | None, path: Any, strict: bool = True
) -> nn.Module:
    """Build ``factory()`` on the meta device, check its size and ``state``'s shapes, then build it for real.

    Raises:
        ModelError: too many parameters, or ``state`` lacks, adds or misshapes a tensor.
    """
    with torch.device("meta"):
        meta = factory()
    count = sum(p.numel() for p in meta.parameters())
    if count > MAX_PARAMETERS:
        raise ModelError(
            f"The model described by '{path}' would have {count:,} parameters (limit {MAX_PARAMETERS:,}); "
            "check its architecture arguments."
        )
    if state is not None:
        _check_shapes(meta.state_dict(), check_state_dict(state, path), path, strict)
    model = factory()
    if state is not None:
        try:
            model.load_state_dict(state, strict=strict)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ModelError(f"Checkpoint '{path}' does not fit the model: {str(exc).splitlines()[0][:300]}") from None
    return model


def _check_shapes(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor], path: Any, strict: bool) -> None:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if strict and (missing or extra):
        raise ModelError(
            f"Checkpoint '{path}' does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}. "
            "Is it a checkpoint of this model?"
        )
    for key in sorted(set(want) & set(got)):
        if tuple(want[key].shape) != tuple(got[key].shape):
            raise ModelError(
                f"Checkpoint '{path}': '{key}' has shape {tuple(got[key].shape)} but the model's architecture "
                f"needs {tuple(want[key].shape)}. The file is damaged or its args do not describe its weights."
            )
        if got[key].is_floating_point() != want[key].is_floating_point():
            raise ModelError(f"Checkpoint '{path}': '{key}' holds {got[key].dtype} values, not floats.")
