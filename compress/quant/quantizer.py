"""``PostTrainLinearQuantizer`` (registered as ``post_train_linear``): range-linear PTQ from calibrated stats.

Flow of :meth:`PostTrainLinearQuantizer.prepare_model`: resolve the plan (no module touched) ->
copy the stats (net-aware clipping on the copy when asked) -> check every layer that needs stats
has them -> deep-copy the model -> build each wrapper (weights shared by several modules are
quantized once) -> put it at every path of the replaced module. The user's model and stats are
never modified.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    >>> rec = {"min": -1.0, "max": 1.0}
    >>> stats = {"0": {"inputs": {0: rec}, "output": rec}, "1": {"inputs": {0: rec}, "output": rec}}
    >>> q = PostTrainLinearQuantizer(model, stats)
    >>> [type(m).__name__ for m in q.prepare_model()]
    ['LinearQuantWrapper', 'FakeQuantWrapper']
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from compress.errors import QuantizationError
from compress.quant.config.netaware import net_aware_clip, plain_copy
from compress.quant.config.plan import LayerPlan, resolve_plan
from compress.quant.config.schema import POST_TRAIN_LINEAR_SCHEMA
from compress.quant.config.settings import default_settings
from compress.quant.fused.attach import attach_fused_loops
from compress.quant.kernels.dispatch import check_mode
from compress.quant.records import FloatReference, layer_rows, sqnr_by_layer
from compress.quant.wrappers.factory import BuildContext, build_wrapper, is_wrapper
from compress.registry import QUANTIZERS

__all__ = ["PostTrainLinearQuantizer", "replace_module", "module_paths", "run_records"]

_NEEDS_STATS = ("linear", "eltwise_add", "eltwise_mult", "concat", "fake")


def module_paths(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """``id(module)`` -> every (parent, attribute) holding it (a shared module has several).

    Example:
        >>> t = nn.Tanh()
        >>> len(module_paths(nn.Sequential(t, t))[id(t)])
        2
    """
    paths: dict[int, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for attr, child in parent._modules.items():  # named_children() would hide the second path
            if child is not None:
                paths.setdefault(id(child), []).append((parent, attr))
    return paths


def replace_module(paths: dict[int, list[tuple[nn.Module, str]]], old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``old`` was (``paths`` from :func:`module_paths`).

    Example:
        >>> seq = nn.Sequential(nn.Tanh())
        >>> replace_module(module_paths(seq), seq[0], nn.Sigmoid()); seq
        Sequential(
          (0): Sigmoid()
        )
    """
    for parent, attr in paths[id(old)]:
        setattr(parent, attr, new)


def run_records(
    float_model: nn.Module,
    qmodel: nn.Module,
    plans: list[LayerPlan],
    run: Callable[[nn.Module], None],
    reference: FloatReference | None = None,
) -> list[dict[str, Any]]:
    """Report rows after running one batch through both models (saturation counted in ``qmodel``).

    Args:
        float_model: the unquantized model the SQNR is measured against (never modified).
        qmodel: its quantized copy.
        plans: one row per entry.
        run: pushes the batch through the model it is given.
        reference: ``float_model``'s outputs on the same batch, captured once for many calls (a study
            shares one across experiments); None captures them here.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Tanh())
        >>> q = PostTrainLinearQuantizer(model, {"0": {"output": {"min": -1.0, "max": 1.0}}})
        >>> rows = run_records(model, q.prepare_model(), q.resolve_plan(), lambda m: m(torch.ones(3)))
        >>> rows[0]["saturation_pct"], rows[0]["calls"]
        (0.0, 1)
    """
    if reference is None:
        reference = FloatReference(float_model, run)
    elif reference.model is not float_model:
        # Rows against another model's outputs would be plausible-looking nonsense.
        raise ValueError("run_records: the reference was captured from another model than float_model.")
    outputs = reference.outputs([p.name for p in plans])
    qmodel.eval()
    try:
        for m in qmodel.modules():
            if hasattr(m, "reset_tracking"):
                m.reset_tracking(True)
        sqnr = sqnr_by_layer(outputs, qmodel, run)
        return layer_rows(plans, qmodel, sqnr)
    finally:
        for m in qmodel.modules():
            if hasattr(m, "reset_tracking"):
                m.track_saturation = False


@QUANTIZERS.register(
    "post_train_linear",
    schema=POST_TRAIN_LINEAR_SCHEMA,
    description="Range-linear post-training quantization from calibration stats, simulated exactly.",
)
class PostTrainLinearQuantizer:
    """Range-linear post-training quantizer with ordered per-module overrides.

    Args:
        model: the float model (converted with ``rnn_to_modular`` for RNN internals); never modified.
        stats: ``name -> {"inputs": {i: record}, "output": record}`` (any Mapping in that layout).
        bits_activations: activation bits (2..16) or None.
        bits_parameters: weight bits (2..16) or None.
        bits_accum: accumulator bits (8..53).
        mode: ``symmetric`` | ``symmetric_restricted`` | ``asymmetric_signed`` | ``asymmetric_unsigned``
            or ``{activations, weights}`` (upper-case old names accepted).
        clip_acts: ``none`` | ``avg`` | ``n_std`` | ``gauss`` | ``laplace`` | ``percentile`` | ``mse``.
        clip_n_stds: n for ``n_std``.
        clip_half_range: ReLU-like outputs.
        per_channel_wts: per-output-channel weight scales for Linear/Conv (embeddings: only via their rule).
        scale_approx_mult_bits: integer multiply-and-shift scales.
        overrides: ordered rules ``[{match: regex, ...settings}]`` (see compress/quant/config/plan.py).
        allow_unmatched: accept rules that apply to no module.
        net_aware_clip: clip ranges feeding sigmoid/tanh (see compress/quant/config/netaware.py).
        legacy_symmetric: the old tool's symmetric formula (reproduces the notebook's scales).
        missing_stats: ``error`` or ``warn`` (the layer is left float and the row says so).
        clip_percentile: percentile for ``percentile`` clipping.
        integer_kernels: ``auto`` runs products as real integer kernels (exact int8 x int8 -> int32 products on
            the backend measured fastest on this CPU, int32 element-wise products) wherever that is exact;
            ``int_mm``, ``fp32`` or ``c`` forces one int8 backend; ``off`` always emulates in float64. The
            outputs are the same bits either way (the per-layer row's ``kernel`` says which ran; see
            compress/quant/kernels/dispatch.py, and ``COMPRESS_INTEGER_KERNELS`` overrides it).

    Example:
        >>> q = PostTrainLinearQuantizer(nn.Sequential(nn.Linear(2, 2)), mode="ASYMMETRIC_SIGNED")
        >>> q.resolve_plan()[0].settings["mode_weights"]
        'asymmetric_signed'
    """

    def __init__(
        self,
        model: nn.Module,
        stats: Mapping[str, Any] | None = None,
        bits_activations: int | None = 8,
        bits_parameters: int | None = 8,
        bits_accum: int = 32,
        mode: Any = "symmetric",
        clip_acts: str = "none",
        clip_n_stds: float | None = None,
        clip_half_range: bool = False,
        per_channel_wts: bool = False,
        scale_approx_mult_bits: int | None = None,
        overrides: Sequence[Mapping[str, Any]] | None = None,
        allow_unmatched: bool = False,
        net_aware_clip: bool = False,
        legacy_symmetric: bool = False,
        missing_stats: str = "error",
        clip_percentile: float | None = None,
        integer_kernels: str = "auto",
    ) -> None:
        if missing_stats not in ("error", "warn"):
            raise QuantizationError(f"missing_stats must be 'error' or 'warn', got {missing_stats!r}.")
        self.integer_kernels = check_mode(integer_kernels)
        self.model, self.stats = model, stats
        self.defaults = default_settings(
            bits_activations=bits_activations,
            bits_parameters=bits_parameters,
            bits_accum=bits_accum,
            mode=mode,
            clip_acts=clip_acts,
            clip_n_stds=clip_n_stds,
            clip_percentile=clip_percentile,
            clip_half_range=clip_half_range,
            per_channel_wts=per_channel_wts,
            scale_approx_mult_bits=scale_approx_mult_bits,
        )
        self.overrides = list(overrides or [])
        self.allow_unmatched, self.net_aware_clip = bool(allow_unmatched), bool(net_aware_clip)
        self.legacy_symmetric, self.missing_stats = bool(legacy_symmetric), missing_stats
        self.log: list[str] = []

    def resolve_plan(self) -> list[LayerPlan]:
        """The per-layer plan (no stats needed, nothing touched); see compress/quant/config/plan.py.

        Example:
            >>> q = PostTrainLinearQuantizer(nn.Sequential(nn.Linear(2, 2)), overrides=[{"match": "0", "fp16": True}])
            >>> q.resolve_plan()[0].kind
            'float'
        """
        if any(is_wrapper(m) for m in self.model.modules()):
            raise QuantizationError("The model already contains quantization wrappers; quantize the float model.")
        return resolve_plan(self.model, self.overrides, self.defaults, self.allow_unmatched)

    def effective_stats(self) -> dict[str, Any]:
        """A plain copy of the stats, net-aware clipped when asked (the clips are appended to ``log``).

        Example:
            >>> PostTrainLinearQuantizer(nn.Sequential(nn.Tanh())).effective_stats()
            {}
        """
        stats = self.stats or {}
        if not self.net_aware_clip:
            return plain_copy(stats)
        clipped, log = net_aware_clip(self.model, stats)
        self.log.extend(log)
        return clipped

    def final_plan(self, stats: Mapping[str, Any]) -> list[LayerPlan]:
        """The plan with layers lacking stats handled per ``missing_stats`` (error, or float + warning).

        Example:
            >>> q = PostTrainLinearQuantizer(nn.Sequential(nn.Tanh()), missing_stats="warn")
            >>> q.final_plan({})[0].kind
            'none'
        """
        plans = self.resolve_plan()
        plans = _leave_float(plans, set(getattr(self.stats, "never_ran", ())), self.log)
        missing = [p.name for p in plans if p.kind in _NEEDS_STATS and p.name not in stats]
        if not missing:
            return plans
        if self.missing_stats == "error":
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
            raise QuantizationError(
                f"No statistics for {len(missing)} module(s) that need them: {shown}. Collect stats on this "
                "(converted) model, leave these modules float with an override {match: ..., none: true}, "
                "or set missing_stats: warn."
            )
        note = "no statistics: left in float (missing_stats: warn)"
        warnings.warn(f"Quantizer: {note} for {', '.join(missing)}", stacklevel=2)
        self.log.append(f"{note}: {', '.join(missing)}")
        return [dataclasses.replace(p, kind="none", note=note) if p.name in missing else p for p in plans]

    def prepare_model(self) -> nn.Module:
        """A quantized deep copy of the model (the model itself is never modified).

        Example:
            >>> q = PostTrainLinearQuantizer(nn.Sequential(nn.Tanh()), bits_activations=None)
            >>> type(q.prepare_model()[0]).__name__
            'Tanh'
        """
        return self._prepare()[0]

    def _prepare(self) -> tuple[nn.Module, list[LayerPlan]]:
        self.log = []
        stats = self.effective_stats()
        plans = self.final_plan(stats)
        model = copy.deepcopy(self.model)
        modules, paths = dict(model.named_modules()), module_paths(model)
        ctx = BuildContext(legacy_symmetric=self.legacy_symmetric, integer_kernels=self.integer_kernels)
        for plan in plans:
            wrapper = build_wrapper(modules[plan.name], plan, stats.get(plan.name), ctx)
            if wrapper is not None:
                replace_module(paths, modules[plan.name], wrapper)
        # A cell left to run op by op is slower; the report says why (an fp16 op inside it, wider grids, ...).
        self.log += [f"{cell}: no fused integer loop ({why})" for cell, why in attach_fused_loops(model).items()]
        return model, plans

    def layer_records(
        self, run: Callable[[nn.Module], None], reference: FloatReference | None = None
    ) -> list[dict[str, Any]]:
        """Per-layer rows (settings, scales, clip range, saturation %, SQNR dB) from one batch.

        Args:
            run: pushes one calibration batch through the model it is given.
            reference: this quantizer's ``model`` outputs on the same batch, shared across quantizers
                (the engine captures one per study); None runs the float model here.

        Example:
            >>> import torch
            >>> q = PostTrainLinearQuantizer(nn.Sequential(nn.Tanh()), {"0": {"output": {"min": -1.0, "max": 1.0}}})
            >>> row = q.layer_records(lambda m: m(torch.linspace(-2, 2, 50)))[0]
            >>> row["bits"], row["sqnr_db"] > 40
            ('a8', True)
        """
        qmodel, plans = self._prepare()
        return run_records(self.model, qmodel, plans, run, reference)


def _leave_float(plans: list[LayerPlan], never_ran: set[str], log: list[str]) -> list[LayerPlan]:
    """Modules that did not run during calibration cannot get ranges; they stay float, said in the row.

    (e.g. a sampling-only softmax that teacher-forced calibration never calls.)
    """
    # Why, in the note itself: the report shows it on every experiment that quantizes such a model.
    note = (
        "not called during calibration, so it has no ranges: left in float (e.g. a softmax used only for "
        "sampling; a metric that never calls it is unaffected)"
    )
    hit = [p.name for p in plans if p.name in never_ran and p.kind in _NEEDS_STATS]
    if hit:
        log.append(f"{note}: {', '.join(hit)}")
    return [dataclasses.replace(p, kind="none", note=note) if p.name in hit else p for p in plans]
