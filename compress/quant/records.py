"""Per-layer report rows: settings, scales, saturation and SQNR of each planned module.

SQNR compares each module's output in the quantized model with the same module's output in the
float model on the same calibration batch (forward hooks on matching names; the ``k``-th call of a
module in one model is paired with its ``k``-th call in the other, so an LSTM cell's per-step calls
pair up): ``10 log10(sum ref^2 / sum (ref - quant)^2)`` over all calls, in float64. It measures the
error accumulated up to that point, not the module's own error alone.

The float side does not depend on the quantizer, so a study captures it once in a
:class:`FloatReference` and hands that to every experiment's rows; only the quantized model runs
per experiment.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from compress.quant.config.plan import LayerPlan
from compress.quant.config.settings import default_settings

__all__ = [
    "ROW_KEYS",
    "FloatReference",
    "bits_text",
    "mode_text",
    "clip_text",
    "plan_summary",
    "capture_outputs",
    "sqnr_by_layer",
    "layer_rows",
]

ROW_KEYS = (
    "module",
    "type",
    "kind",
    "kernel",
    "rule",
    "bits",
    "mode",
    "clip",
    "per_channel",
    "weight_scale",
    "weight_scale_min",
    "weight_scale_max",
    "weight_zero_point",
    "input_scale",
    "input_zero_point",
    "output_scale",
    "output_zero_point",
    "clip_range",
    "saturation_pct",
    "sqnr_db",
    "calls",
    "rule_text",
    "note",
)

_DEFAULTS = default_settings()
_USES_ACTS = ("linear", "eltwise_add", "eltwise_mult", "concat", "fake")
_USES_WTS = ("linear", "weights_only", "embedding")


def bits_text(plan: LayerPlan) -> str:
    """Bit widths as shown in reports: ``a8 w8 acc32``, ``a8``, ``w4``, ``fp16`` or ``-``.

    Example:
        >>> from compress.quant.config.settings import default_settings
        >>> bits_text(LayerPlan("fc", "Linear", None, "", "linear", default_settings()))
        'a8 w8 acc32'
    """
    s, kind = plan.settings, plan.kind
    if kind == "float":
        return s["precision"]
    parts = [f"a{s['bits_activations']}"] if kind in _USES_ACTS else []
    parts += [f"w{s['bits_weights']}"] if kind in _USES_WTS else []
    parts += [f"acc{s['bits_accum']}"] if kind not in ("fake", "weights_only", "embedding", "none") else []
    return " ".join(parts) or "-"


def mode_text(plan: LayerPlan) -> str:
    """The mode(s) in use: ``activations/weights`` when they differ, one name otherwise, or ``""``.

    Example:
        >>> from compress.quant.config.settings import default_settings
        >>> mode_text(LayerPlan("fc", "Linear", None, "", "linear", default_settings(mode={"weights": "asym_u"})))
        'symmetric/asymmetric_unsigned'
    """
    s = plan.settings
    acts = s["mode_activations"] if plan.kind in _USES_ACTS else None
    wts = s["mode_weights"] if plan.kind in _USES_WTS else None
    if acts and wts and acts != wts:
        return f"{acts}/{wts}"
    return acts or wts or ""


def clip_text(plan: LayerPlan) -> str:
    """The activation clip mode with its parameter (``n_std(2)``, ``percentile(99.9)``, ``+half``).

    Example:
        >>> from compress.quant.config.settings import default_settings
        >>> clip_text(LayerPlan("f", "Tanh", None, "", "fake", default_settings(clip_acts="n_std", clip_n_stds=2)))
        'n_std(2)'
    """
    s = plan.settings
    if plan.kind not in _USES_ACTS:
        return ""
    text = s["clip_acts"]
    if text == "n_std":
        text += f"({s['clip_n_stds']:g})"
    if text == "percentile" and s["clip_percentile"] is not None:
        text += f"({s['clip_percentile']:g})"
    return text + ("+half" if s["clip_half_range"] else "")


def plan_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A plan entry (a :class:`LayerPlan` as a dict) in the per-layer report's terms, for ``--plan``.

    Example:
        >>> from compress.quant.config.settings import default_settings
        >>> plan = LayerPlan("fc", "Linear", None, "", "linear", default_settings(per_channel_wts=True))
        >>> row = plan_summary(vars(plan))
        >>> row["bits"], row["mode"], row["clip"], row["per_channel"]
        ('a8 w8 acc32', 'symmetric', 'none', True)
    """
    plan = LayerPlan(**{k: row[k] for k in ("name", "module_type", "rule", "rule_text", "kind", "settings", "note")})
    full = {**_DEFAULTS, **plan.settings}  # cast plans carry only their precision
    shown = LayerPlan(plan.name, plan.module_type, plan.rule, plan.rule_text, plan.kind, full, plan.note)
    return {
        "module": plan.name,
        "type": plan.module_type,
        "kind": plan.kind,
        "rule": plan.rule_text or plan.rule,
        "bits": bits_text(shown),
        "mode": mode_text(shown),
        "clip": clip_text(shown),
        "per_channel": full["per_channel_wts"] if plan.kind in _USES_WTS else None,
        "note": plan.note,
    }


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _hooked(model: nn.Module, names: Iterable[str], fn: Callable[[str, Any], None]) -> list[Any]:
    modules = dict(model.named_modules())
    return [modules[n].register_forward_hook(lambda _m, _i, out, n=n: fn(n, out)) for n in names if n in modules]


def _run_hooked(
    model: nn.Module, names: Iterable[str], fn: Callable[[str, Any], None], run: Callable[[nn.Module], None]
) -> None:
    """``run(model)`` without gradients while ``fn(name, output)`` sees every call of the named modules."""
    handles = _hooked(model, names, fn)
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in handles:
            h.remove()


def capture_outputs(model: nn.Module, names: list[str], run: Callable[[nn.Module], None]) -> dict[str, list]:
    """Outputs (float tensors, detached) of each named module, one list entry per call, during ``run(model)``.

    Example:
        >>> m = nn.Sequential(nn.Tanh())
        >>> len(capture_outputs(m, ["0"], lambda mm: mm(torch.zeros(2)))["0"])
        1
    """
    seen: dict[str, list] = {n: [] for n in names}
    _run_hooked(model, names, lambda n, out: seen[n].append([t.detach().clone() for t in _tensors(out)]), run)
    return seen


class FloatReference:
    """The float model's per-module outputs on one batch, captured once and reused by every caller.

    Outputs are captured on the first request (the model in eval mode, its mode restored after);
    a later request for names already held runs nothing, and one that adds names runs the model once
    for the new names only. The model is never modified; the outputs are kept for the object's life.

    Args:
        model: the float model (the quantizers' ``model``); compared by identity by :func:`run_records`.
        run: pushes the batch through the model it is given, as ``layer_records(run)`` does.

    Example:
        >>> m = nn.Sequential(nn.Tanh())
        >>> ref = FloatReference(m, lambda mm: mm(torch.ones(2)))
        >>> len(ref.outputs(["0"])["0"]), len(ref.outputs(["0"])["0"]), ref.captures
        (1, 1, 1)
    """

    def __init__(self, model: nn.Module, run: Callable[[nn.Module], None]) -> None:
        self.model, self.run = model, run
        self.captures = 0  # how many times the model ran (tests check it stays at one per study)
        self._outputs: dict[str, list] = {}

    def outputs(self, names: Iterable[str]) -> dict[str, list]:
        """Captured outputs of ``names`` (as :func:`capture_outputs`), running the model only for new names.

        Example:
            >>> ref = FloatReference(nn.Sequential(nn.Tanh(), nn.Tanh()), lambda mm: mm(torch.ones(2)))
            >>> sorted(ref.outputs(["0", "1"])), ref.captures
            (['0', '1'], 1)
        """
        wanted = list(dict.fromkeys(names))
        missing = [n for n in wanted if n not in self._outputs]
        if missing:
            was_training = self.model.training
            self.model.eval()  # SQNR against a model with live dropout would measure the dropout
            try:
                self._outputs.update(capture_outputs(self.model, missing, self.run))
            finally:
                self.model.train(was_training)
            self.captures += 1
        return {n: self._outputs[n] for n in wanted}


# Sum of squares of each reference output, computed once: every experiment of a study compares against
# the same captured outputs. Keyed by id with a weak reference, so an entry dies with its tensor.
_ENERGIES: dict[int, tuple[weakref.ref, float]] = {}


def _energy(ref: torch.Tensor) -> float:
    """``sum(ref ** 2)`` of a reference output in float64, cached per tensor."""
    key = id(ref)
    hit = _ENERGIES.get(key)
    if hit is not None and hit[0]() is ref:
        return hit[1]
    value = float((ref.to(torch.float64) ** 2).sum())
    _ENERGIES[key] = (weakref.ref(ref, lambda _dead, key=key: _ENERGIES.pop(key, None)), value)
    return value


def sqnr_by_layer(
    reference: dict[str, list], model: nn.Module, run: Callable[[nn.Module], None]
) -> dict[str, tuple[float | None, int]]:
    """SQNR (dB) of each module's outputs in ``model`` against ``reference`` calls, and the call count.

    Example:
        >>> m = nn.Sequential(nn.Tanh())
        >>> ref = capture_outputs(m, ["0"], lambda mm: mm(torch.ones(2)))
        >>> sqnr_by_layer(ref, m, lambda mm: mm(torch.ones(2)))
        {'0': (inf, 1)}
    """
    sums = {n: [0.0, 0.0, 0] for n in reference}

    def compare(name: str, out: Any) -> None:
        acc, calls = sums[name], reference[name]
        if acc[2] < len(calls):
            for ref, got in zip(calls[acc[2]], _tensors(out), strict=False):
                acc[0] += _energy(ref)
                # got64 - ref promotes ref to float64 element by element (exact), as ref.to(float64) would,
                # without a second float64 copy; squaring the negated difference gives the same bits.
                acc[1] += float((got.detach().to(ref.device, torch.float64) - ref).square_().sum())
        acc[2] += 1

    _run_hooked(model, reference, compare, run)
    return {n: (_db(sig, noise) if calls else None, calls) for n, (sig, noise, calls) in sums.items()}


def _db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def layer_rows(
    plans: list[LayerPlan], qmodel: nn.Module, sqnr: dict[str, tuple[float | None, int]]
) -> list[dict[str, Any]]:
    """One report row per plan entry (keys :data:`ROW_KEYS`), reading scales from the wrappers in ``qmodel``.

    Example:
        >>> from compress.quant.config.settings import default_settings
        >>> plan = LayerPlan("0", "Tanh", None, "", "none", default_settings())
        >>> layer_rows([plan], nn.Sequential(nn.Tanh()), {"0": (None, 0)})[0]["bits"]
        '-'
    """
    modules = dict(qmodel.named_modules())
    rows = []
    for p in plans:
        module = modules.get(p.name)
        describe = getattr(module, "describe", None)
        sat = getattr(module, "saturation_pct", None)
        row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
        row.update(module=p.name, type=p.module_type, kind=p.kind, rule=p.rule, rule_text=p.rule_text)
        row.update(bits=bits_text(p), mode=mode_text(p), clip=clip_text(p))
        row.update(per_channel=p.settings["per_channel_wts"] if p.kind in _USES_WTS else None)
        row.update(describe() if callable(describe) else {})
        row.update(saturation_pct=sat() if callable(sat) else None)
        row.update(sqnr_db=sqnr.get(p.name, (None, 0))[0], calls=sqnr.get(p.name, (None, 0))[1])
        # A wrapper's note already includes the plan's (plus e.g. weight tying); unwrapped modules have none.
        row["note"] = getattr(module, "note", None) or p.note or None
        rows.append(row)
    return rows
