"""Per-layer quantization settings: the allowed keys, their validation and their canonical form.

The same keys serve the quantizer-level arguments and the override rules, so a value is checked the
same way wherever it is written. The canonical (resolved) settings of a layer are a plain dict:

=========================  ==================================================================
key                        value
=========================  ==================================================================
``bits_activations``       2..16 or None (None: activations stay float)
``bits_weights``           2..16 or None (None: weights stay float)
``bits_accum``             8..53 (signed accumulator; 53 is float64's exact integer range)
``mode_activations``       ``symmetric``, ``symmetric_restricted``, ``asymmetric_signed``,
``mode_weights``           ``asymmetric_unsigned``
``clip_acts``              ``none``, ``avg``, ``n_std``, ``gauss``, ``laplace``, ``percentile``, ``mse``
``clip_n_stds``            > 0 or None (needed by ``n_std``)
``clip_percentile``        (50, 100] or None (``percentile``; default 99.99)
``clip_half_range``        bool
``per_channel_wts``        bool
``scale_approx_mult_bits`` 1..32 or None
``precision``              None, ``fp16``, ``bf16``, ``fp32`` (run the module in that float type)
``quantize``               bool (False: leave the module untouched)
=========================  ==================================================================

Example:
    >>> normalize_rule_settings({"fp16": True, "mode": "ASYMMETRIC_SIGNED"}, "rule #0")
    {'mode_activations': 'asymmetric_signed', 'mode_weights': 'asymmetric_signed', 'precision': 'fp16'}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from compress.errors import QuantizationError
from compress.quant.numerics.clipping import parse_clip_mode
from compress.quant.numerics.primitives import MAX_BITS, MAX_EXACT_BITS, MIN_BITS, parse_mode

__all__ = [
    "OVERRIDE_KEYS",
    "PRECISIONS",
    "default_settings",
    "normalize_rule_settings",
    "check_layer_settings",
]

PRECISIONS = ("fp16", "bf16", "fp32")
_PRECISION_ALIASES = {"float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32", "float": "fp32"}

#: Keys an override rule may carry besides ``match``.
OVERRIDE_KEYS = (
    "bits_activations",
    "bits_weights",
    "bits_accum",
    "mode",
    "clip_acts",
    "clip_n_stds",
    "clip_percentile",
    "clip_half_range",
    "per_channel_wts",
    "scale_approx_mult_bits",
    "fp16",
    "bf16",
    "fp32",
    "precision",
    "none",
    "quantize",
)


def _int_in(low: int, high: int, allow_none: bool) -> Callable[[Any, str], int | None]:
    def check(value: Any, where: str) -> int | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            none = " or null" if allow_none else ""
            raise QuantizationError(f"{where}: expected an integer in [{low}, {high}]{none}, got {value!r}.")
        return value

    return check


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise QuantizationError(f"{where}: expected true or false, got {value!r}.")
    return value


def _positive_or_none(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise QuantizationError(f"{where}: expected a number > 0 or null, got {value!r}.")
    return float(value)


def _percentile(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 50 < value <= 100:
        raise QuantizationError(f"{where}: expected a percentile in (50, 100] or null, got {value!r}.")
    return float(value)


def _mode(value: Any, where: str) -> dict[str, str]:
    """``mode`` as ``{mode_activations, mode_weights}`` (a missing half of a mapping stays unset)."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"activations", "weights"}
        if unknown:
            raise QuantizationError(f"{where}: mode mapping takes 'activations' and 'weights', not {sorted(unknown)}.")
        return {f"mode_{k}": _one_mode(v, f"{where}.{k}") for k, v in value.items()}
    mode = _one_mode(value, where)
    return {"mode_activations": mode, "mode_weights": mode}


def _one_mode(value: Any, where: str) -> str:
    try:
        return parse_mode(value).value
    except QuantizationError as err:
        raise QuantizationError(f"{where}: {err}") from None


def _clip(value: Any, where: str) -> str:
    try:
        return parse_clip_mode(value).value
    except QuantizationError as err:
        raise QuantizationError(f"{where}: {err}") from None


def _precision(value: Any, where: str) -> str | None:
    text = None if value is None else _PRECISION_ALIASES.get(str(value).lower(), str(value).lower())
    if text in (None, "none"):
        return None
    if text not in PRECISIONS:
        raise QuantizationError(f"{where}: precision must be one of fp16, bf16, fp32, none; got {value!r}.")
    return text


_bits = _int_in(MIN_BITS, MAX_BITS, allow_none=True)
_SIMPLE: dict[str, Callable[[Any, str], Any]] = {
    "bits_activations": _bits,
    "bits_weights": _bits,
    "bits_accum": _int_in(8, MAX_EXACT_BITS, allow_none=False),
    "clip_acts": _clip,
    "clip_n_stds": _positive_or_none,
    "clip_percentile": _percentile,
    "clip_half_range": _bool,
    "per_channel_wts": _bool,
    "scale_approx_mult_bits": _int_in(1, 32, allow_none=True),
}


def default_settings(**args: Any) -> dict[str, Any]:
    """Canonical quantizer-level settings from the quantizer's arguments (validated).

    Args:
        **args: ``bits_activations, bits_parameters, bits_accum, mode, clip_acts, clip_n_stds,
            clip_percentile, clip_half_range, per_channel_wts, scale_approx_mult_bits``.

    Example:
        >>> default_settings(bits_activations=8, bits_parameters=4, mode="sym")["bits_weights"]
        4
    """
    raw = dict(args)
    raw["bits_weights"] = raw.pop("bits_parameters", 8)
    out: dict[str, Any] = {"bits_activations": 8, "bits_weights": 8, "bits_accum": 32}
    out.update(mode_activations="symmetric", mode_weights="symmetric", clip_acts="none", clip_n_stds=None)
    out.update(clip_percentile=None, clip_half_range=False, per_channel_wts=False, scale_approx_mult_bits=None)
    out.update(precision=None, quantize=True)
    for key, value in raw.items():
        if key == "mode":
            out.update(_mode(value, "mode"))
        elif key in _SIMPLE:
            out[key] = _SIMPLE[key](value, key)
        else:
            raise QuantizationError(f"Unknown quantizer argument {key!r}.")
    return out


def normalize_rule_settings(rule: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The canonical settings an override rule sets (``match`` excluded), validated.

    Raises:
        QuantizationError: unknown key (the message lists the allowed ones), bad value, or conflicting
            precision / quantize keys.

    Example:
        >>> normalize_rule_settings({"none": True}, "rule #1")
        {'quantize': False}
    """
    unknown = sorted(set(rule) - set(OVERRIDE_KEYS))
    if unknown:
        raise QuantizationError(
            f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}. Allowed: match, {', '.join(OVERRIDE_KEYS)}."
        )
    out: dict[str, Any] = {}
    for key, value in rule.items():
        if key == "mode":
            out.update(_mode(value, f"{where}.mode"))
        elif key in _SIMPLE:
            out[key] = _SIMPLE[key](value, f"{where}.{key}")
    _precision_and_quantize(rule, where, out)
    return out


def _precision_and_quantize(rule: Mapping[str, Any], where: str, out: dict[str, Any]) -> None:
    """Fold ``fp16/bf16/fp32: true``, ``precision`` and ``none``/``quantize`` into two canonical keys."""
    chosen = [p for p in PRECISIONS if _bool(rule.get(p, False), f"{where}.{p}")]
    if "precision" in rule:
        chosen.append(_precision(rule["precision"], f"{where}.precision") or "none")
    if len(set(chosen)) > 1:
        raise QuantizationError(f"{where}: conflicting precisions {chosen}; give one of fp16, bf16, fp32.")
    if chosen:
        out["precision"] = None if chosen[0] == "none" else chosen[0]
    skip = _bool(rule.get("none", False), f"{where}.none")
    keep = _bool(rule.get("quantize", True), f"{where}.quantize")
    if "none" in rule and "quantize" in rule and skip == keep:
        raise QuantizationError(f"{where}: 'none: {skip}' contradicts 'quantize: {keep}'.")
    if "none" in rule or "quantize" in rule:
        out["quantize"] = not skip and keep
    if out.get("quantize") is False and out.get("precision"):
        raise QuantizationError(f"{where}: 'none'/'quantize: false' leaves the module untouched; drop the precision.")


def check_layer_settings(settings: Mapping[str, Any], name: str) -> None:
    """Cross-field checks on a layer's resolved settings (e.g. ``n_std`` needs ``clip_n_stds``).

    Example:
        >>> check_layer_settings(default_settings(clip_acts="n_std", clip_n_stds=2.0), "fc")
    """
    if settings["clip_acts"] == "n_std" and settings["clip_n_stds"] is None:
        raise QuantizationError(f"{name}: clip_acts 'n_std' needs clip_n_stds (e.g. clip_n_stds: 3).")
    mult = settings["scale_approx_mult_bits"]
    if mult is not None and mult + settings["bits_accum"] > MAX_EXACT_BITS:
        raise QuantizationError(
            f"{name}: scale_approx_mult_bits ({mult}) + bits_accum ({settings['bits_accum']}) exceeds "
            f"{MAX_EXACT_BITS}, beyond exact float64 simulation; lower one of them."
        )
