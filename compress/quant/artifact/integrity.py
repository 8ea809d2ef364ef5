"""The artifact's integrity: a SHA-256 digest of its payload, and a structural check before anything is built.

The digest covers every key, plain value and tensor (dtype, shape and bytes) of the artifact except the
``sha256`` entry itself, in the file's order, so a flipped byte anywhere in the data is found after the
weights-only load and before a model is built. The structural check then refuses, with the file's name and
what is wrong, everything a tampered file could still hold consistently: an unknown model or converter,
model arguments outside the model's schema or describing more parameters than the file stores (a huge
``hidden_dim`` would allocate terabytes), grids with non-finite or non-positive scales or ``qmin > qmax``,
weight records of the wrong types or shapes.

Example:
    >>> digest = payload_digest({"format": "x", "weights": {"w": torch.zeros(2)}})
    >>> len(digest), digest == payload_digest({"format": "x", "weights": {"w": torch.ones(2)}})
    (64, False)
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any

import jsonschema
import torch

from compress.errors import ArtifactError, CompressError
from compress.registry import CONVERTERS, MODELS

__all__ = ["payload_digest", "check_structure", "MAX_PARAMETERS"]

MAX_PARAMETERS = 1 << 31
_TOP = ("format", "version", "model", "converters", "layers", "weights", "float_state")


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` canonically: a type tag, then its content (tensors by dtype, shape and raw bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"S{type(obj).__name__}:{obj!r};".encode())


def payload_digest(artifact: dict[str, Any]) -> str:
    """The SHA-256 (hex) of everything in ``artifact`` but its ``sha256`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in artifact.items() if k != "sha256"})
    return h.hexdigest()


def _fail(path: Any, what: str) -> ArtifactError:
    return ArtifactError(f"Artifact '{path}' is corrupt or inconsistent: {what}. Export it again.")


def _finite(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.is_floating_point() and bool(torch.isfinite(x).all())
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive(x: Any) -> bool:
    return _finite(x) and bool((torch.as_tensor(x) > 0).all())


def _check_grid(path: Any, where: str, g: Any) -> None:
    if not isinstance(g, dict) or not {"scale", "zero_point", "qmin", "qmax", "clip"} <= set(g):
        raise _fail(path, f"{where} is not a grid record")
    if not _positive(g["scale"]) or not _finite(g["zero_point"]):
        raise _fail(path, f"{where} has a scale or zero point that is not a finite number (scale must be > 0)")
    lo, hi = g["qmin"], g["qmax"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not lo <= hi:
        raise _fail(path, f"{where} has the code range [{lo!r}, {hi!r}] (integers with qmin <= qmax needed)")
    clip = g["clip"]
    if clip is not None and not (
        isinstance(clip, (list, tuple)) and len(clip) == 2 and all(map(_finite, clip)) and clip[0] <= clip[1]
    ):
        raise _fail(path, f"{where} has the clip range {clip!r}")


def _check_weight(path: Any, key: str, rec: Any) -> None:
    where = f"weight '{key}'"
    if not isinstance(rec, dict) or not {"codes", "shift", "scale", "zero_point", "info"} <= set(rec):
        raise _fail(path, f"{where} is not a weight record")
    codes, scale, zp = rec["codes"], rec["scale"], rec["zero_point"]
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.dim() < 1 or 0 in codes.shape:
        raise _fail(path, f"{where} has no integer codes")
    if not isinstance(rec["shift"], int) or not isinstance(rec["info"], dict):
        raise _fail(path, f"{where} has a shift or info of the wrong type")
    if not isinstance(scale, torch.Tensor) or not _positive(scale) or scale.numel() not in (1, codes.shape[0]):
        raise _fail(path, f"{where} has a scale that is not finite and positive for each of its {codes.shape[0]} rows")
    if not isinstance(zp, torch.Tensor) or zp.is_floating_point() or zp.numel() not in (1, codes.shape[0]):
        raise _fail(path, f"{where} has a zero point of the wrong type or size")


def _check_layer(path: Any, i: int, rec: Any, weights: dict[str, Any]) -> None:
    if not isinstance(rec, dict) or not isinstance(rec.get("name"), str) or not isinstance(rec.get("wrapper"), str):
        raise _fail(path, f"layer {i} is not a layer record (name, wrapper, ...)")
    where = f"layer '{rec['name']}'"
    if rec["wrapper"] == "FloatWrapper":
        return
    grids = rec.get("grids")
    if not isinstance(grids, dict):
        raise _fail(path, f"{where} has no grids")
    for name, g in grids.items():
        _check_grid(path, f"{where} grid '{name}'", g)
    if "weight" in rec and rec["weight"] not in weights:
        raise _fail(path, f"{where} refers to weight {rec['weight']!r}, which the file does not hold")
    bits = rec.get("bits_accum", 32)
    if not isinstance(bits, int) or not 2 <= bits <= 64:
        raise _fail(path, f"{where} has an accumulator width of {bits!r} bits")


def _stored_values(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(_stored_values(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_stored_values(v) for v in obj)
    return 0


def _check_model(path: Any, obj: dict[str, Any]) -> None:
    model = obj["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not isinstance(model.get("args"), dict):
        raise _fail(path, "'model' must be {name, args}")
    if model["name"] not in MODELS:
        raise _fail(path, f"the model '{model['name']}' is not registered here (a plugin not installed?)")
    entry = MODELS.get(model["name"])
    errors = list(jsonschema.Draft202012Validator(entry.schema).iter_errors(model["args"]))
    if errors:
        raise _fail(path, f"the model args do not fit '{model['name']}': {errors[0].message[:160]}")
    converters = obj["converters"]
    if not isinstance(converters, list) or not all(
        isinstance(c, dict) and c.get("name") in CONVERTERS and isinstance(c.get("args", {}), dict) for c in converters
    ):
        raise _fail(path, "'converters' must be a list of registered {name, args}")
    try:
        with torch.device("meta"):  # shapes only: counts the parameters without allocating them
            count = sum(p.numel() for p in entry.obj(checkpoint=None, **model["args"]).parameters())
    except CompressError as exc:  # the factory's own size check (compress.models.checks) refused it
        raise _fail(path, f"its model args describe a model that cannot be built ({exc})") from None
    except Exception:  # a plugin model that cannot be built on the meta device: the other checks still hold
        return
    if count > MAX_PARAMETERS or count > _stored_values(obj):
        raise _fail(
            path,
            f"its model args describe {count:,} parameters but the file stores {_stored_values(obj):,} values",
        )


def check_structure(path: str | os.PathLike[str], obj: Any, digest_required: bool) -> None:
    """Raise :class:`ArtifactError` unless ``obj`` (a loaded artifact) is complete, intact and consistent.

    Example:
        >>> check_structure("a.qpt", {"format": "compress-quantized"}, True)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.ArtifactError: Artifact 'a.qpt' is corrupt or inconsistent: it lacks 'version' ...
    """
    missing = [k for k in _TOP if k not in obj]
    if missing:
        raise _fail(path, f"it lacks {', '.join(repr(k) for k in missing)}")
    if digest_required:
        if not isinstance(obj.get("sha256"), str):
            raise _fail(path, "it has no payload digest ('sha256')")
        if payload_digest(obj) != obj["sha256"]:
            raise _fail(path, "its content does not match the digest in its header (damaged or edited)")
    if not isinstance(obj["weights"], dict) or not isinstance(obj["layers"], list):
        raise _fail(path, "'weights' must be a mapping and 'layers' a list")
    state = obj["float_state"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise _fail(path, "'float_state' must map names to tensors")
    for key, rec in obj["weights"].items():
        _check_weight(path, str(key), rec)
    for i, rec in enumerate(obj["layers"]):
        _check_layer(path, i, rec, obj["weights"])
    _check_model(path, obj)
