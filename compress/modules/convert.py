"""Swap PyTorch recurrent modules for their modular equivalents (and back), anywhere in a model.

Registers the converter ``rnn_to_modular`` in :data:`compress.registry.CONVERTERS`.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.GRU(4, 8))
    >>> model, log = convert_rnns(model)
    >>> log
    ['0: GRU(4, 8) -> ModularGRU']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from compress.errors import ConversionError
from compress.modules._recurrent import ModularRNNBase
from compress.modules.gru import ModularGRU, ModularGRUCell
from compress.modules.lstm import ModularLSTM, ModularLSTMCell
from compress.registry import CONVERTERS

__all__ = ["RNN_TYPES", "convert_rnns", "revert_rnns", "rnn_to_modular"]

#: Converter type name -> (PyTorch class, modular class).
RNN_TYPES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "lstm": (nn.LSTM, ModularLSTM),
    "gru": (nn.GRU, ModularGRU),
    "lstm_cell": (nn.LSTMCell, ModularLSTMCell),
    "gru_cell": (nn.GRUCell, ModularGRUCell),
}

ROOT_NAME = "(model)"

Replace = Callable[[nn.Module], nn.Module]


def convert_rnns(model: nn.Module, types: Iterable[str] | None = None) -> tuple[nn.Module, list[str]]:
    """Replace every ``nn.LSTM``, ``nn.GRU``, ``nn.LSTMCell``, ``nn.GRUCell`` by its modular twin.

    Matches exact types only: a subclass may override ``forward``, which a conversion would silently
    drop, so subclasses are left alone. A module shared under several names is converted once and
    stays shared. ``model`` is modified in place, except when it is itself an RNN.

    Args:
        model: the model; its submodules are replaced in place.
        types: which of ``lstm``, ``gru``, ``lstm_cell``, ``gru_cell`` to convert (default: all).

    Returns:
        The converted model (``model`` itself unless it is an RNN) and one line per replaced module,
        ``"<name>: LSTM(256, 256, num_layers=2) -> ModularLSTM"``.

    Example:
        >>> import torch
        >>> model = torch.nn.ModuleDict({"rnn": torch.nn.LSTM(4, 8, num_layers=2), "cell": torch.nn.GRUCell(8, 8)})
        >>> model, log = convert_rnns(model, types=["lstm"])
        >>> log, type(model["cell"]).__name__
        (['rnn: LSTM(4, 8, num_layers=2) -> ModularLSTM'], 'GRUCell')
    """
    table: dict[type, Replace] = {fl: mod.from_float for fl, mod in _selected(types)}
    return _swap(model, table)


def revert_rnns(model: nn.Module, types: Iterable[str] | None = None) -> tuple[nn.Module, list[str]]:
    """The inverse of :func:`convert_rnns`: modular RNNs back to ``nn.LSTM``, ``nn.GRU``, ... .

    Args:
        model: the model; its submodules are replaced in place.
        types: which of ``lstm``, ``gru``, ``lstm_cell``, ``gru_cell`` to revert (default: all).

    Returns:
        The reverted model and one line per replaced module.

    Example:
        >>> import torch
        >>> model, log = revert_rnns(torch.nn.Sequential(ModularLSTM(4, 8)))
        >>> log
        ['0: ModularLSTM(4, 8) -> LSTM']
    """
    table: dict[type, Replace] = {mod: mod.to_float for _, mod in _selected(types)}
    return _swap(model, table)


def _selected(types: Iterable[str] | None) -> list[tuple[type[nn.Module], type[nn.Module]]]:
    if types is None:
        return list(RNN_TYPES.values())
    if isinstance(types, str):
        types = [types]
    names = list(types)
    unknown = [t for t in names if t not in RNN_TYPES]
    if unknown:
        raise ConversionError(
            f"Unknown RNN type(s) {unknown} in 'types'; choose from {sorted(RNN_TYPES)} (or leave 'types' out for all)."
        )
    return [RNN_TYPES[t] for t in names]


def _swap(model: nn.Module, table: dict[type, Replace]) -> tuple[nn.Module, list[str]]:
    log: list[str] = []
    replace = table.get(type(model))
    if replace is not None:
        new = replace(model)
        log.append(_describe(ROOT_NAME, model, new))
        return new, log
    # id -> (old, new): keeping `old` alive prevents id reuse by modules created during the walk.
    memo: dict[int, tuple[nn.Module, nn.Module]] = {}
    _swap_children(model, "", table, memo, log)
    return model, log


def _swap_children(
    parent: nn.Module, prefix: str, table: dict[type, Replace], memo: dict[int, Any], log: list[str]
) -> None:
    for name, child in list(parent.named_children()):
        path = prefix + name
        replace = table.get(type(child))
        if replace is None:
            # A modular RNN's cells belong to it: reverting only cells must not break the RNN.
            if not isinstance(child, ModularRNNBase):
                _swap_children(child, path + ".", table, memo, log)
            continue
        if id(child) not in memo:
            memo[id(child)] = (child, replace(child))
        new = memo[id(child)][1]
        setattr(parent, name, new)
        log.append(_describe(path, child, new))


def _describe(path: str, old: nn.Module, new: nn.Module) -> str:
    return f"{path}: {type(old).__name__}({old.extra_repr()}) -> {type(new).__name__}"


CONVERTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "types": {
            "type": "array",
            "items": {"type": "string", "enum": list(RNN_TYPES)},
            "minItems": 1,
            "uniqueItems": True,
            "description": "Which recurrent module types to convert: any of lstm, gru, lstm_cell, gru_cell. "
            "Default: all four.",
        }
    },
    "additionalProperties": False,
}


@CONVERTERS.register(
    "rnn_to_modular",
    schema=CONVERTER_SCHEMA,
    description="Replace nn.LSTM/nn.GRU/nn.LSTMCell/nn.GRUCell by modular versions whose gates and "
    "element-wise ops are named submodules.",
)
def rnn_to_modular(model: nn.Module, *, types: list[str] | None = None) -> tuple[nn.Module, list[str]]:
    """Converter ``rnn_to_modular``: :func:`convert_rnns` with the schedule's ``types`` argument.

    Example:
        >>> import torch
        >>> rnn_to_modular(torch.nn.LSTM(4, 8))[1]
        ['(model): LSTM(4, 8) -> ModularLSTM']
    """
    return convert_rnns(model, types)
