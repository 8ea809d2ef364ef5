"""PostTrainLinearQuantizer end to end on small converted LSTM/GRU language models."""

from __future__ import annotations

import copy
from types import MappingProxyType

import pytest
import torch
from quant_helpers import collect_stats, converted_lm, tokens

from compress.errors import QuantizationError
from compress.quant import PostTrainLinearQuantizer
from compress.quant.records import ROW_KEYS
from compress.quant.wrappers.factory import is_wrapper

X = tokens()


def run(model):
    return model(X)


def _setup(**kwargs):
    model = converted_lm(**kwargs)
    return model, collect_stats(model, run)


def test_all_bits_none_reproduces_the_float_model_exactly():
    model, stats = _setup()
    with torch.no_grad():
        ref = model(X)
        q = PostTrainLinearQuantizer(model, None, bits_activations=None, bits_parameters=None)
        qm = q.prepare_model()
        assert not any(is_wrapper(m) for m in qm.modules())
        assert torch.equal(qm(X), ref)
        every_none = PostTrainLinearQuantizer(model, stats, overrides=[{"match": ".*", "none": True}])
        assert torch.equal(every_none.prepare_model()(X), ref)
        fp32 = PostTrainLinearQuantizer(model, stats, overrides=[{"match": ".*", "fp32": True}])
        assert torch.equal(fp32.prepare_model()(X), ref)


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, type(m)) for n, m in model.named_modules()],
        [id(p) for p in model.parameters()],
        model.training,
    )


def test_user_model_and_stats_are_never_modified():
    model, stats = _setup(tied=True)
    before, stats_before = _snapshot(model), copy.deepcopy(stats)
    q = PostTrainLinearQuantizer(model, stats, net_aware_clip=True, mode="asymmetric_signed", per_channel_wts=True)
    q.prepare_model()
    q.layer_records(run)
    after = _snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]) and before[1:] == after[1:]
    assert stats == stats_before
    assert model.decoder.weight is model.encoder.weight


def test_tied_weights_are_quantized_once_and_stay_tied():
    model, stats = _setup(tied=True)
    q = PostTrainLinearQuantizer(model, stats, overrides=[{"match": "decoder", "bits_weights": 4}])
    qm = q.prepare_model()
    assert qm.encoder.qweight is qm.decoder.qweight
    moved = qm._apply(lambda t: t.clone())  # what .to(device) does to every tensor
    assert moved.encoder.qweight is moved.decoder.qweight
    copied = copy.deepcopy(qm)
    assert copied.encoder.qweight is copied.decoder.qweight
    assert copied.encoder.qweight.info["bits"] == 8  # the first user (encoder) owns the quantization
    rows = {r["module"]: r for r in q.layer_records(run)}
    assert "tied to encoder" in rows["decoder"]["note"] and "win over" in rows["decoder"]["note"]
    assert rows["encoder"]["weight_scale"] == rows["decoder"]["weight_scale"]


def test_missing_stats_error_lists_names_and_warn_leaves_float():
    model, stats = _setup()
    partial = {k: v for k, v in stats.items() if k not in ("decoder", "rnn.cells.1.act_h")}
    with pytest.raises(QuantizationError, match=r"2 module\(s\).*rnn\.cells\.1\.act_h, decoder|decoder"):
        PostTrainLinearQuantizer(model, partial).prepare_model()
    with pytest.raises(QuantizationError, match="No statistics"):
        PostTrainLinearQuantizer(model, None).prepare_model()
    q = PostTrainLinearQuantizer(model, partial, missing_stats="warn")
    with pytest.warns(UserWarning, match="decoder"):
        rows = {r["module"]: r for r in q.layer_records(run)}
    assert rows["decoder"]["kind"] == "none" and "no statistics" in rows["decoder"]["note"]
    assert rows["rnn.cells.0.act_h"]["kind"] == "fake"


def _wide_gate_stats(stats):
    stats = copy.deepcopy(stats)
    for cell in ("rnn.cells.0", "rnn.cells.1"):
        stats[f"{cell}.eltwiseadd_gate"]["output"].update(min=-15.612, max=15.451, avg_min=-6.394, avg_max=5.523)
        stats[f"{cell}.eltwiseadd_cell"]["output"].update(min=-9.0, max=7.0, avg_min=-3.0, avg_max=4.5)
    return stats


def test_net_aware_clip_lstm_table_and_legacy_notebook_scale():
    model, stats = _setup()
    q = PostTrainLinearQuantizer(model, _wide_gate_stats(stats), net_aware_clip=True, legacy_symmetric=True)
    qm = q.prepare_model()
    gate = qm.rnn.cells[0].eltwiseadd_gate
    assert gate._clip["output"] == (-6.0, 6.0)
    assert float(gate.output_scale) == pytest.approx(21.166667)  # the notebook's 127/6
    assert qm.rnn.cells[1].eltwiseadd_cell._clip["output"] == (-4.0, 4.0)
    assert any(line.startswith("rnn.cells.0.eltwiseadd_gate: output range clipped to +-6") for line in q.log)
    assert any("act_h (Tanh)" in line and "+-4" in line for line in q.log)
    assert any("avg_min -6.394 -> -6" in line for line in q.log)  # avg_max 5.523 stays
    off = PostTrainLinearQuantizer(model, _wide_gate_stats(stats)).prepare_model()
    assert off.rnn.cells[0].eltwiseadd_gate._clip["output"] == (-15.612, 15.451)


def test_net_aware_clip_gru_table():
    model, stats = _setup(rnn="gru")
    for name in ("eltwiseadd_reset", "eltwiseadd_update", "eltwiseadd_new"):
        stats[f"rnn.cells.0.{name}"]["output"].update(min=-20.0, max=20.0)
    qm = PostTrainLinearQuantizer(model, stats, net_aware_clip=True).prepare_model()
    cell = qm.rnn.cells[0]
    assert cell.eltwiseadd_reset._clip["output"] == (-6.0, 6.0)
    assert cell.eltwiseadd_update._clip["output"] == (-6.0, 6.0)
    assert cell.eltwiseadd_new._clip["output"] == (-4.0, 4.0)


NOTEBOOK_VARIANTS = {
    "symmetric default": {},
    "asym_s + per-channel": {"mode": "ASYMMETRIC_SIGNED", "per_channel_wts": True},
    "eltwise/encoder/decoder fp16": {
        "mode": "asymmetric_signed",
        "per_channel_wts": True,
        "overrides": [
            {"match": ".*eltwise.*", "fp16": True},
            {"match": "encoder", "fp16": True},
            {"match": "decoder", "fp16": True},
        ],
    },
    "avg + encoder/decoder fp16": {
        "mode": "asymmetric_signed",
        "per_channel_wts": True,
        "clip_acts": "AVG",
        "overrides": [{"match": "encoder", "fp16": True}, {"match": "decoder", "fp16": True}],
    },
    "full avg": {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg"},
}


@pytest.mark.parametrize("variant", sorted(NOTEBOOK_VARIANTS))
@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_notebook_variants_run_and_report_every_internal_module(variant, rnn):
    model, stats = _setup(rnn=rnn)
    q = PostTrainLinearQuantizer(model, stats, **NOTEBOOK_VARIANTS[variant])
    with torch.no_grad():
        out = q.prepare_model()(X)
    assert out.shape == model(X).shape and torch.isfinite(out).all()
    rows = q.layer_records(run)
    planned = [p.name for p in q.resolve_plan()]
    assert [r["module"] for r in rows] == planned
    assert all(set(r) == set(ROW_KEYS) for r in rows)
    cells = {n.split(".", 3)[-1] for n in planned if n.startswith("rnn.cells.1.")}
    assert len(cells) == (12 if rnn == "lstm" else 13)  # every gate projection, activation and eltwise op
    for r in rows:
        assert r["calls"] > 0 and r["sqnr_db"] is not None, r
        if r["kind"] in ("linear", "fake", "eltwise_add", "eltwise_mult"):
            assert r["output_scale"] > 0 and r["saturation_pct"] is not None and r["clip_range"] is not None
    by_name = {r["module"]: r for r in rows}
    if "fp16" in variant:
        assert by_name["decoder"]["kind"] == "float" and by_name["decoder"]["bits"] == "fp16"


def test_more_bits_give_higher_sqnr():
    model, stats = _setup()
    low = {r["module"]: r for r in PostTrainLinearQuantizer(model, stats).layer_records(run)}
    high = PostTrainLinearQuantizer(model, stats, bits_activations=16, bits_parameters=16, bits_accum=48)
    high_rows = {r["module"]: r for r in high.layer_records(run)}
    assert high_rows["decoder"]["sqnr_db"] > low["decoder"]["sqnr_db"] + 30
    assert low["decoder"]["bits"] == "a8 w8 acc32" and high_rows["decoder"]["bits"] == "a16 w16 acc48"


def test_saturation_reported_when_stats_are_too_narrow():
    model, stats = _setup()
    stats = copy.deepcopy(stats)
    stats["decoder"]["output"].update(min=-0.01, max=0.01)
    rows = {r["module"]: r for r in PostTrainLinearQuantizer(model, stats).layer_records(run)}
    assert rows["decoder"]["saturation_pct"] > 50
    # Its own stats cover this batch: at most the extremes clamp (symmetric: sat maps to code 127.5 -> 128).
    assert rows["rnn.cells.0.fc_gate_x"]["saturation_pct"] < 0.5


def test_prepare_is_repeatable_and_refuses_quantized_models():
    model, stats = _setup()
    q = PostTrainLinearQuantizer(model, stats, mode="asymmetric_unsigned")
    with torch.no_grad():
        assert torch.equal(q.prepare_model()(X), q.prepare_model()(X))
    with pytest.raises(QuantizationError, match="already contains"):
        PostTrainLinearQuantizer(q.prepare_model(), stats).prepare_model()


def test_bad_quantizer_arguments():
    model = converted_lm()
    with pytest.raises(QuantizationError, match="missing_stats"):
        PostTrainLinearQuantizer(model, missing_stats="ignore")
    with pytest.raises(QuantizationError, match=r"\[2, 16\]"):
        PostTrainLinearQuantizer(model, bits_activations=32)
    with pytest.raises(QuantizationError, match="bits_accum"):
        PostTrainLinearQuantizer(model, scale_approx_mult_bits=32, bits_accum=32).resolve_plan()


def _read_only(obj):
    if isinstance(obj, dict):
        return MappingProxyType({k: _read_only(v) for k, v in obj.items()})
    return obj


def test_any_mapping_layout_is_accepted_and_net_aware_clips_it():
    model, stats = _setup()
    frozen = _read_only(_wide_gate_stats(stats))  # not dicts: a stats object may use its own Mapping types
    q = PostTrainLinearQuantizer(model, frozen, net_aware_clip=True)
    assert q.prepare_model().rnn.cells[0].eltwiseadd_gate._clip["output"] == (-6.0, 6.0)
    assert frozen["rnn.cells.0.eltwiseadd_gate"]["output"]["min"] == -15.612
