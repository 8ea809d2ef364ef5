"""Registration and strict args schemas of post_train_linear and cast; the cast quantizer itself."""

from __future__ import annotations

import inspect

import jsonschema
import pytest
import torch
from quant_helpers import converted_lm, tokens

from compress.errors import QuantizationError
from compress.quant import CastQuantizer, PostTrainLinearQuantizer
from compress.quant.config.settings import OVERRIDE_KEYS
from compress.registry import QUANTIZERS

X = tokens()


def _valid(name: str, args: dict) -> bool:
    try:
        jsonschema.validate(args, QUANTIZERS.get(name).schema)
    except jsonschema.ValidationError:
        return False
    return True


def test_both_quantizers_are_registered():
    assert QUANTIZERS.get("post_train_linear").obj is PostTrainLinearQuantizer
    assert QUANTIZERS.get("cast").obj is CastQuantizer
    jsonschema.Draft7Validator.check_schema(QUANTIZERS.get("post_train_linear").schema)


def test_schema_properties_match_the_constructor():
    params = set(inspect.signature(PostTrainLinearQuantizer).parameters) - {"model", "stats"}
    assert set(QUANTIZERS.get("post_train_linear").schema["properties"]) == params
    items = QUANTIZERS.get("post_train_linear").schema["properties"]["overrides"]["items"]
    assert set(items["properties"]) == {"match", *OVERRIDE_KEYS}


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"bits_activations": None, "bits_parameters": 4, "bits_accum": 32, "mode": "asymmetric_signed"},
        {
            "mode": {"activations": "asymmetric_unsigned", "weights": "symmetric"},
            "clip_acts": "n_std",
            "clip_n_stds": 3,
        },
        {"overrides": [{"match": ".*eltwise.*", "fp16": True}, {"match": "decoder", "bits_weights": None}]},
        {"net_aware_clip": True, "legacy_symmetric": True, "allow_unmatched": True, "missing_stats": "warn"},
        {"clip_acts": "percentile", "clip_percentile": 99.9, "scale_approx_mult_bits": 16, "per_channel_wts": True},
    ],
)
def test_schema_accepts_valid_args(args):
    assert _valid("post_train_linear", args)


@pytest.mark.parametrize(
    "args",
    [
        {"bits_activation": 8},
        {"bits_activations": 17},
        {"bits_parameters": 1},
        {"bits_accum": 64},
        {"mode": "SYMMETRIC"},
        {"mode": {"activations": "symmetric", "bias": "symmetric"}},
        {"clip_acts": "AVG"},
        {"clip_n_stds": 0},
        {"overrides": [{"fp16": True}]},
        {"overrides": [{"match": "x", "bits_bias": 8}]},
        {"overrides": [{"match": "x", "precision": "fp64"}]},
        {"overrides": {"x": {"fp16": True}}},
        {"missing_stats": "ignore"},
    ],
)
def test_schema_rejects_invalid_args(args):
    assert not _valid("post_train_linear", args)


def test_cast_schema_and_quantizer():
    assert _valid("cast", {"dtype": "bfloat16"}) and not _valid("cast", {"dtype": "int8"})
    assert not _valid("cast", {"dtype": "float16", "bits": 8})
    model = converted_lm()
    q = CastQuantizer(model, dtype="float16")
    assert {p.kind for p in q.resolve_plan()} == {"float"}
    half = q.prepare_model()
    assert next(half.parameters()).dtype == torch.float16 and next(model.parameters()).dtype == torch.float32
    rows = {r["module"]: r for r in q.layer_records(lambda m: m(X))}
    assert rows["decoder"]["bits"] == "fp16" and 30 < rows["decoder"]["sqnr_db"] < 120
    assert set(rows) == {p.name for p in q.resolve_plan()}
    with pytest.raises(QuantizationError, match="dtype"):
        CastQuantizer(model, dtype="int8")
