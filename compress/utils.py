"""Small helpers shared by several stages (no stage logic here)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["RuntimeCache", "to_device", "cache_dir", "model_device", "model_dtype", "weight_bytes"]


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Move every tensor inside tuples/lists/dicts of ``obj`` to ``device``.

    Example:
        >>> to_device((torch.zeros(1), [torch.ones(1)]), "cpu")[1][0]
        tensor([1.])
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for t in itertools.chain(model.parameters(), model.buffers()):  # lazily: called once per batch
        return t.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 when none)."""
    # Parameters inside quantization wrappers (e.g. an fp16 island) do not set the model's input dtype.
    wrapped = {id(p) for m in model.modules() if getattr(m, "_compress_wrapper", False) for p in m.parameters()}
    for p in model.parameters():
        if p.is_floating_point() and id(p) not in wrapped:
            return p.dtype
    return torch.float32


def cache_dir() -> Path:
    """The user cache folder for derived data: ``$COMPRESS_CACHE`` or ``~/.cache/compress``."""
    env = os.environ.get("COMPRESS_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "compress"
    base.mkdir(parents=True, exist_ok=True)
    return base


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights as deployed: quantized wrappers report their own, float params count as stored."""
    total, seen = 0, set()
    for module in model.modules():
        fn = getattr(module, "deployed_weight_bytes", None)
        if callable(fn):
            total += int(fn(seen))
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


class RuntimeCache(dict):
    """A dict of per-process runtime state (buffers, C structs) that copies and pickles as empty.

    Kernels keep prepared buffers and ctypes structs on the modules they serve; a deep copy of the model
    (every quantizer makes one) must not share or try to copy them, so it starts with an empty cache.

    Example:
        >>> import copy
        >>> cache = RuntimeCache(a=1)
        >>> copy.deepcopy(cache), len(cache)
        ({}, 1)
    """

    def __deepcopy__(self, memo: dict) -> RuntimeCache:
        return RuntimeCache()

    def __copy__(self) -> RuntimeCache:
        return RuntimeCache()

    def __reduce__(self) -> tuple:
        return (RuntimeCache, ())
