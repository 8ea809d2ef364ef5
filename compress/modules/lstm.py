"""LSTM whose every gate projection, activation and element-wise op is a named submodule.

The names are the old tool's (``cells.0.fc_gate_x``, ``cells.1.eltwisemult_hidden``, ...) so that
override regexes and statistics files written for it keep working. See docs/modules.md.

Example:
    >>> import torch
    >>> ref = torch.nn.LSTM(4, 8, num_layers=2)
    >>> lstm = ModularLSTM.from_float(ref)
    >>> x = torch.randn(5, 3, 4)
    >>> bool((lstm(x)[0] - ref(x)[0]).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from compress.modules._recurrent import ModularCellBase, ModularRNNBase, State
from compress.modules.ops import EltwiseAdd, EltwiseMult

__all__ = ["ModularLSTMCell", "ModularLSTM"]


class ModularLSTMCell(ModularCellBase):
    """Drop-in ``nn.LSTMCell`` built from addressable modules (gate order i, f, g, o as PyTorch).

    ``fc_gate_x`` holds ``weight_ih``/``bias_ih`` and ``fc_gate_h`` holds ``weight_hh``/``bias_hh``.

    Example:
        >>> cell = ModularLSTMCell(4, 8)
        >>> h, c = cell(torch.randn(3, 4))
        >>> h.shape, c.shape
        (torch.Size([3, 8]), torch.Size([3, 8]))
    """

    GATES = 4
    N_STATES = 2
    _FLOAT = nn.LSTMCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.eltwiseadd_gate = EltwiseAdd()
        self.act_i = nn.Sigmoid()
        self.act_f = nn.Sigmoid()
        self.act_g = nn.Tanh()
        self.act_o = nn.Sigmoid()
        self.eltwisemult_cell_forget = EltwiseMult()
        self.eltwisemult_cell_input = EltwiseMult()
        self.eltwiseadd_cell = EltwiseAdd()
        self.act_h = nn.Tanh()
        self.eltwisemult_hidden = EltwiseMult()

    def forward(
        self, input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h', c')`` for input ``[B, in]`` (or unbatched ``[in]``) and state ``(h, c)`` (zeros if None).

        Example:
            >>> cell = ModularLSTMCell(4, 8)
            >>> h, c = cell(torch.randn(4), (torch.zeros(8), torch.zeros(8)))
            >>> h.shape
            torch.Size([8])
        """
        h, c = self._cell_forward(input, hx)
        return h, c

    def step(self, x_proj: torch.Tensor, state: State) -> State:
        """One step from the projected input ``fc_gate_x(x)`` (``[B, 4H]``) and ``(h, c)``.

        Example:
            >>> cell = ModularLSTMCell(4, 8)
            >>> zeros = torch.zeros(3, 8)
            >>> h, c = cell.step(cell.fc_gate_x(torch.randn(3, 4)), (zeros, zeros))
            >>> h.shape
            torch.Size([3, 8])
        """
        h, c = state
        gates = self.eltwiseadd_gate(x_proj, self.fc_gate_h(h))
        i, f, g, o = gates.chunk(4, 1)
        i, f, g, o = self.act_i(i), self.act_f(f), self.act_g(g), self.act_o(o)
        c = self.eltwiseadd_cell(self.eltwisemult_cell_forget(f, c), self.eltwisemult_cell_input(i, g))
        h = self.eltwisemult_hidden(o, self.act_h(c))
        return h, c

    @classmethod
    def from_float(cls, module: nn.LSTMCell) -> ModularLSTMCell:
        """A modular copy of ``module`` (same weights, both biases, device, dtype and train/eval mode).

        Example:
            >>> ModularLSTMCell.from_float(torch.nn.LSTMCell(4, 8)).fc_gate_x.weight.shape
            torch.Size([32, 4])
        """
        return cls._from_float_cell(module)

    def to_float(self) -> nn.LSTMCell:
        """The equivalent ``nn.LSTMCell`` (exact copy of the parameters).

        Example:
            >>> ModularLSTMCell(4, 8).to_float()
            LSTMCell(4, 8)
        """
        return self._to_float_cell()


class ModularLSTM(ModularRNNBase):
    """Drop-in ``nn.LSTM`` (layers, bias, batch_first, dropout, bidirectional, packed input).

    Submodules: ``cells.N`` / ``cells_reverse.N`` (:class:`ModularLSTMCell`) and ``dropout``
    (applied between layers; its probability is ``dropout.p``). ``proj_size`` is not supported.

    Example:
        >>> lstm = ModularLSTM(4, 8, num_layers=2, batch_first=True)
        >>> out, (h, c) = lstm(torch.randn(3, 5, 4))
        >>> out.shape, h.shape
        (torch.Size([3, 5, 8]), torch.Size([2, 3, 8]))
    """

    _CELL = ModularLSTMCell
    _FLOAT = nn.LSTM

    def forward(
        self, input: torch.Tensor | PackedSequence, hx: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor | PackedSequence, tuple[torch.Tensor, torch.Tensor]]:
        """``(output, (h_n, c_n))`` with ``nn.LSTM``'s shapes and layouts.

        Example:
            >>> out, (h, c) = ModularLSTM(4, 8, bidirectional=True)(torch.randn(5, 4))
            >>> out.shape, c.shape
            (torch.Size([5, 16]), torch.Size([2, 8]))
        """
        output, (h, c) = self._run(input, hx)
        return output, (h, c)

    @classmethod
    def from_float(cls, module: nn.LSTM) -> ModularLSTM:
        """A modular copy of ``module``: ``weight_ih_l{k}[_reverse]`` -> ``cells[_reverse].k.fc_gate_x``, etc.

        Example:
            >>> ModularLSTM.from_float(torch.nn.LSTM(4, 8, num_layers=2)).cells[1].fc_gate_x.weight.shape
            torch.Size([32, 8])
        """
        return cls._from_float_rnn(module)

    def to_float(self) -> nn.LSTM:
        """The equivalent ``nn.LSTM`` (exact copy of the parameters).

        Example:
            >>> ModularLSTM(4, 8, num_layers=2).to_float()
            LSTM(4, 8, num_layers=2)
        """
        return self._to_float_rnn()
