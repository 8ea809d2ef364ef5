"""JSON schemas of the quantizers' ``args`` (strict: ``additionalProperties: false`` everywhere).

Example:
    >>> sorted(OVERRIDE_SCHEMA["properties"])[:3]
    ['bf16', 'bits_accum', 'bits_activations']
"""

from __future__ import annotations

from typing import Any

from compress.quant.numerics.clipping import ClipMode
from compress.quant.numerics.primitives import MAX_BITS, MAX_EXACT_BITS, MIN_BITS, QuantMode

__all__ = ["POST_TRAIN_LINEAR_SCHEMA", "CAST_SCHEMA", "OVERRIDE_SCHEMA"]

_MODES = [m.value for m in QuantMode]


def _bits(what: str, default: int) -> dict[str, Any]:
    return {
        "type": ["integer", "null"],
        "minimum": MIN_BITS,
        "maximum": MAX_BITS,
        "description": f"Bit width of {what} ({MIN_BITS}..{MAX_BITS}); null leaves them float. Default {default}.",
    }


def _bool(text: str) -> dict[str, Any]:
    return {"type": "boolean", "description": text}


_MODE = {
    "description": "Quantization mode, one for all or {activations, weights}. Default symmetric.",
    "oneOf": [
        {"type": "string", "enum": _MODES},
        {
            "type": "object",
            "properties": {
                "activations": {"type": "string", "enum": _MODES},
                "weights": {"type": "string", "enum": _MODES},
            },
            "additionalProperties": False,
        },
    ],
}

# Settings valid both at the quantizer level and inside an override rule.
_COMMON: dict[str, Any] = {
    "bits_activations": _bits("activations", 8),
    "bits_accum": {
        "type": "integer",
        "minimum": 8,
        "maximum": MAX_EXACT_BITS,
        "description": f"Signed accumulator width (8..{MAX_EXACT_BITS}). Default 32.",
    },
    "mode": _MODE,
    "clip_acts": {
        "type": "string",
        "enum": [c.value for c in ClipMode],
        "description": "How activation ranges are chosen from the stats. Default none (min/max).",
    },
    "clip_n_stds": {
        "type": ["number", "null"],
        "exclusiveMinimum": 0,
        "description": "n for clip_acts n_std (mean +- n*std). Default null.",
    },
    "clip_percentile": {
        "type": ["number", "null"],
        "exclusiveMinimum": 50,
        "maximum": 100,
        "description": "Percentile for clip_acts percentile (needs histograms). Default 99.99.",
    },
    "clip_half_range": _bool("ReLU-like outputs: range [0, max] and negative outputs zeroed. Default false."),
    "per_channel_wts": _bool(
        "Per-output-channel weight scales for Linear/Conv (embeddings: only via their own rule). Default false."
    ),
    "scale_approx_mult_bits": {
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": 32,
        "description": "Approximate activation/requant scales as integer mult >> shift with this many bits.",
    },
}

OVERRIDE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One rule; the first rule whose regex fully matches a module name wins (no merging).",
    "properties": {
        "match": {"type": "string", "description": "Regex, re.fullmatch on the module name (groups allowed)."},
        "bits_weights": _bits("weights", 8),
        **_COMMON,
        "fp16": _bool("Run the module in float16."),
        "bf16": _bool("Run the module in bfloat16."),
        "fp32": _bool("Run the module in float32."),
        "precision": {"type": "string", "enum": ["fp16", "bf16", "fp32", "none"], "description": "Float precision."},
        "none": _bool("true: leave the module untouched."),
        "quantize": _bool("false: leave the module untouched."),
    },
    "required": ["match"],
    "additionalProperties": False,
}

POST_TRAIN_LINEAR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "bits_parameters": _bits("weights", 8),
        **_COMMON,
        "overrides": {"type": "array", "items": OVERRIDE_SCHEMA, "description": "Ordered per-module rules."},
        "allow_unmatched": _bool("Accept override rules that apply to no module. Default false."),
        "net_aware_clip": _bool("Clip ranges feeding sigmoid (+-6) / tanh (+-4). Default false."),
        "legacy_symmetric": _bool("Old tool's symmetric numerator 2^(b-1)-1 (notebook numbers). Default false."),
        "missing_stats": {
            "type": "string",
            "enum": ["error", "warn"],
            "description": "A layer without stats: error (default) or warn and leave it float.",
        },
        "integer_kernels": {
            "type": "string",
            "enum": ["auto", "int_mm", "fp32", "c", "off"],
            "description": "auto (default): products run as real int8/int32 integer kernels wherever that is "
            "exact (same bits as the emulation), each int8 product on the backend measured fastest on this CPU; "
            "int_mm / fp32 / c: force that int8 backend (torch._int_mm; a chunked float32 GEMM, exact; the C "
            "16-bit multiply-add kernel); off: always the float64 emulation. The COMPRESS_INTEGER_KERNELS "
            "environment variable overrides it.",
        },
    },
    "additionalProperties": False,
}

CAST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "dtype": {
            "type": "string",
            "enum": ["float16", "bfloat16", "float32"],
            "description": "Cast the whole model to this dtype. Default float16.",
        }
    },
    "additionalProperties": False,
}
