"""PyTorch's own static int8 LSTM, built the way its documentation describes, for side-by-side benchmarks.

Eager mode, custom-module flow: every ``nn.LSTM`` layer becomes ``torch.ao.nn.quantizable.LSTM`` (observed)
and then ``torch.ao.nn.quantized.LSTM``; every ``nn.Linear`` a quantized Linear; each between a QuantStub and a
DeQuantStub so the model around them (embedding, concatenation, activations) stays float. Activations use
moving-average min/max observers (the default x86 qconfig's histogram observer was measured at +9% perplexity
on the word LM, see ../shared/reference/measurements.md); weights per channel in
the Linears, per tensor inside the LSTM.

The layers of a stacked LSTM run one at a time: PyTorch's stacked forward concatenates per-layer states that do
not share quantization parameters (it warns), which costs accuracy. A layer-by-layer core also gives the
Performance RNN what it needs for its all-layers output (``forward_all_layers``).

Example:
    >>> # static = static_int8(fp32_model, calibration_batches)   # a quantized copy; fp32_model is untouched
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.ao.nn.quantizable as nnqa
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
from torch import nn

_ACTIVATIONS = tq.MovingAverageMinMaxObserver.with_args(reduce_range=True)  # fbgemm: no 16-bit saturation
QCONFIG = tq.QConfig(activation=_ACTIVATIONS, weight=tq.default_weight_observer)  # the LSTM's gates: per tensor
QCONFIG_LINEAR = tq.QConfig(activation=_ACTIVATIONS, weight=tq.default_per_channel_weight_observer)
# A layer's input and state stubs see one call per batch (the cell's observers one per step), and the first
# state is all zeros: a moving average from there would still be a fraction of the range after 16 batches.
QCONFIG_STUB = tq.QConfig(activation=tq.MinMaxObserver.with_args(reduce_range=False), weight=tq.default_weight_observer)
CUSTOM = {
    "float_to_observed_custom_module_class": {nn.LSTM: nnqa.LSTM},
    "observed_to_quantized_custom_module_class": {nnqa.LSTM: nnq.LSTM},
}


class _QuantLinear(nn.Module):
    """float in -> quantize -> Linear -> dequantize -> float out."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.quant, self.linear, self.dequant = tq.QuantStub(), linear, tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.linear(self.quant(x)))


class _QuantLayer(nn.Module):
    """One LSTM layer with its own quantization parameters for input, h and c."""

    def __init__(self, lstm: nn.LSTM, k: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(lstm.input_size if k == 0 else lstm.hidden_size, lstm.hidden_size, 1)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(self.lstm, f"{name}_l0").data.copy_(getattr(lstm, f"{name}_l{k}").data)
        self.qx, self.qh, self.qc, self.dequant = tq.QuantStub(), tq.QuantStub(), tq.QuantStub(), tq.DeQuantStub()

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        out, (h, c) = self.lstm(self.qx(x), (self.qh(hx[0]), self.qc(hx[1])))
        return self.dequant(out), (self.dequant(h), self.dequant(c))


class StaticInt8LSTMCore(nn.Module):
    """A stacked ``nn.LSTM`` as quantized layers run one by one (``forward`` and ``forward_all_layers``)."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = lstm.hidden_size, lstm.num_layers
        self.layers = nn.ModuleList(_QuantLayer(lstm, k) for k in range(lstm.num_layers))

    def forward_all_layers(self, x: torch.Tensor, state: Any) -> tuple[list[torch.Tensor], Any]:
        if state is None:
            zeros = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
            state = (zeros, zeros)
        outputs, hs, cs = [], [], []
        for k, layer in enumerate(self.layers):
            x, (h, c) = layer(x, (state[0][k : k + 1], state[1][k : k + 1]))
            outputs.append(x)
            hs.append(h)
            cs.append(c)
        return outputs, (torch.cat(hs), torch.cat(cs))

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        outputs, final = self.forward_all_layers(x, state)
        return outputs[-1], final


def _replace(model: nn.Module) -> None:
    for name, child in list(model.named_children()):
        if type(child) is nn.LSTM:
            setattr(model, name, StaticInt8LSTMCore(child))
        elif type(child) is nn.Linear:
            setattr(model, name, _QuantLinear(child))
        else:
            _replace(child)


def static_int8(model: nn.Module, calibration: Iterable[Any]) -> nn.Module:
    """A quantized copy of ``model`` (LSTMs and Linears static int8), calibrated by scoring ``calibration``."""
    copy_ = copy.deepcopy(model).eval()
    _replace(copy_)
    for m in copy_.modules():
        if isinstance(m, _QuantLinear | _QuantLayer):
            m.qconfig = QCONFIG_LINEAR if isinstance(m, _QuantLinear) else QCONFIG
        if isinstance(m, _QuantLayer):
            m.qx.qconfig = m.qh.qconfig = m.qc.qconfig = QCONFIG_STUB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        prepared = tq.prepare(copy_, prepare_custom_config_dict=CUSTOM)
        with torch.no_grad():
            for batch in calibration:
                prepared.score_batch(batch, None)
        return tq.convert(prepared, convert_custom_config_dict=CUSTOM).eval()
