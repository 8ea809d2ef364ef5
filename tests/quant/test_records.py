"""FloatReference: the float model's outputs captured once and shared by several quantizers' layer rows."""

from __future__ import annotations

import pytest
import torch
from quant_helpers import collect_stats, converted_lm, tokens

from compress.quant import CastQuantizer, FloatReference, PostTrainLinearQuantizer

X = tokens()


def run(model):
    return model(X)


def _count_forwards(model: torch.nn.Module) -> list[int]:
    """A one-element counter of the model's own top-level forward calls (deep copies share the hook: not counted)."""
    calls = [0]
    model.register_forward_pre_hook(lambda m, _i: calls.__setitem__(0, calls[0] + (m is model)))
    return calls


def _quantizers(model, stats):
    return [
        PostTrainLinearQuantizer(model, stats),
        PostTrainLinearQuantizer(model, stats, mode="asymmetric_signed", per_channel_wts=True, clip_acts="avg"),
        CastQuantizer(model, dtype="bfloat16"),
    ]


def test_shared_reference_runs_the_float_model_once_and_gives_the_same_rows():
    model = converted_lm()
    stats = collect_stats(model, run)
    own = [q.layer_records(run) for q in _quantizers(model, stats)]
    forwards = _count_forwards(model)
    reference = FloatReference(model, run)
    shared = [q.layer_records(run, reference=reference) for q in _quantizers(model, stats)]
    assert forwards[0] == 1 and reference.captures == 1
    assert shared == own
    assert all(r["sqnr_db"] is not None for rows in shared for r in rows if r["calls"])


def test_reference_captures_only_names_it_does_not_hold_yet():
    model = converted_lm()
    forwards = _count_forwards(model)
    reference = FloatReference(model, run)
    first = reference.outputs(["encoder", "decoder"])
    assert reference.outputs(["decoder"])["decoder"] is first["decoder"]
    assert (reference.captures, forwards[0]) == (1, 1)
    reference.outputs(["encoder", "rnn.cells.0.act_h"])
    assert (reference.captures, forwards[0]) == (2, 2)
    assert len(reference.outputs(["rnn.cells.0.act_h"])["rnn.cells.0.act_h"]) == X.shape[0]  # one per step


def test_reference_capture_runs_in_eval_mode_and_restores_the_mode():
    model = converted_lm().train()
    modes = []
    model.register_forward_pre_hook(lambda m, _i: modes.append(m.training))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    FloatReference(model, run).outputs(["decoder"])
    assert modes == [False] and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_reference_from_another_model_is_refused():
    model, other = converted_lm(), converted_lm(seed=1)
    q = PostTrainLinearQuantizer(model, collect_stats(model, run))
    with pytest.raises(ValueError, match="another model"):
        q.layer_records(run, reference=FloatReference(other, run))
