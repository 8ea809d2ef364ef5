"""GRU whose every gate projection, activation and element-wise op is a named submodule.

Computes PyTorch's GRU (gate order r, z, n)::

    r  = act_r(eltwiseadd_reset(x_r, h_r))              # x_* = fc_gate_x(x) blocks, h_* = fc_gate_h(h)
    z  = act_z(eltwiseadd_update(x_z, h_z))
    n  = act_n(eltwiseadd_new(x_n, eltwisemult_new_reset(r, h_n)))   # r scales W_hn h + b_hn
    h' = eltwiseadd_hidden(eltwisemult_update_new(oneminus_update(z), n), eltwisemult_update_hidden(z, h))

The last line keeps the documented form ``(1 - z) * n + z * h`` rather than PyTorch's kernel form
``n + z * (h - n)``: both terms are then bounded by ``|n|, |h| <= 1``, which suits fixed-point ranges.
See docs/modules.md.

Example:
    >>> import torch
    >>> ref = torch.nn.GRU(4, 8, num_layers=2)
    >>> gru = ModularGRU.from_float(ref)
    >>> x = torch.randn(5, 3, 4)
    >>> bool((gru(x)[0] - ref(x)[0]).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from compress.modules._recurrent import ModularCellBase, ModularRNNBase, State
from compress.modules.ops import EltwiseAdd, EltwiseMult, OneMinus

__all__ = ["ModularGRUCell", "ModularGRU"]


class ModularGRUCell(ModularCellBase):
    """Drop-in ``nn.GRUCell`` built from addressable modules (gate order r, z, n as PyTorch).

    ``fc_gate_x`` holds ``weight_ih``/``bias_ih`` and ``fc_gate_h`` holds ``weight_hh``/``bias_hh``.

    Example:
        >>> ModularGRUCell(4, 8)(torch.randn(3, 4)).shape
        torch.Size([3, 8])
    """

    GATES = 3
    N_STATES = 1
    _FLOAT = nn.GRUCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)
        self.eltwiseadd_reset = EltwiseAdd()
        self.act_r = nn.Sigmoid()
        self.eltwiseadd_update = EltwiseAdd()
        self.act_z = nn.Sigmoid()
        self.eltwisemult_new_reset = EltwiseMult()
        self.eltwiseadd_new = EltwiseAdd()
        self.act_n = nn.Tanh()
        self.oneminus_update = OneMinus()
        self.eltwisemult_update_new = EltwiseMult()
        self.eltwisemult_update_hidden = EltwiseMult()
        self.eltwiseadd_hidden = EltwiseAdd()

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        """``h'`` for input ``[B, in]`` (or unbatched ``[in]``) and state ``h`` (zeros if None).

        Example:
            >>> ModularGRUCell(4, 8)(torch.randn(4), torch.zeros(8)).shape
            torch.Size([8])
        """
        (h,) = self._cell_forward(input, None if hx is None else (hx,))
        return h

    def step(self, x_proj: torch.Tensor, state: State) -> State:
        """One step from the projected input ``fc_gate_x(x)`` (``[B, 3H]``) and ``(h,)``.

        Example:
            >>> cell = ModularGRUCell(4, 8)
            >>> (h,) = cell.step(cell.fc_gate_x(torch.randn(3, 4)), (torch.zeros(3, 8),))
            >>> h.shape
            torch.Size([3, 8])
        """
        (h,) = state
        x_r, x_z, x_n = x_proj.chunk(3, 1)
        h_r, h_z, h_n = self.fc_gate_h(h).chunk(3, 1)
        r = self.act_r(self.eltwiseadd_reset(x_r, h_r))
        z = self.act_z(self.eltwiseadd_update(x_z, h_z))
        n = self.act_n(self.eltwiseadd_new(x_n, self.eltwisemult_new_reset(r, h_n)))
        keep_new = self.eltwisemult_update_new(self.oneminus_update(z), n)
        return (self.eltwiseadd_hidden(keep_new, self.eltwisemult_update_hidden(z, h)),)

    @classmethod
    def from_float(cls, module: nn.GRUCell) -> ModularGRUCell:
        """A modular copy of ``module`` (same weights, both biases, device, dtype and train/eval mode).

        Example:
            >>> ModularGRUCell.from_float(torch.nn.GRUCell(4, 8)).fc_gate_h.weight.shape
            torch.Size([24, 8])
        """
        return cls._from_float_cell(module)

    def to_float(self) -> nn.GRUCell:
        """The equivalent ``nn.GRUCell`` (exact copy of the parameters).

        Example:
            >>> ModularGRUCell(4, 8, bias=False).to_float()
            GRUCell(4, 8, bias=False)
        """
        return self._to_float_cell()


class ModularGRU(ModularRNNBase):
    """Drop-in ``nn.GRU`` (layers, bias, batch_first, dropout, bidirectional, packed input).

    Submodules: ``cells.N`` / ``cells_reverse.N`` (:class:`ModularGRUCell`) and ``dropout``
    (applied between layers; its probability is ``dropout.p``).

    Example:
        >>> gru = ModularGRU(4, 8, num_layers=3)
        >>> out, h = gru(torch.randn(5, 2, 4))
        >>> out.shape, h.shape
        (torch.Size([5, 2, 8]), torch.Size([3, 2, 8]))
    """

    _CELL = ModularGRUCell
    _FLOAT = nn.GRU

    def forward(
        self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
        """``(output, h_n)`` with ``nn.GRU``'s shapes and layouts.

        Example:
            >>> out, h = ModularGRU(4, 8, batch_first=True)(torch.randn(2, 5, 4), torch.zeros(1, 2, 8))
            >>> out.shape, h.shape
            (torch.Size([2, 5, 8]), torch.Size([1, 2, 8]))
        """
        output, (h,) = self._run(input, None if hx is None else (hx,))
        return output, h

    @classmethod
    def from_float(cls, module: nn.GRU) -> ModularGRU:
        """A modular copy of ``module``: ``weight_ih_l{k}[_reverse]`` -> ``cells[_reverse].k.fc_gate_x``, etc.

        Example:
            >>> ModularGRU.from_float(torch.nn.GRU(4, 8, bidirectional=True)).cells_reverse[0].fc_gate_x
            Linear(in_features=4, out_features=24, bias=True)
        """
        return cls._from_float_rnn(module)

    def to_float(self) -> nn.GRU:
        """The equivalent ``nn.GRU`` (exact copy of the parameters).

        Example:
            >>> ModularGRU(4, 8, batch_first=True).to_float()
            GRU(4, 8, batch_first=True)
        """
        return self._to_float_rnn()
