"""Loading the deployable artifact written by :func:`compress.quant.artifact.export.save_quantized`.

The model is rebuilt from its registered factory (no checkpoint), the stored converters are applied,
the float state is loaded and every wrapper is rebuilt from its stored codes and grids, so the loaded
model computes the same bits as the saved one. See compress/quant/artifact/export.py for the file's layout.

Example:
    >>> # model = load_quantized("runs/perf_rnn/int8_full.qpt"); model.score_batch(batch)
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from compress.errors import ArtifactError, CompressError, QuantizationError
from compress.fileio import open_regular_file
from compress.quant.artifact.integrity import check_structure
from compress.quant.config.plan import LayerPlan
from compress.quant.fused.attach import attach_fused_loops
from compress.quant.quantizer import module_paths, replace_module
from compress.quant.wrappers.base import Grid
from compress.quant.wrappers.factory import FakeQuantWrapper, FloatWrapper
from compress.quant.wrappers.ops import ConcatQuantWrapper, EltwiseAddQuantWrapper, EltwiseMultQuantWrapper
from compress.quant.wrappers.params import (
    EmbeddingQuantWrapper,
    LinearQuantWrapper,
    QuantizedWeight,
    WeightFakeQuantWrapper,
)
from compress.registry import CONVERTERS, MODELS

__all__ = ["FORMAT", "VERSION", "load_quantized", "read_artifact", "fresh_model"]

FORMAT = "compress-quantized"
VERSION = 2  # 2: a payload digest ('sha256'); version 1 files (no digest) still load, structure-checked
READABLE_VERSIONS = (1, 2)
MAX_ARTIFACT_BYTES = 8 << 30

OPS = {c.__name__: c for c in (EltwiseAddQuantWrapper, EltwiseMultQuantWrapper, ConcatQuantWrapper)}
WEIGHTED = (LinearQuantWrapper, WeightFakeQuantWrapper, EmbeddingQuantWrapper)


def fresh_model(name: str, args: dict[str, Any], converters: list[dict[str, Any]]) -> nn.Module:
    """The registered model ``name`` built from ``args`` (no checkpoint), with ``converters`` applied, in eval mode.

    Example:
        >>> type(fresh_model("performance_rnn", {"hidden_dim": 4, "num_layers": 1}, []).gru).__name__
        'LSTM'
    """
    model = MODELS.get(name).obj(checkpoint=None, **args)
    for conv in converters:
        model, _ = CONVERTERS.get(conv["name"]).obj(model, **dict(conv.get("args") or {}))
    return model.eval()


def _load_float_state(model: nn.Module, state: dict[str, torch.Tensor]) -> set[int]:
    """Copy the stored tensors into ``model`` (a different dtype replaces the data: a cast model); returns their ids."""
    modules = dict(model.named_modules())
    loaded = set()
    for key, value in state.items():
        owner, _, attr = key.rpartition(".")
        module = modules.get(owner)
        target = None if module is None else module._parameters.get(attr, module._buffers.get(attr))
        if target is None:
            raise ArtifactError(f"it stores '{key}', which the rebuilt model does not have")
        if target.shape != value.shape:
            raise ArtifactError(f"'{key}' has shape {tuple(value.shape)}, the model needs {tuple(target.shape)}")
        with torch.no_grad():
            if target.dtype == value.dtype:
                target.copy_(value)
            else:
                target.data = value.clone()
        loaded.add(id(target))
    return loaded


def _qweight(record: dict[str, Any]) -> QuantizedWeight:
    codes = record["codes"].to(torch.int64) + record["shift"]
    zp = record["zero_point"].to(torch.float64)
    scale = record["scale"].to(torch.float64).clone()  # not a view that keeps the file's whole storage alive
    if scale.dim() and zp.dim() == 0:
        zp = zp.expand(scale.shape).clone()
    along = zp.reshape([-1] + [1] * (codes.dim() - 1)) if zp.dim() else zp
    int_weight = (codes.to(torch.float64) + along).to(torch.int32)
    return QuantizedWeight(int_weight, scale, zp, dict(record["info"]))


def _grid(record: dict[str, Any]) -> Grid:
    def tensor(v: float | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(v, dtype=torch.float64).clone()

    clip = None if record["clip"] is None else (record["clip"][0], record["clip"][1])
    return Grid(tensor(record["scale"]), tensor(record["zero_point"]), record["qmin"], record["qmax"], clip)


def _rebuild(
    record: dict[str, Any],
    module: nn.Module,
    weights: dict[str, QuantizedWeight],
    kernels: str | None,
    float_memo: dict[str, dict[int, Any]],
) -> nn.Module:
    kind, note = record["wrapper"], record["note"]
    if kind == "FloatWrapper":  # one deepcopy memo per precision: tied weights stay tied, as when built
        precision = record["precision"]
        return FloatWrapper(module, precision, note, memo=float_memo.setdefault(precision, {}))
    grids = {p: _grid(g) for p, g in record["grids"].items()}
    mode = kernels or record.get("integer_kernels", "auto")
    if kind == "LinearQuantWrapper":
        bias = record["bias_int"]
        return LinearQuantWrapper(
            module, weights[record["weight"]], grids["input"], grids["output"], record["bits_accum"],
            record["mult_bits"], record["half_range"], note, mode,
            bias_int=None if bias is None else bias.to(torch.float64),
        )  # fmt: skip
    if kind == "WeightFakeQuantWrapper":
        return WeightFakeQuantWrapper(module, weights[record["weight"]], note)
    if kind == "EmbeddingQuantWrapper":
        return EmbeddingQuantWrapper(module, weights[record["weight"]], note)
    if kind == "FakeQuantWrapper":
        return FakeQuantWrapper(module, grids["output"], record["half_range"], note)
    if kind in OPS:
        inputs = [grids[f"input{i}"] for i in range(sum(p.startswith("input") for p in grids))]
        args = (record["bits_accum"], record["mult_bits"], record["half_range"], note, mode)
        return OPS[kind](module, inputs, grids["output"], *args)
    raise QuantizationError(f"Unknown wrapper '{kind}' in the artifact (written by a newer compress?).")


def _dequantized_params(wrapper: nn.Module, loaded: set[int]) -> None:
    """Give a rebuilt wrapper's float module the weights it stands for (unless a float layer shares them)."""
    module = wrapper.wrapped
    with torch.no_grad():
        if isinstance(wrapper, WEIGHTED) and id(module.weight) not in loaded:
            module.weight.copy_(wrapper.qweight.dequantized(module.weight.dtype).to(module.weight.device))
        if isinstance(wrapper, LinearQuantWrapper) and module.bias is not None and wrapper.bias_int is not None:
            module.bias.copy_((wrapper.bias_int / wrapper.accum_scale).to(module.bias.dtype))


def load_quantized(path: str | os.PathLike[str], *, integer_kernels: str | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_quantized` (``torch.load(weights_only=True)``), in eval mode, on CPU.

    Args:
        path: the artifact.
        integer_kernels: ``auto`` / ``off`` for every wrapper; default: as saved.

    Example:
        >>> # model = load_quantized("int8.qpt"); model.score_batch(batch)
    """
    obj = read_artifact(path)
    try:
        return _build(obj, integer_kernels)
    except ArtifactError as exc:
        raise ArtifactError(f"Artifact '{path}': {exc}") from None
    except Exception as exc:  # the checks passed but the records still do not fit together
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(
            f"Artifact '{path}' is inconsistent: rebuilding the model failed ({type(exc).__name__}: {detail}). "
            "Export it again."
        ) from None


def read_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked content of an artifact file: bounded weights-only read, format, version, digest, structure.

    Example:
        >>> read_artifact("/dev/zero")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.ArtifactError: ...
    """
    try:
        f = open_regular_file(path, MAX_ARTIFACT_BYTES, "artifact")
    except CompressError as exc:
        raise ArtifactError(str(exc)) from None
    with f:
        try:
            obj = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zips, flipped bytes in the pickle, code: torch raises many types
            raise ArtifactError(
                f"Artifact '{path}' cannot be read: it is truncated, damaged or not an artifact "
                f"({type(exc).__name__}). Export it again."
            ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a compress quantized artifact (format '{FORMAT}').")
    if obj.get("version") not in READABLE_VERSIONS:
        raise ArtifactError(f"{path} has artifact version {obj.get('version')!r}; this compress reads {VERSION}.")
    check_structure(path, obj, digest_required=obj["version"] >= 2)
    return obj


def _build(obj: dict[str, Any], integer_kernels: str | None) -> nn.Module:
    model = fresh_model(obj["model"]["name"], dict(obj["model"]["args"]), list(obj["converters"]))
    loaded = _load_float_state(model, obj["float_state"])
    weights = {key: _qweight(rec) for key, rec in obj["weights"].items()}
    modules, paths = dict(model.named_modules()), module_paths(model)
    float_memo: dict[str, dict[int, Any]] = {}
    for record in obj["layers"]:
        module = modules.get(record["name"])
        if module is None:
            raise ArtifactError(f"it has a layer '{record['name']}' the rebuilt model lacks")
        wrapper = _rebuild(record, module, weights, integer_kernels, float_memo)
        if record.get("plan"):
            wrapper.layer_plan = LayerPlan(**record["plan"])
        if isinstance(wrapper, WEIGHTED):
            _dequantized_params(wrapper, loaded)
        replace_module(paths, module, wrapper)
    attach_fused_loops(model)
    return model.eval()
