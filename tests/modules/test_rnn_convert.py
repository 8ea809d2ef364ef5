"""convert_rnns / revert_rnns and the registered converter rnn_to_modular."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import torch
from torch import nn

from compress.errors import ConversionError
from compress.modules import (
    ModularGRU,
    ModularGRUCell,
    ModularLSTM,
    ModularLSTMCell,
    OneMinus,
    convert_rnns,
    revert_rnns,
)
from compress.registry import CONVERTERS

FLOAT64_TOL = 1e-10  # as in test_modular_rnn: float64 eps 2.2e-16 with a wide margin for the recurrence


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.rnn = nn.LSTM(6, 5, num_layers=2, batch_first=True)


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.GRU(5, 4, bidirectional=True, batch_first=True))])
        self.cells = nn.ModuleDict({"lstm": nn.LSTMCell(8, 4), "gru": nn.GRUCell(4, 4)})
        self.out = nn.Linear(4, 2)


class Nested(nn.Module):
    """An LSTM and a GRU in nested submodules, plus both cell kinds in containers."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.encoder.rnn(self.encoder.embed(x))
        y, _ = self.decoder.blocks[0][0](y)
        h, _ = self.decoder.cells["lstm"](y[:, -1])
        return self.decoder.out(self.decoder.cells["gru"](h))


def nested_model() -> nn.Module:
    torch.manual_seed(0)
    return Nested().double().eval()


def test_converts_nested_rnns_reports_them_and_keeps_outputs() -> None:
    model = nested_model()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    expected = model(x)
    converted, log = convert_rnns(copy.deepcopy(model))
    assert log == [
        "encoder.rnn: LSTM(6, 5, num_layers=2, batch_first=True) -> ModularLSTM",
        "decoder.blocks.0.0: GRU(5, 4, batch_first=True, bidirectional=True) -> ModularGRU",
        "decoder.cells.lstm: LSTMCell(8, 4) -> ModularLSTMCell",
        "decoder.cells.gru: GRUCell(4, 4) -> ModularGRUCell",
    ]
    assert isinstance(converted.encoder.rnn, ModularLSTM)
    assert isinstance(converted.decoder.blocks[0][0], ModularGRU)
    assert isinstance(converted.decoder.cells["lstm"], ModularLSTMCell)
    assert isinstance(converted.decoder.cells["gru"], ModularGRUCell)
    assert (converted(x) - expected).abs().max().item() <= FLOAT64_TOL


def test_types_selects_what_is_converted() -> None:
    model, log = convert_rnns(nested_model(), types=["gru", "lstm_cell"])
    assert [line.split(":")[0] for line in log] == ["decoder.blocks.0.0", "decoder.cells.lstm"]
    assert type(model.encoder.rnn) is nn.LSTM and type(model.decoder.cells["gru"]) is nn.GRUCell


def test_unknown_type_is_a_conversion_error() -> None:
    with pytest.raises(ConversionError, match=r"Unknown RNN type\(s\) \['rnn'\].*choose from"):
        convert_rnns(nested_model(), types=["rnn"])


def test_revert_restores_the_original_state_dict() -> None:
    model = nested_model()
    converted, _ = convert_rnns(copy.deepcopy(model))
    reverted, log = revert_rnns(converted)
    assert len(log) == 4 and log[0] == "encoder.rnn: ModularLSTM(6, 5, num_layers=2, batch_first=True) -> LSTM"
    expected, got = model.state_dict(), reverted.state_dict()
    assert list(expected) == list(got)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_reverting_only_cells_leaves_modular_layers_intact() -> None:
    model = nn.Sequential(ModularLSTM(3, 4), ModularLSTMCell(4, 4))
    model, log = revert_rnns(model, types=["lstm_cell"])
    assert log == ["1: ModularLSTMCell(4, 4) -> LSTMCell"]
    assert isinstance(model[0].cells[0], ModularLSTMCell)


def test_root_module_and_shared_modules() -> None:
    converted, log = convert_rnns(nn.GRU(3, 4))
    assert isinstance(converted, ModularGRU) and log == ["(model): GRU(3, 4) -> ModularGRU"]
    shared = nn.LSTM(3, 4)
    model, log = convert_rnns(nn.ModuleDict({"a": shared, "b": nn.Sequential(shared)}))
    assert model["a"] is model["b"][0] and isinstance(model["a"], ModularLSTM)
    assert len(log) == 2


def test_subclasses_are_left_alone() -> None:
    class MyLSTM(nn.LSTM):
        pass

    model, log = convert_rnns(nn.Sequential(MyLSTM(3, 4)))
    assert log == [] and type(model[0]) is MyLSTM


def test_projection_lstm_is_refused_with_advice() -> None:
    with pytest.raises(ConversionError, match="proj_size=2.*types"):
        convert_rnns(nn.Sequential(nn.LSTM(3, 4, proj_size=2)))


def test_registered_converter_and_its_schema() -> None:
    entry = CONVERTERS.get("rnn_to_modular")
    jsonschema.validate({}, entry.schema)
    jsonschema.validate({"types": ["lstm", "gru_cell"]}, entry.schema)
    for bad in ({"types": ["rnn"]}, {"types": []}, {"types": ["gru", "gru"]}, {"type": ["gru"]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, entry.schema)
    model, log = entry.obj(nested_model(), types=["lstm"])
    assert log == ["encoder.rnn: LSTM(6, 5, num_layers=2, batch_first=True) -> ModularLSTM"]


def test_one_minus() -> None:
    assert torch.equal(OneMinus()(torch.tensor([0.0, 0.25, 1.0])), torch.tensor([1.0, 0.75, 0.0]))
