r"""The quantization plan: which wrapper every leaf module gets, with which settings, and why.

Overrides are an **ordered list** of rules ``{match: <regex>, <setting>: <value>, ...}``. For every
leaf module (containers, ``nn.Identity`` and dropout are skipped) the rules are tried in order with
``re.fullmatch`` on the module's name; **the first matching rule wins**. Rules are never merged: a
setting the winning rule does not give comes from the quantizer-level arguments, never from a later
(or earlier) rule. Regexes may contain capture groups.

A rule that matches no module, or whose every match was already taken by an earlier rule (it can
never apply), is a :class:`~compress.errors.QuantizationError` unless ``allow_unmatched`` is set
(its ``rule`` is the rule's index, so the engine can point at the rule's own line in the schedule);
an unknown setting is an error listing the allowed ones.

Worked example, with quantizer arguments ``bits_activations=8, mode="symmetric",
per_channel_wts=True`` and::

    overrides = [
        {"match": r"rnn\.cells\.0\..*", "bits_activations": 16},     # rule 0
        {"match": r".*eltwise.*", "fp16": True},                     # rule 1
        {"match": r"decoder", "mode": "asymmetric_signed"},          # rule 2
    ]

* ``rnn.cells.0.eltwiseadd_gate`` matches rules 0 and 1; rule 0 comes first, so it is an integer
  add with 16-bit activations, **not** fp16 (put rule 1 first to make every eltwise op fp16);
* ``rnn.cells.1.eltwiseadd_gate`` matches only rule 1: it runs in fp16;
* ``decoder`` gets rule 2: asymmetric_signed activations and weights, 8 bits and per-channel
  weights from the quantizer arguments;
* ``rnn.cells.1.fc_gate_x`` matches nothing: quantizer arguments only.

The quantizer-level ``per_channel_wts`` applies to Linear/Conv weights; an ``nn.Embedding`` table
is per tensor unless its winning rule sets ``per_channel_wts: true`` (one scale per row).

The plan is resolved from ``model.named_modules()`` before any module is touched.

Example:
    >>> from torch import nn
    >>> from compress.quant.config.settings import default_settings
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    >>> [(p.name, p.kind, p.rule) for p in resolve_plan(model, [{"match": "1", "none": True}], default_settings())]
    [('0', 'linear', None), ('1', 'none', 0)]
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compress.errors import QuantizationError
from compress.modules.ops import Concat, EltwiseAdd, EltwiseMult
from compress.quant.config.settings import check_layer_settings, normalize_rule_settings

__all__ = ["LayerPlan", "Rule", "parse_rules", "resolve_plan", "plan_leaves", "layer_kind", "KINDS"]

#: Every kind of layer treatment (see compress/quant/wrappers/factory.py).
KINDS = ("linear", "weights_only", "embedding", "eltwise_add", "eltwise_mult", "concat", "fake", "float", "none")

PARAM_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
_OP_KINDS: dict[type[nn.Module], str] = {EltwiseAdd: "eltwise_add", EltwiseMult: "eltwise_mult", Concat: "concat"}
_SKIPPED: tuple[type[nn.Module], ...] = (nn.Identity, nn.modules.dropout._DropoutNd)
_UNCONVERTED = (nn.RNNBase, nn.RNNCellBase)


@dataclass(frozen=True)
class Rule:
    """One override rule: its position, regex, text for reports and canonical settings."""

    index: int
    pattern: re.Pattern[str]
    text: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class LayerPlan:
    """What happens to one leaf module.

    Attributes:
        name: module name in ``model.named_modules()``.
        module_type: class name of the module.
        rule: index of the winning override rule, or None (quantizer arguments only).
        rule_text: the winning rule as written (``"#1 .*eltwise.* fp16=True"``), or "".
        kind: one of :data:`KINDS`.
        settings: the effective canonical settings (see compress/quant/config/settings.py).
        note: why the kind is what it is, when that is not obvious.
    """

    name: str
    module_type: str
    rule: int | None
    rule_text: str
    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def parse_rules(overrides: Sequence[Mapping[str, Any]] | None) -> list[Rule]:
    """Validate and compile override rules (each needs a ``match`` regex; settings are checked).

    Example:
        >>> parse_rules([{"match": "(enc|dec)oder", "fp16": True}])[0].settings
        {'precision': 'fp16'}
    """
    if overrides is None:
        return []
    if isinstance(overrides, Mapping) or not isinstance(overrides, Iterable):
        raise QuantizationError("overrides must be a list of rules like [{match: '<regex>', fp16: true}].")
    return [_parse_rule(i, raw) for i, raw in enumerate(overrides)]


def _parse_rule(index: int, raw: Any) -> Rule:
    where = f"override rule #{index}"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("match"), str):
        raise QuantizationError(f"{where}: a rule is a mapping with a 'match' regex, got {raw!r}.")
    body = {k: v for k, v in raw.items() if k != "match"}
    try:
        pattern = re.compile(raw["match"])
    except re.error as err:
        raise QuantizationError(f"{where}: bad regex {raw['match']!r}: {err}.") from None
    settings = normalize_rule_settings(body, where)
    text = f"#{index} {raw['match']} " + " ".join(f"{k}={v}" for k, v in body.items())
    return Rule(index, pattern, text.strip(), settings)


def plan_leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules a plan covers: leaves (no children), minus Identity and dropout, each instance once.

    Example:
        >>> [n for n, _ in plan_leaves(nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Sequential(nn.Tanh())))]
        ['0', '2.0']
    """
    leaves = []
    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()) and not isinstance(module, _SKIPPED):
            leaves.append((name, module))
    return leaves


def layer_kind(module: nn.Module, settings: Mapping[str, Any]) -> tuple[str, str]:
    """The kind of wrapper for ``module`` under ``settings``, and a note explaining a non-obvious choice.

    Example:
        >>> from compress.quant.config.settings import default_settings
        >>> layer_kind(nn.Linear(2, 2), default_settings(bits_parameters=None))
        ('fake', 'weights stay float: only the output is quantized')
    """
    acts, wts = settings["bits_activations"], settings["bits_weights"]
    if not settings["quantize"]:
        return "none", "left untouched by rule"
    if settings["precision"]:
        return "float", ""
    if isinstance(module, _UNCONVERTED):
        return "none", "PyTorch RNN internals cannot be quantized; convert it first (converter rnn_to_modular)"
    if type(module) in PARAM_TYPES:
        return _param_kind(acts, wts)
    if type(module) is nn.Embedding:
        return ("embedding", "") if wts is not None else ("none", "bits_weights is null")
    kind = _OP_KINDS.get(type(module), "fake")
    return (kind, "") if acts is not None else ("none", "bits_activations is null")


def _param_kind(acts: int | None, wts: int | None) -> tuple[str, str]:
    if acts is not None and wts is not None:
        return "linear", ""
    if wts is not None:
        return "weights_only", "activations stay float: weights are fake-quantized"
    if acts is not None:
        return "fake", "weights stay float: only the output is quantized"
    return "none", "bits_activations and bits_weights are null"


def resolve_plan(
    model: nn.Module,
    overrides: Sequence[Mapping[str, Any]] | None,
    defaults: Mapping[str, Any],
    allow_unmatched: bool = False,
) -> list[LayerPlan]:
    """The plan for every leaf of ``model`` (first matching rule wins; see module doc).

    Args:
        model: the (converted) float model; it is only read.
        overrides: ordered rules ``{match: regex, ...settings}``.
        defaults: canonical quantizer-level settings (:func:`compress.quant.config.settings.default_settings`).
        allow_unmatched: accept rules that never apply instead of raising.

    Example:
        >>> from compress.quant.config.settings import default_settings
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        >>> [p.kind for p in resolve_plan(model, [{"match": "0", "bf16": True}], default_settings())]
        ['float', 'fake']
    """
    rules = parse_rules(overrides)
    leaves = plan_leaves(model)
    plans, won = [], set()
    for name, module in leaves:
        rule = next((r for r in rules if r.pattern.fullmatch(name)), None)
        won.add(rule.index if rule else None)
        plans.append(_layer_plan(name, module, rule, defaults))
    if not allow_unmatched:
        _check_rules_apply(rules, won, [n for n, _ in leaves])
    return plans


def _layer_plan(name: str, module: nn.Module, rule: Rule | None, defaults: Mapping[str, Any]) -> LayerPlan:
    settings = {**defaults, **(rule.settings if rule else {})}
    if type(module) is nn.Embedding and "per_channel_wts" not in (rule.settings if rule else {}):
        # The quantizer-level per_channel_wts is for Linear/Conv (as in the old tool); an embedding
        # table is per tensor unless its own rule asks for per-row scales.
        settings["per_channel_wts"] = False
    check_layer_settings(settings, name)
    kind, note = layer_kind(module, settings)
    rule_index, rule_text = (rule.index, rule.text) if rule else (None, "")
    return LayerPlan(name, type(module).__name__, rule_index, rule_text, kind, settings, note)


def _check_rules_apply(rules: list[Rule], won: set[int | None], names: list[str]) -> None:
    for rule in rules:
        if rule.index in won:
            continue
        hits = [n for n in names if rule.pattern.fullmatch(n)]
        if hits:
            raise QuantizationError(
                f"Override rule {rule.text!r} never applies: every module it matches ({', '.join(hits[:5])}) is "
                "taken by an earlier rule (the first matching rule wins). Move it before the broader rule, "
                "or set allow_unmatched: true.",
                rule=rule.index,
            )
        close = difflib.get_close_matches(rule.pattern.pattern, names, n=3, cutoff=0.5) or names[:3]
        raise QuantizationError(
            f"Override rule {rule.text!r} matches no module (re.fullmatch on the full name). "
            f"Module names look like: {', '.join(close)}. Fix the regex or set allow_unmatched: true.",
            rule=rule.index,
        )
