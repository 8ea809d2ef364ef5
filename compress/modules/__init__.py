"""Modules whose every internal op is addressable: modular RNNs and element-wise ops."""

from compress.modules.convert import convert_rnns, revert_rnns, rnn_to_modular
from compress.modules.gru import ModularGRU, ModularGRUCell
from compress.modules.lstm import ModularLSTM, ModularLSTMCell
from compress.modules.ops import Concat, EltwiseAdd, EltwiseMult, OneMinus

__all__ = [
    "Concat",
    "EltwiseAdd",
    "EltwiseMult",
    "OneMinus",
    "ModularLSTM",
    "ModularLSTMCell",
    "ModularGRU",
    "ModularGRUCell",
    "convert_rnns",
    "revert_rnns",
    "rnn_to_modular",
]
