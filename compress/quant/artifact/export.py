"""A deployable artifact of a quantized model: integer weights, grids and plan, loadable with ``weights_only=True``.

:func:`save_quantized` writes one file holding plain containers and tensors only:

=================  =====================================================================================
key                content
=================  =====================================================================================
``model``          ``{"name", "args"}`` from the model's ``compress_spec`` (the registered factory)
``converters``     ``[{"name", "args"}]`` applied to the fresh model before the wrappers go in
                   (``rnn_to_modular`` with the module types found converted, unless given)
``weights``        per quantized weight (shared ones once): codes shifted into int8 (int16/int32 for
                   wider codes) plus that ``shift``, the float64 scale and the zero point
``layers``         per wrapper: its class, resolved plan row (settings), grids (scale, zero point,
                   code range, clip range), integer bias, accumulator width, ... (compress/quant/wrappers/factory.py)
``float_state``    parameters and buffers of everything that is not quantized (float layers, biases
                   of weight-only layers), named as in the unwrapped model
``sha256``         the digest of everything above (compress/quant/artifact/integrity.py), checked on load
=================  =====================================================================================

Tensors of one dtype share one storage (one record in the file instead of one per tensor).
:func:`load_quantized` (compress/quant/artifact/loading.py) rebuilds the model from the registry, applies the
converters, loads the float state and rebuilds every wrapper from the stored codes and grids (no statistics), so
the loaded model computes the same bits as the one saved. The float weights kept inside a loaded wrapper (``.wrapped``)
are the dequantized ones.

Example:
    >>> # save_quantized(qmodel, "runs/int8.qpt"); model = load_quantized("runs/int8.qpt")
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import QuantizationError
from compress.fileio import atomic_torch_save
from compress.quant.artifact.integrity import payload_digest
from compress.quant.artifact.loading import FORMAT, OPS, VERSION, WEIGHTED, fresh_model, load_quantized
from compress.quant.kernels.intmatmul import int8_shift
from compress.quant.wrappers.base import Grid, QuantWrapper
from compress.quant.wrappers.factory import FloatWrapper, is_wrapper
from compress.quant.wrappers.params import LinearQuantWrapper, QuantizedWeight

__all__ = ["FORMAT", "VERSION", "save_quantized", "load_quantized", "detect_converters"]


def detect_converters(model: nn.Module) -> list[dict[str, Any]]:
    """The converters that turn the factory's model into ``model``'s structure (modular RNNs found).

    Example:
        >>> from compress.modules import convert_rnns
        >>> detect_converters(convert_rnns(nn.Sequential(nn.LSTM(2, 3)))[0])
        [{'name': 'rnn_to_modular', 'args': {'types': ['lstm']}}]
    """
    from compress.modules import ModularGRU, ModularGRUCell, ModularLSTM, ModularLSTMCell

    names = {ModularLSTM: "lstm", ModularGRU: "gru", ModularLSTMCell: "lstm_cell", ModularGRUCell: "gru_cell"}
    found: set[str] = set()

    def visit(module: nn.Module) -> None:
        for child in module.children():
            inner = child.wrapped if is_wrapper(child) else child
            if type(inner) in names:
                found.add(names[type(inner)])  # its own cells came with it: do not descend
            else:
                visit(inner)

    visit(model)
    return [{"name": "rnn_to_modular", "args": {"types": sorted(found)}}] if found else []


def _walk(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every module outside wrappers, and of the wrappers themselves (each once)."""
    seen: set[int] = set()

    def visit(prefix: str, module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
        if id(module) in seen:
            return
        seen.add(id(module))
        yield prefix, module
        if is_wrapper(module):
            return
        for name, child in module._modules.items():
            if child is not None:
                yield from visit(f"{prefix}.{name}" if prefix else name, child)

    yield from visit("", model)


def _own_state(module: nn.Module, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, torch.Tensor]]:
    """A module's own parameters and persistent buffers (not its children's)."""
    for name, p in module._parameters.items():
        if p is not None and name not in skip:
            yield name, p
    for name, b in module._buffers.items():
        if b is not None and name not in module._non_persistent_buffers_set and name not in skip:
            yield name, b


def _float_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Float tensors the wrappers do not rebuild, named as in the unwrapped model (tied ones once)."""
    state: dict[str, torch.Tensor] = {}
    stored: set[int] = set()
    for name, module in _walk(model):
        if isinstance(module, LinearQuantWrapper):
            owner, skip, dtype = module.wrapped, ("weight", "bias"), None
        elif isinstance(module, WEIGHTED):
            owner, skip, dtype = module.wrapped, ("weight",), None
        elif isinstance(module, FloatWrapper):  # its copy is cast: store values in the module's own dtype
            owner, skip, dtype = module.wrapped, (), module.own_dtype
        elif is_wrapper(module):
            owner, skip, dtype = module.wrapped, (), None
        else:
            owner, skip, dtype = module, (), None
        for key, tensor in _own_state(owner, skip):
            if id(tensor) not in stored:
                stored.add(id(tensor))
                value = tensor.detach().cpu()
                state[f"{name}.{key}" if name else key] = (
                    value.to(dtype) if dtype and value.is_floating_point() else value
                )
    return state


def _small_int(t: torch.Tensor) -> torch.Tensor:
    """An integer-valued tensor in the narrowest of int8/int16/int32/int64 that holds it."""
    lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 0)
    for dtype in (torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return t.to(dtype)
    return t.to(torch.int64)


def _weight_record(qw: QuantizedWeight) -> dict[str, Any]:
    """Codes shifted into the narrowest integer type, the shift, float64 scale and integer zero point."""
    w = qw.int_weight.to(torch.float64)
    zp = qw.zero_point.to(torch.float64)
    codes = w - (zp.reshape([-1] + [1] * (w.dim() - 1)) if zp.dim() else zp)
    lo, hi = (int(codes.min()), int(codes.max())) if codes.numel() else (0, 0)
    shift = int8_shift(lo, hi)
    if shift is None:
        shift = lo + 2**15 if hi - lo < 2**16 else 0
    same_zp = zp.dim() and zp.numel() and bool((zp == zp.reshape(-1)[0]).all())
    return {
        "codes": _small_int(codes - shift),
        "shift": shift,
        "scale": qw.scale.detach().cpu().to(torch.float64),
        "zero_point": _small_int(zp.reshape(-1)[0] if same_zp else zp).cpu(),
        "info": dict(qw.info),
    }


def _grid_record(grid: Grid) -> dict[str, Any]:
    def value(t: torch.Tensor) -> float | torch.Tensor:
        return float(t) if t.dim() == 0 else t.detach().cpu().to(torch.float64)

    clip = None if grid.clip is None else [float(grid.clip[0]), float(grid.clip[1])]
    return {"scale": value(grid.scale), "zero_point": value(grid.zero_point), "qmin": grid.qmin, "qmax": grid.qmax,
            "clip": clip}  # fmt: skip


def _layer_record(name: str, wrapper: nn.Module, weight_keys: dict[int, str]) -> dict[str, Any]:
    plan = getattr(wrapper, "layer_plan", None)
    record: dict[str, Any] = {
        "name": name,
        "wrapper": type(wrapper).__name__,
        "plan": dataclasses.asdict(plan) if plan is not None else None,
        "note": getattr(wrapper, "build_note", wrapper.note),
    }
    if isinstance(wrapper, FloatWrapper):
        return {**record, "precision": wrapper.precision}
    record["grids"] = {p: _grid_record(wrapper.grid(p)) for p in wrapper._qrange}
    record["half_range"] = bool(getattr(wrapper, "half_range", False))
    if isinstance(wrapper, WEIGHTED):
        record["weight"] = weight_keys[id(wrapper.qweight)]
    if isinstance(wrapper, LinearQuantWrapper):
        bias = None if wrapper.bias_int is None else _small_int(wrapper.bias_int.detach().cpu())
        record.update(bias_int=bias, bits_accum=wrapper.bits_accum, mult_bits=wrapper.mult_bits)
    if isinstance(wrapper, tuple(OPS.values())):
        record.update(bits_accum=wrapper.bits_accum, mult_bits=wrapper.mult_bits)
    if hasattr(wrapper, "integer_kernels"):
        record["integer_kernels"] = wrapper.integer_kernels
    return record


def _layers_and_weights(model: nn.Module) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    layers, weights, keys = [], {}, {}
    for name, module in _walk(model):
        if not is_wrapper(module):
            continue
        if not isinstance(module, (QuantWrapper, FloatWrapper)):
            raise QuantizationError(f"{name}: {type(module).__name__} is not a compress wrapper this format stores.")
        if isinstance(module, WEIGHTED) and id(module.qweight) not in keys:
            keys[id(module.qweight)] = name
            weights[name] = _weight_record(module.qweight)
        layers.append(_layer_record(name, module, keys))
    return layers, weights


def _pack(obj: Any) -> Any:
    """Put every tensor of one dtype into one shared storage (views), so the file has one record per dtype."""
    found: dict[torch.dtype, list[torch.Tensor]] = {}

    def collect(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            found.setdefault(o.dtype, []).append(o)
        elif isinstance(o, dict):
            for v in o.values():
                collect(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                collect(v)

    collect(obj)
    views: dict[int, torch.Tensor] = {}
    for tensors in found.values():
        flat = torch.cat([t.detach().cpu().reshape(-1) for t in tensors])
        offset = 0
        for t in tensors:
            views[id(t)] = flat[offset : offset + t.numel()].view(t.shape)
            offset += t.numel()

    def swap(o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            return views[id(o)]
        if isinstance(o, dict):
            return {k: swap(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return type(o)(swap(v) for v in o)
        return o

    return swap(obj)


def save_quantized(
    model: nn.Module, path: str | os.PathLike[str], *, converters: list[dict[str, Any]] | None = None
) -> int:
    """Write ``model`` (a quantized model from a compress quantizer) as a deployable artifact.

    Args:
        model: the quantized model; it needs the ``compress_spec`` of a registered model factory.
        path: the file to write (atomically).
        converters: ``[{"name", "args"}]`` that turn the factory's model into this structure; default:
            detected (``rnn_to_modular`` for the modular RNNs found) and checked against a fresh build.

    Returns:
        The size of the written file in bytes.

    Example:
        >>> # nbytes = save_quantized(qmodel, "int8.qpt")
    """
    spec = getattr(model, "compress_spec", None)
    if not isinstance(spec, dict) or "model" not in spec:
        raise QuantizationError(
            f"{type(model).__name__} has no compress_spec {{'model': <registered name>, 'args': {{...}}}}; "
            "an artifact can only be saved for models built by a registered factory."
        )
    converters = detect_converters(model) if converters is None else [dict(c) for c in converters]
    _check_rebuild(model, spec, converters)
    layers, weights = _layers_and_weights(model)
    artifact = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": spec["model"], "args": dict(spec.get("args") or {})},
        "converters": converters,
        "layers": layers,
        "weights": weights,
        "float_state": _float_state(model),
    }
    packed = _pack(artifact)
    packed["sha256"] = payload_digest(packed)  # checked on load before anything is built
    atomic_torch_save(packed, path)
    return Path(path).stat().st_size


def _structure(model: nn.Module) -> dict[str, str]:
    """Module name -> class name, looking through wrappers (what the factory + converters must produce)."""
    out = {}
    for name, module in _walk(model):
        out[name] = type(module.wrapped if is_wrapper(module) else module).__name__
    return out


def _check_rebuild(model: nn.Module, spec: dict[str, Any], converters: list[dict[str, Any]]) -> None:
    fresh = fresh_model(spec["model"], dict(spec.get("args") or {}), converters)
    want, got = _structure(model), _structure(fresh)
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:6]
        raise QuantizationError(
            f"The factory '{spec['model']}' with converters {converters} does not rebuild this model's structure "
            f"(differences: {diff}); pass the converters that were applied to save_quantized(..., converters=...)."
        )
