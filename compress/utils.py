"""Small helpers shared by several stages (no stage logic here).

``model_device`` and ``model_dtype`` are public API for model authors (also as ``compress.model_device`` /
``compress.model_dtype``): where and in which dtype a model, or a quantized copy of it, wants its inputs.

Example:
    >>> import compress
    >>> compress.model_dtype(torch.nn.Linear(1, 1))
    torch.float32
"""

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
    """The device of the model's first parameter or buffer (CPU when it has none).

    Public API (``compress.model_device``): a model's ``forward_batch``/``score_batch`` should move its batch
    here rather than read ``self.<layer>.weight.device``, because in a quantized copy that layer may be a
    wrapper without a ``weight``.

    Example:
        >>> model_device(torch.nn.Linear(2, 2))
        device(type='cpu')
    """
    for t in itertools.chain(model.parameters(), model.buffers()):  # lazily: called once per batch
        return t.device
    return torch.device("cpu")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a model's float inputs should be cast to: its first floating parameter outside quantization wrappers.

    Public API (``compress.model_dtype``). A ``cast`` copy (``.half()``) answers float16; a quantized copy
    with fp16 islands (an override ``fp16: true`` on some layers) still answers float32, because the
    wrappers cast at their own boundaries. Float32 when the model has no floating parameter.

    Example:
        >>> model_dtype(torch.nn.Linear(2, 2).half()), model_dtype(torch.nn.Embedding(3, 2).double())
        (torch.float16, torch.float64)
    """
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
