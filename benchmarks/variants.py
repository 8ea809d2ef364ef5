"""The variants of one shipped model that the comparison benchmarks evaluate side by side.

Everything is built from the study's own schedule through the engine's stages (build, convert,
statistics, quantizer), so the data, the evaluation windows and compress's settings are exactly
those of ``python -m compress SCHEDULE``. The PyTorch alternatives start from the *unconverted*
model (``nn.LSTM``), as a user of PyTorch alone would.

Variants (name -> what):

- ``fp32 nn.LSTM``: the trained model as loaded (PyTorch's fused LSTM); every ratio is against it.
- ``compress fp32 modular``: the converted model (every gate op a module), float32.
- ``compress int8_full``: compress's simulated int8 with the schedule's ``int8_full`` settings
  (asymmetric signed, per-channel weights, activations clipped to averaged ranges, everything 8-bit).
- ``compress W8 weights only``: compress with 8-bit per-tensor symmetric weights on the Linear/LSTM
  layers and float activations, embeddings untouched: the nearest compress setting to what
  ``quantize_dynamic`` quantizes statically.
- ``torch dynamic int8``: ``torch.ao.quantization.quantize_dynamic`` over nn.LSTM and nn.Linear, default
  qconfig (int8 per-tensor weights; activations quantized per call with ranges measured at run time).
- ``torch autocast bf16`` / ``torch autocast fp16``: the fp32 model under ``torch.autocast("cpu", dtype)``.

Example:
    >>> # case = load_case(Path("schedules/perf_rnn.yaml"), title="Performance RNN", unit="events")
    >>> # [v.name for v in case.variants.values()]
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.utils import weight_bytes

REFERENCE = "fp32 nn.LSTM"
MODULAR = "compress fp32 modular"
INT8 = "compress int8_full"
W8 = "compress W8 weights only"
DYNAMIC = "torch dynamic int8"
BF16 = "torch autocast bf16"
FP16 = "torch autocast fp16"
INT8_EXPERIMENT = "int8_full"


@dataclass
class Variant:
    """One model variant: how to run it and what its weights take."""

    name: str
    model: nn.Module
    context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    weight_bytes: int = 0
    bytes_note: str = ""
    note: str = ""


@dataclass
class Case:
    """A shipped model, its evaluation data and its variants."""

    title: str
    unit: str
    schedule: Any
    data: Any
    variants: dict[str, Variant] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def evaluate(case: Case, name: str, max_batches: int | None = None) -> dict[str, Any]:
    """compress's evaluator (the study's) on one variant, inside the variant's context."""
    from compress.evaluate import evaluate_perplexity

    variant = case.variants[name]
    with variant.context():
        return evaluate_perplexity(variant.model, case.data, max_batches=max_batches)


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: how PyTorch's packed int8 weights are stored.

    Example:
        >>> state_dict_bytes(nn.Linear(4, 4)) > 20 * 4
        True
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def autocast_support() -> dict[torch.dtype, str]:
    """Whether this CPU has native instructions for bf16/fp16 (else PyTorch emulates them, slowly)."""
    from benchutil import cpu_flags

    flags = cpu_flags()
    native = {
        torch.bfloat16: bool(flags & {"avx512_bf16", "amx_bf16"}),
        torch.float16: bool(flags & {"avx512_fp16", "amx_fp16"}),
    }
    return {dtype: "native" if ok else "emulated (no native instructions on this CPU)" for dtype, ok in native.items()}


def load_case(schedule_path: Path, *, title: str, unit: str) -> Case:
    """Build every variant of the model of ``schedule_path`` on the CPU."""
    import compress.components  # noqa: F401  (registers the built-in components a schedule names)
    from compress import engine
    from compress.schedule import load_schedule

    schedule = load_schedule(schedule_path)
    torch.manual_seed(int(schedule.data.get("seed", 0)))
    cpu = torch.device("cpu")
    float_model = engine.build_model(schedule, cpu)
    data = engine.build_data(schedule)
    engine.check_data(schedule, float_model, data)
    converted, _ = engine.convert(schedule, float_model, data)
    case = Case(title, unit, schedule, data)
    fp32_bytes = weight_bytes(float_model)
    case.variants[REFERENCE] = Variant(REFERENCE, float_model, weight_bytes=fp32_bytes, bytes_note="fp32 parameters")
    case.variants[MODULAR] = Variant(MODULAR, converted, weight_bytes=weight_bytes(converted))
    stats = _base_stats(schedule, converted, data, cpu)
    _add_compress_int8(case, converted, stats)
    _add_compress_w8(case, converted, stats)
    _add_torch_variants(case, float_model, fp32_bytes)
    if _has_shared_parameters(float_model):
        _note_tied_weights(case)
    return case


def _has_shared_parameters(model: nn.Module) -> bool:
    """True when one Parameter serves several modules (e.g. a word LM's tied embedding and decoder)."""
    return len(list(model.named_parameters(remove_duplicate=False))) > len(list(model.parameters()))


def _note_tied_weights(case: Case) -> None:
    # A tied weight that is quantized in one module and left float in another is needed twice when
    # deployed; both tools' byte counts behave differently here, so the table says how.
    case.variants[
        DYNAMIC
    ].bytes_note += "; quantize_dynamic unties the tied weight: an fp32 embedding plus an int8 copy for the decoder"


def _base_stats(schedule: Any, model: nn.Module, data: Any, device: torch.device) -> Any:
    """The schedule's base statistics (source and edits), as the study computes them."""
    from compress import engine

    spec = schedule.data["stats"]
    stats = engine.collect_stats(schedule, spec, ("stats",), model, data, device, False)
    stats, _ = engine.edit_stats(schedule, stats, list(spec.get("edits") or []), ("stats", "edits"))
    return stats


def _add_compress_int8(case: Case, model: nn.Module, stats: Any) -> None:
    from compress import engine

    schedule = case.schedule
    exps = [e for e in schedule.data["experiments"] if e["name"] == INT8_EXPERIMENT]
    exp = exps[0] if exps else {"args": {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg"}}
    qspec = engine.experiment_quantizer(schedule, exp)
    qmodel = engine.make_quantizer(qspec, model, stats).prepare_model().eval()
    case.variants[INT8] = Variant(INT8, qmodel, weight_bytes=weight_bytes(qmodel), bytes_note="as deployed")


def _add_compress_w8(case: Case, model: nn.Module, stats: Any) -> None:
    from compress.quant import PostTrainLinearQuantizer

    embeddings = [name for name, m in model.named_modules() if isinstance(m, nn.Embedding)]
    overrides = [{"match": "|".join(re.escape(n) for n in embeddings), "quantize": False}] if embeddings else []
    quantizer = PostTrainLinearQuantizer(
        model, stats=stats, bits_activations=None, bits_parameters=8, mode="symmetric", overrides=overrides
    )
    qmodel = quantizer.prepare_model().eval()
    nbytes, float_shared = deployed_bytes(qmodel)
    note = "as deployed"
    if float_shared:
        note += (
            f"; counts the fp32 weights of {', '.join(float_shared)} although a quantized module shares them "
            f"(`compress.utils.weight_bytes` counts them once, quantized: {weight_bytes(qmodel)} B)"
        )
    case.variants[W8] = Variant(W8, qmodel, weight_bytes=nbytes, bytes_note=note)


def deployed_bytes(qmodel: nn.Module) -> tuple[int, list[str]]:
    """Weight bytes of a quantized model where every float module keeps its own float weights.

    Like ``compress.utils.weight_bytes`` (wrappers report their deployed bytes, float parameters count
    as stored, each Parameter once), except that a float module's parameter also counts when a
    quantized wrapper uses the same Parameter: a tied embedding left float still needs its float copy.
    Returns the bytes and the names of the float modules whose shared weights were added.

    Example:
        >>> deployed_bytes(nn.Sequential(nn.Linear(2, 2)))
        (24, [])
    """
    wrappers = {name: m for name, m in qmodel.named_modules() if callable(getattr(m, "deployed_weight_bytes", None))}
    seen: set[int] = set()
    total = sum(int(m.deployed_weight_bytes(seen)) for m in wrappers.values())
    quantized = set(seen)
    counted: set[int] = set()
    shared = []
    for name, module in qmodel.named_modules():
        if any(name == w or name.startswith(w + ".") for w in wrappers):
            continue  # inside a wrapper: its float originals are not deployed
        for p in module.parameters(recurse=False):
            if id(p) in counted:
                continue
            counted.add(id(p))
            total += p.numel() * p.element_size()
            if id(p) in quantized and name not in shared:
                shared.append(name)
    return total, shared


def _add_torch_variants(case: Case, model: nn.Module, fp32_bytes: int) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dynamic = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    deprecations = sorted({str(w.message).splitlines()[0].strip() for w in caught if "deprecat" in str(w.message)})
    case.notes += [f'`quantize_dynamic` warns: "{m}"' for m in deprecations[:1]]
    case.variants[DYNAMIC] = Variant(
        DYNAMIC,
        dynamic.eval(),
        weight_bytes=state_dict_bytes(dynamic),
        bytes_note="torch.save(state_dict)",
    )
    support = autocast_support()
    for name, dtype in ((BF16, torch.bfloat16), (FP16, torch.float16)):
        case.variants[name] = Variant(
            name,
            model,
            context=lambda dtype=dtype: torch.autocast("cpu", dtype=dtype),
            weight_bytes=fp32_bytes,
            bytes_note="fp32 weights, cast per op at run time",
            note=support[dtype],
        )
