"""The deployable artifact: weights-only loading, integer codes, and bit-exact outputs after a round trip."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import compress
from compress.errors import QuantizationError
from compress.modules import convert_rnns
from compress.quant import CastQuantizer, PostTrainLinearQuantizer, load_quantized, save_quantized
from compress.quant.wrappers.factory import FloatWrapper, is_wrapper
from tests.conftest import FIXTURES
from tests.quant.quant_helpers import collect_stats

INT8_FULL = {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg"}


def perf_batch(steps: int = 12, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    events = torch.randint(0, 240, (steps, batch), generator=gen)
    return events, torch.rand(steps, batch, 24, generator=gen), torch.randn(batch, 32, generator=gen)


def converted(model: nn.Module) -> nn.Module:
    return convert_rnns(copy.deepcopy(model))[0].eval()


def quantized(model: nn.Module, run, **args) -> nn.Module:
    stats = collect_stats(model, run)
    with warnings.catch_warnings():  # output_fc_activation (sampling only) has no stats here: left float on purpose
        warnings.simplefilter("ignore")
        return PostTrainLinearQuantizer(model, stats, missing_stats="warn", **args).prepare_model().eval()


def perf_model(**args) -> nn.Module:
    torch.manual_seed(0)
    return compress.build_model("performance_rnn", **args)


def round_trip(qmodel: nn.Module, path: Path, batch) -> tuple[nn.Module, int]:
    size = save_quantized(qmodel, path)
    loaded = load_quantized(path)
    with torch.no_grad():
        want, got = qmodel.forward_batch(batch)[0], loaded.forward_batch(batch)[0]
    assert torch.equal(want, got), f"max |diff| {float((want - got).abs().max())}"
    return loaded, size


def test_int8_full_lstm_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = converted(perf_model(hidden_dim=24, num_layers=2))
    batch = perf_batch()
    qmodel = quantized(model, lambda m: m.forward_batch(batch), **INT8_FULL)
    loaded, size = round_trip(qmodel, tmp_path / "int8.qpt", perf_batch(seed=1))
    assert size == (tmp_path / "int8.qpt").stat().st_size
    names = {n: type(m).__name__ for n, m in loaded.named_modules()}
    assert names["gru.cells.1.fc_gate_h"] == "LinearQuantWrapper" and names["gru"] == "ModularLSTM"
    assert loaded.gru.cells[0].fc_gate_x.kernel == "int8"
    assert all(hasattr(cell, "fused_loop") for cell in loaded.gru.cells)  # the loaded model runs the fused loop
    assert loaded.gru.cells[0].fc_gate_x.layer_plan.settings["mode_weights"] == "asymmetric_signed"


def test_artifact_loads_weights_only_with_int8_codes(tmp_path: Path) -> None:
    model = converted(perf_model(hidden_dim=16, num_layers=1))
    batch = perf_batch()
    save_quantized(quantized(model, lambda m: m.forward_batch(batch), **INT8_FULL), tmp_path / "a.qpt")
    obj = torch.load(tmp_path / "a.qpt", weights_only=True)
    assert obj["format"] == "compress-quantized" and obj["model"]["name"] == "performance_rnn"
    assert obj["converters"] == [{"name": "rnn_to_modular", "args": {"types": ["lstm"]}}]
    weights = obj["weights"]
    assert weights["gru.cells.0.fc_gate_h"]["codes"].dtype == torch.int8
    assert weights["output_fc"]["scale"].shape == (240,)  # per channel
    assert "output_fc.weight" not in obj["float_state"] and "gru.cells.0.fc_gate_x.bias" not in obj["float_state"]
    rows = {r["name"]: r for r in obj["layers"]}
    assert rows["gru.cells.0.act_i"]["grids"]["output"]["qmax"] == 127
    assert rows["output_fc"]["plan"]["settings"]["clip_acts"] == "avg"


def test_fixture_checkpoint_round_trip_and_size(tmp_path: Path) -> None:
    model = converted(compress.build_model("performance_rnn", checkpoint=FIXTURES / "perf_rnn_tiny.pt"))
    batch = perf_batch(steps=20, batch=4)
    qmodel = quantized(model, lambda m: m.forward_batch(batch), **INT8_FULL)
    _, size = round_trip(qmodel, tmp_path / "tiny.qpt", perf_batch(seed=3))
    fp32 = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert size < fp32 / 3  # int8 codes plus per-channel scales and integer biases


def test_mixed_plan_round_trip(tmp_path: Path) -> None:
    """fp16 layers, weight-only layers, 16-bit layers (int16 codes, emulated kernels), kernels off."""
    model = converted(perf_model(hidden_dim=16, num_layers=2))
    batch = perf_batch()
    overrides = [
        {"match": "output_fc", "fp16": True},
        {"match": "inithid_fc", "bits_activations": None},
        {"match": r"gru\.cells\.1\.fc_gate_h", "bits_activations": 16, "bits_weights": 12},
        {"match": r".*eltwiseadd_cell", "bf16": True},
    ]
    qmodel = quantized(model, lambda m: m.forward_batch(batch), overrides=overrides, integer_kernels="off")
    loaded, _ = round_trip(qmodel, tmp_path / "mixed.qpt", batch)
    assert isinstance(loaded.output_fc, FloatWrapper) and loaded.output_fc.precision == "fp16"
    assert loaded.gru.cells[1].fc_gate_h.qweight.info["bits"] == 12
    assert {m.kernel for m in loaded.modules() if getattr(m, "kernel", None)} == {"emulated"}
    obj = torch.load(tmp_path / "mixed.qpt", weights_only=True)
    assert obj["weights"]["gru.cells.1.fc_gate_h"]["codes"].dtype == torch.int16
    assert "inithid_fc.bias" in obj["float_state"]  # weight-only layer: float bias kept
    assert obj["float_state"]["output_fc.weight"].dtype == torch.float32
    assert load_quantized(tmp_path / "mixed.qpt", integer_kernels="auto").gru.cells[0].fc_gate_x.kernel == "int8"


def test_tied_word_lm_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = converted(compress.build_model("word_lm", ntoken=50, ninp=12, nhid=12, tie_weights=True))
    tokens = torch.randint(0, 50, (9, 3), generator=torch.Generator().manual_seed(0))
    qmodel = quantized(model, lambda m: m(tokens), mode="asymmetric_unsigned")
    size = save_quantized(qmodel, tmp_path / "lm.qpt")
    loaded = load_quantized(tmp_path / "lm.qpt")
    with torch.no_grad():
        assert torch.equal(qmodel(tokens)[0], loaded(tokens)[0])
    assert loaded.decoder.qweight is loaded.encoder.qweight  # quantized once, still shared
    weights = torch.load(tmp_path / "lm.qpt", weights_only=True)["weights"]
    assert "encoder" in weights and "decoder" not in weights and size > 0


def test_tied_fp16_modules_stay_tied_after_loading(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = converted(compress.build_model("word_lm", ntoken=50, ninp=12, nhid=12, tie_weights=True))
    tokens = torch.randint(0, 50, (9, 3), generator=torch.Generator().manual_seed(0))
    fp16 = [{"match": "encoder|decoder", "fp16": True}]
    qmodel = quantized(model, lambda m: m(tokens), mode="asymmetric_unsigned", overrides=fp16)
    assert qmodel.encoder.wrapped.weight is qmodel.decoder.wrapped.weight
    save_quantized(qmodel, tmp_path / "lm16.qpt")
    loaded = load_quantized(tmp_path / "lm16.qpt")
    assert loaded.encoder.wrapped.weight is loaded.decoder.wrapped.weight  # one fp16 copy, as when built
    assert loaded.decoder.wrapped.weight.dtype == torch.float16
    with torch.no_grad():
        assert torch.equal(qmodel(tokens)[0], loaded(tokens)[0])


def test_cast_model_round_trip(tmp_path: Path) -> None:
    model = converted(perf_model(hidden_dim=8, num_layers=1))
    qmodel = CastQuantizer(model, dtype="float16").prepare_model().eval()
    loaded, _ = round_trip(qmodel, tmp_path / "fp16.qpt", perf_batch())
    assert next(loaded.parameters()).dtype == torch.float16 and not any(is_wrapper(m) for m in loaded.modules())


def test_unrebuildable_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="compress_spec"):
        save_quantized(nn.Sequential(nn.Linear(2, 2)), tmp_path / "x.qpt")
    model = converted(perf_model(hidden_dim=8, num_layers=1))
    batch = perf_batch()
    qmodel = quantized(model, lambda m: m.forward_batch(batch))
    with pytest.raises(QuantizationError, match="does not rebuild"):
        save_quantized(qmodel, tmp_path / "x.qpt", converters=[])
    assert not (tmp_path / "x.qpt").exists()
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(QuantizationError, match="not a compress quantized artifact"):
        load_quantized(tmp_path / "other.pt")
