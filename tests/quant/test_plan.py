"""The override language and the resolved plan: precedence, capture groups, errors, kinds."""

from __future__ import annotations

import pytest
from quant_helpers import TinyLM, converted_lm
from torch import nn

from compress.errors import QuantizationError
from compress.modules.ops import Concat, EltwiseAdd, EltwiseMult
from compress.quant.config.plan import resolve_plan
from compress.quant.config.settings import OVERRIDE_KEYS, default_settings


def _plan(model, overrides=(), allow_unmatched=False, **defaults):
    return {p.name: p for p in resolve_plan(model, list(overrides), default_settings(**defaults), allow_unmatched)}


def test_worked_precedence_example_from_the_docstring():
    model = converted_lm()
    overrides = [
        {"match": r"rnn\.cells\.0\..*", "bits_activations": 16},
        {"match": r".*eltwise.*", "fp16": True},
        {"match": r"decoder", "mode": "asymmetric_signed"},
    ]
    plan = _plan(model, overrides, per_channel_wts=True)
    first = plan["rnn.cells.0.eltwiseadd_gate"]
    assert (first.rule, first.kind, first.settings["bits_activations"]) == (0, "eltwise_add", 16)
    assert first.settings["precision"] is None  # rule 1 is not merged in
    second = plan["rnn.cells.1.eltwiseadd_gate"]
    assert (second.rule, second.kind, second.settings["precision"]) == (1, "float", "fp16")
    dec = plan["decoder"]
    assert (dec.rule, dec.kind, dec.settings["mode_activations"], dec.settings["mode_weights"]) == (
        2,
        "linear",
        "asymmetric_signed",
        "asymmetric_signed",
    )
    assert dec.settings["per_channel_wts"] is True and dec.settings["bits_activations"] == 8  # quantizer level
    plain = plan["rnn.cells.1.fc_gate_x"]
    assert (plain.rule, plain.rule_text, plain.settings) == (None, "", default_settings(per_channel_wts=True))


def test_every_leaf_is_planned_and_containers_identity_dropout_are_not():
    model = converted_lm()
    names = set(_plan(model))
    cell = {
        "fc_gate_x",
        "fc_gate_h",
        "eltwiseadd_gate",
        "act_i",
        "act_f",
        "act_g",
        "act_o",
        "eltwisemult_cell_forget",
        "eltwisemult_cell_input",
        "eltwiseadd_cell",
        "act_h",
        "eltwisemult_hidden",
    }
    expected = {"encoder", "decoder"} | {f"rnn.cells.{i}.{c}" for i in (0, 1) for c in cell}
    assert names == expected


def test_capture_groups_are_allowed_and_first_match_still_wins():
    model = converted_lm()
    overrides = [
        {"match": r"rnn\.cells\.(0|1)\.(fc_gate_(x|h))", "bits_weights": 4},
        {"match": "(enc|dec)oder", "none": True},
    ]
    plan = _plan(model, overrides)
    assert plan["rnn.cells.1.fc_gate_h"].settings["bits_weights"] == 4
    assert plan["rnn.cells.1.fc_gate_h"].rule == 0
    assert plan["decoder"].kind == "none" and plan["decoder"].rule == 1


def test_fullmatch_not_prefix():
    model = converted_lm()
    with pytest.raises(QuantizationError, match="matches no module"):
        _plan(model, [{"match": "rnn", "fp16": True}])


def test_unmatched_rule_error_suggests_names_and_can_be_allowed():
    model = converted_lm()
    with pytest.raises(QuantizationError, match=r"'#0 conv1 .*' matches no module.*allow_unmatched"):
        _plan(model, [{"match": "conv1", "bits_activations": 4}])
    plan = _plan(model, [{"match": "conv1", "bits_activations": 4}], allow_unmatched=True)
    assert all(p.rule is None for p in plan.values())


def test_shadowed_rule_is_reported():
    # Broad rule first: the specific one can never apply (the old tool's "overlap wrong" case, silent there).
    model = converted_lm()
    overrides = [{"match": ".*", "bits_activations": 8}, {"match": "decoder", "fp16": True}]
    with pytest.raises(QuantizationError, match="never applies.*decoder.*Move it before"):
        _plan(model, overrides)


def test_unknown_setting_lists_allowed_ones():
    with pytest.raises(QuantizationError) as err:
        _plan(converted_lm(), [{"match": "decoder", "bits_bias": 8}])
    assert "'bits_bias'" in str(err.value)
    for key in OVERRIDE_KEYS:
        assert key in str(err.value)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"match": "decoder", "bits_activations": 1}, r"\[2, 16\]"),
        ({"match": "decoder", "bits_weights": 32}, r"\[2, 16\]"),
        ({"match": "decoder", "bits_accum": 64}, r"\[8, 53\]"),
        ({"match": "decoder", "mode": "SYM9"}, "Unknown quantization mode"),
        ({"match": "decoder", "mode": {"acts": "symmetric"}}, "activations"),
        ({"match": "decoder", "clip_acts": "KL"}, "Unknown clip mode"),
        ({"match": "decoder", "fp16": True, "bf16": True}, "conflicting precisions"),
        ({"match": "decoder", "none": True, "fp16": True}, "drop the precision"),
        ({"match": "decoder", "none": True, "quantize": True}, "contradicts"),
        ({"match": "decoder", "clip_acts": "n_std"}, "clip_n_stds"),
        ({"match": "decoder", "per_channel_wts": "yes"}, "true or false"),
        ({"match": "(unclosed", "fp16": True}, "bad regex"),
        ({"fp16": True}, "'match' regex"),
    ],
)
def test_bad_rules_are_errors(rule, message):
    with pytest.raises(QuantizationError, match=message):
        _plan(converted_lm(), [rule])


def test_overrides_must_be_an_ordered_list():
    with pytest.raises(QuantizationError, match="list of rules"):
        resolve_plan(converted_lm(), {"decoder": {"fp16": True}}, default_settings())


def test_precision_shorthands_and_none():
    model = converted_lm()
    overrides = [
        {"match": "encoder", "bf16": True},
        {"match": "decoder", "precision": "fp32"},
        {"match": r".*act_h", "quantize": False},
        {"match": r".*eltwiseadd_cell", "precision": "none"},
    ]
    plan = _plan(model, overrides)
    assert (plan["encoder"].kind, plan["encoder"].settings["precision"]) == ("float", "bf16")
    assert (plan["decoder"].kind, plan["decoder"].settings["precision"]) == ("float", "fp32")
    assert plan["rnn.cells.0.act_h"].kind == "none"
    assert plan["rnn.cells.0.eltwiseadd_cell"].kind == "eltwise_add"


def test_bits_null_semantics_per_module_type():
    model = converted_lm()
    plan = _plan(model, bits_activations=None)
    assert plan["decoder"].kind == "weights_only" and plan["encoder"].kind == "embedding"
    assert plan["rnn.cells.0.act_i"].kind == "none" and plan["rnn.cells.0.eltwiseadd_gate"].kind == "none"
    plan = _plan(model, bits_parameters=None)
    assert plan["decoder"].kind == "fake" and plan["encoder"].kind == "none"
    plan = _plan(model, bits_activations=None, bits_parameters=None)
    assert {p.kind for p in plan.values()} == {"none"}


def test_mode_can_be_overridden_for_eltwise_ops():
    plan = _plan(converted_lm(), [{"match": ".*eltwise.*", "mode": {"activations": "asymmetric_unsigned"}}])
    gate = plan["rnn.cells.0.eltwiseadd_gate"].settings
    assert gate["mode_activations"] == "asymmetric_unsigned" and gate["mode_weights"] == "symmetric"


def test_op_kinds_and_unconverted_rnn():
    model = nn.Sequential(EltwiseAdd(), EltwiseMult(), Concat(1), nn.Identity(), nn.LSTM(2, 2), nn.ReLU())
    plan = _plan(model)
    assert [plan[k].kind for k in ("0", "1", "2", "5")] == ["eltwise_add", "eltwise_mult", "concat", "fake"]
    assert "3" not in plan
    assert plan["4"].kind == "none" and "rnn_to_modular" in plan["4"].note
    assert _plan(TinyLM(), [{"match": "rnn", "fp16": True}])["rnn"].kind == "float"


def test_quantizer_level_upper_case_names_are_accepted():
    plan = _plan(nn.Sequential(nn.Linear(2, 2)), mode="ASYMMETRIC_UNSIGNED", clip_acts="AVG")
    assert plan["0"].settings["mode_weights"] == "asymmetric_unsigned" and plan["0"].settings["clip_acts"] == "avg"
