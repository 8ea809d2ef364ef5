"""Statistics of a ModularLSTM checked against the hidden states of the equivalent nn.LSTM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.modules import ModularLSTM
from compress.stats import collect_stats, load_stats, model_fingerprint

T, B, F, H = 7, 3, 4, 5
CELL_OPS = [
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
]


@pytest.fixture(scope="module")
def lstms() -> tuple[nn.LSTM, ModularLSTM, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ref = nn.LSTM(F, H, num_layers=2)
    for p in ref.parameters():
        nn.init.uniform_(p, -0.5, 0.5, generator=g)
    batches = [torch.randn(T, B, F, generator=g) * (1 + i) for i in range(2)]
    return ref.eval(), ModularLSTM.from_float(ref).eval(), batches


def test_every_internal_op_of_both_layers_has_statistics(lstms) -> None:
    _, modular, batches = lstms
    stats = collect_stats(modular, batches)
    assert [n for n in stats if n.startswith("cells.")] == [f"cells.{i}.{op}" for i in (0, 1) for op in CELL_OPS]
    assert sorted(stats["cells.0.eltwiseadd_gate"]["inputs"]) == [0, 1]
    assert stats.header["fingerprint"] == model_fingerprint(modular)


def test_hidden_state_statistics_match_nn_lstm_outputs(lstms) -> None:
    ref, modular, batches = lstms
    stats = collect_stats(modular, batches)
    with torch.no_grad():
        h = torch.cat([ref(x)[0] for x in batches]).double()  # every h_t of the top layer: [2T, B, H]
    rec = stats["cells.1.eltwisemult_hidden"]["output"]
    # one call per time step on [B, H]: samples are (step, batch) pairs, H values each
    assert (rec["total_numel"], rec["samples"], rec["shape"]) == (2 * T * B * H, 2 * T * B, f"({B}, {H})")
    assert rec["min"] == pytest.approx(float(h.min()), abs=1e-6)
    assert rec["max"] == pytest.approx(float(h.max()), abs=1e-6)
    assert rec["avg_min"] == pytest.approx(float(h.amin(dim=2).mean()), abs=1e-6)
    assert rec["avg_max"] == pytest.approx(float(h.amax(dim=2).mean()), abs=1e-6)
    assert rec["mean"] == pytest.approx(float(h.mean()), abs=1e-6)
    assert rec["std"] == pytest.approx(float(h.std(unbiased=False)), abs=1e-6)
    assert rec["b"] == pytest.approx(float((h - h.mean()).abs().mean()), abs=1e-6)


def test_gate_activations_are_bounded_and_round_trip(lstms, tmp_path) -> None:
    _, modular, batches = lstms
    stats = collect_stats(modular, batches, histogram_bins=16)
    for op in ("act_i", "act_f", "act_o"):
        out = stats[f"cells.0.{op}"]["output"]
        assert 0.0 < out["min"] <= out["avg_min"] <= out["avg_max"] <= out["max"] < 1.0
    loaded = load_stats(stats.save(tmp_path / "lstm.yaml"))
    assert loaded.to_dict() == stats.to_dict()
    loaded.check_model(modular)
