"""Attaching the fused loops: every fully quantized modular LSTM/GRU cell gets its loop, every other one a reason.

Example:
    >>> from compress.modules import ModularLSTM
    >>> attach_fused_loops(ModularLSTM(2, 3))
    {'cells.0': 'fc_gate_x is Linear, not an integer linear wrapper'}
"""

from __future__ import annotations

from torch import nn

from compress.modules import ModularGRU, ModularGRUCell, ModularLSTM, ModularLSTMCell
from compress.quant.fused.gru import FusedGRULoop, fused_gru_blocker
from compress.quant.fused.lstm import FusedLSTMLoop, fused_lstm_blocker
from compress.quant.fused.stack import FusedStack
from compress.quant.wrappers.base import QuantWrapper

__all__ = ["attach_fused_loops"]


def attach_fused_loops(model: nn.Module) -> dict[str, str]:
    """Give every fully quantized modular LSTM/GRU cell of ``model`` its fused loop; returns ``{cell: why not}``.

    Cells whose wrappers run with ``integer_kernels: off`` are left alone (the emulation is what was asked).

    Example:
        >>> from compress.modules import ModularLSTM
        >>> attach_fused_loops(ModularLSTM(2, 3))
        {'cells.0': 'fc_gate_x is Linear, not an integer linear wrapper'}
    """
    kinds = {ModularLSTMCell: (fused_lstm_blocker, FusedLSTMLoop), ModularGRUCell: (fused_gru_blocker, FusedGRULoop)}
    blocked: dict[str, str] = {}
    for name, module in model.named_modules():
        if type(module) not in kinds:
            continue
        blocker, loop = kinds[type(module)]
        why = blocker(module)
        for child_name, child in module.named_children():  # the report's kernel column: how evaluation runs it
            if isinstance(child, QuantWrapper):
                child.fused_kernel = None if why else "fused loop" if "fc_gate" in child_name else "table, fused loop"
        if why:
            blocked[name] = why
            module.__dict__.pop("fused_loop", None)
            continue
        module.fused_loop = loop(module)
    _attach_stacks(model)
    return blocked


def _attach_stacks(model: nn.Module) -> None:
    """A one-step stack for every unidirectional modular LSTM/GRU whose every cell got its fused loop."""
    for module in model.modules():
        if not isinstance(module, (ModularLSTM, ModularGRU)):
            continue
        if module.bidirectional or any("fused_loop" not in cell.__dict__ for cell in module.cells):
            module.__dict__.pop("fused_stack", None)
        else:
            module.fused_stack = FusedStack(module)
