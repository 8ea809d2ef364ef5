"""Machinery shared by the modular LSTM and GRU: gate projections, layer stacking, packing, conversion.

A modular cell exposes ``fc_gate_x`` (input projection) and ``step(x_proj, state)`` (everything that
depends on the previous state). A layer projects the inputs of *all* time steps with one call to
``fc_gate_x`` and runs only ``step`` inside the time loop, so the loop does the minimum of Python work
while every op is still a module that hooks and quantizer wrappers see.

A cell may also carry ``fused_loop``, a callable ``(data, batch, initial, reverse=...) -> (outputs,
final) | None`` that runs a whole equal-length sequence at once; quantizers attach one (see
compress/quant/fused/lstm.py), and None from it means "run the steps".

Unpadded and packed inputs share one code path: a sequence is a flat ``[N, features]`` tensor of
time-major rows plus ``sizes``, the number of active sequences per time step (``PackedSequence``
layout; an unpacked ``[T, B, F]`` input is the special case ``sizes = [B] * T``).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from compress.errors import ConversionError

State = tuple[torch.Tensor, ...]
StepFn = Callable[[torch.Tensor, State], State]
TensorOrPacked = torch.Tensor | PackedSequence


class ModularCellBase(nn.Module, abc.ABC):
    """Gate projections and PyTorch-compatible parameter mapping shared by the modular cells.

    Subclasses set ``GATES`` (gate blocks per projection), ``N_STATES`` (tensors in the recurrent
    state), ``_FLOAT`` (the PyTorch cell class) and implement ``step``.
    """

    GATES: ClassVar[int]
    N_STATES: ClassVar[int]
    _FLOAT: ClassVar[type[nn.Module]]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        kwargs = {"device": device, "dtype": dtype}
        self.fc_gate_x = nn.Linear(input_size, self.GATES * hidden_size, bias=bias, **kwargs)
        self.fc_gate_h = nn.Linear(hidden_size, self.GATES * hidden_size, bias=bias, **kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every weight and bias from U(-1/sqrt(H), 1/sqrt(H)), PyTorch's RNN initialisation."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    @abc.abstractmethod
    def step(self, x_proj: torch.Tensor, state: State) -> State:
        """One time step from the projected input ``fc_gate_x(x)`` and the previous state."""

    def param_map(self) -> dict[str, nn.Parameter]:
        """PyTorch parameter stem (``weight_ih``, ...) -> this cell's parameter holding it.

        Example:
            >>> from compress.modules import ModularGRUCell
            >>> sorted(ModularGRUCell(2, 3).param_map())
            ['bias_hh', 'bias_ih', 'weight_hh', 'weight_ih']
        """
        params = {"weight_ih": self.fc_gate_x.weight, "weight_hh": self.fc_gate_h.weight}
        if self.bias:
            params.update(bias_ih=self.fc_gate_x.bias, bias_hh=self.fc_gate_h.bias)
        return params

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def _cell_forward(self, input: torch.Tensor, state: State | None) -> State:
        if input.dim() not in (1, 2):
            raise ValueError(f"{type(self).__name__}: expected a 1D or 2D input, got {input.dim()}D.")
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
            state = None if state is None else tuple(s.unsqueeze(0) for s in state)
        if state is None:
            zeros = input.new_zeros(input.size(0), self.hidden_size)
            state = (zeros,) * self.N_STATES
        new = self.step(self.fc_gate_x(input), state)
        return new if batched else tuple(s.squeeze(0) for s in new)

    @classmethod
    def _from_float_cell(cls, cell: nn.Module) -> ModularCellBase:
        _check_type(cell, cls._FLOAT)
        new = cls(cell.input_size, cell.hidden_size, cell.bias, **_placement(cell.weight_ih))
        copy_params(new, cell, "", to_modular=True)
        return new.train(cell.training)

    def _to_float_cell(self) -> nn.Module:
        cell = self._FLOAT(self.input_size, self.hidden_size, self.bias, **_placement(self.fc_gate_x.weight))
        copy_params(self, cell, "", to_modular=False)
        return cell.train(self.training)


class ModularRNNBase(nn.Module):
    """Multi-layer, optionally bidirectional stack of modular cells with ``nn.LSTM``/``nn.GRU`` semantics.

    Submodules: ``cells.N`` (layer N, forward direction), ``cells_reverse.N`` (backward direction,
    only when bidirectional) and one ``dropout`` applied between layers (not after the last one).
    """

    _CELL: ClassVar[type[ModularCellBase]]
    _FLOAT: ClassVar[type[nn.RNNBase]]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout}.")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.cells = self._make_cells(device, dtype)
        if bidirectional:
            self.cells_reverse = self._make_cells(device, dtype)
        # One shared instance, as in the old tool, so stats files keep the single key "<rnn>.dropout".
        self.dropout = nn.Dropout(float(dropout))

    def _make_cells(self, device: torch.device | str | None, dtype: torch.dtype | None) -> nn.ModuleList:
        sizes = [self.input_size] + [self.hidden_size * self.num_directions] * (self.num_layers - 1)
        return nn.ModuleList(self._CELL(n, self.hidden_size, self.bias, device=device, dtype=dtype) for n in sizes)

    def directions(self) -> list[nn.ModuleList]:
        """The per-direction cell lists: ``[cells]`` or ``[cells, cells_reverse]``.

        Example:
            >>> from compress.modules import ModularGRU
            >>> len(ModularGRU(2, 3, bidirectional=True).directions())
            2
        """
        return [self.cells, self.cells_reverse] if self.bidirectional else [self.cells]

    def flatten_parameters(self) -> None:
        """Do nothing; exists because models written for ``nn.LSTM``/``nn.GRU`` call it."""

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout.p:
            text += f", dropout={self.dropout.p}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text

    def _run(self, input: TensorOrPacked, hx: State | None) -> tuple[TensorOrPacked, State]:
        """Shared forward: returns the output (same kind as ``input``) and the final states."""
        stack = self.__dict__.get("fused_stack")  # a quantizer's one-step path (compress/quant/fused/stack.py)
        if stack is not None:
            result = stack(input, hx)
            if result is not None:
                return result
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_idx, unsorted_idx = input
            sizes = batch_sizes.tolist()
            states = self._initial_states(hx, data, sizes[0], unbatched=False, order=sorted_idx)
            out, finals = self._layers(data, sizes, states)
            if unsorted_idx is not None:
                finals = tuple(f.index_select(1, unsorted_idx) for f in finals)
            return PackedSequence(out, batch_sizes, sorted_idx, unsorted_idx), finals
        if input.dim() not in (2, 3):
            raise ValueError(f"{type(self).__name__}: expected a 2D (unbatched) or 3D input, got {input.dim()}D.")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else input.transpose(0, 1) if self.batch_first else input
        steps, batch = x.shape[:2]
        if steps == 0:
            raise ValueError(f"{type(self).__name__}: expected a sequence length larger than 0.")
        states = self._initial_states(hx, x, batch, unbatched=unbatched, order=None)
        out, finals = self._layers(x.reshape(steps * batch, x.size(2)), [batch] * steps, states)
        out = out.view(steps, batch, out.size(1))
        if unbatched:
            return out.squeeze(1), tuple(f.squeeze(1) for f in finals)
        return (out.transpose(0, 1) if self.batch_first else out), finals

    def _initial_states(
        self, hx: State | None, like: torch.Tensor, batch: int, *, unbatched: bool, order: torch.Tensor | None
    ) -> State:
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if hx is None:
            zeros = like.new_zeros(shape)
            return (zeros,) * self._CELL.N_STATES
        if unbatched:
            hx = tuple(h.unsqueeze(1) for h in hx)
        for h in hx:
            if tuple(h.shape) != shape:
                raise ValueError(
                    f"{type(self).__name__}: expected initial state of shape {list(shape)}, got {list(h.shape)}."
                )
        # PyTorch takes the initial state in the caller's batch order, not in the packed (sorted) order.
        return hx if order is None else tuple(h.index_select(1, order) for h in hx)

    def forward_all_layers(self, input: torch.Tensor, hx: State | None = None) -> tuple[list[torch.Tensor], State]:
        """Every layer's output sequence (time-major ``[T, B, D*H]``) and the final states.

        ``nn.LSTM`` returns only the top layer's sequence; models that read every layer's hidden
        state at every step (the Performance RNN) use this instead of one call per time step, so
        that each layer's input projection runs once on all steps.

        Example:
            >>> from compress.modules import ModularGRU
            >>> outs, finals = ModularGRU(2, 3, num_layers=2).forward_all_layers(torch.zeros(4, 1, 2))
            >>> [tuple(o.shape) for o in outs], tuple(finals[0].shape)
            ([(4, 1, 3), (4, 1, 3)], (2, 1, 3))
        """
        if input.dim() != 3 or self.batch_first:
            raise ValueError(f"{type(self).__name__}.forward_all_layers: expected a time-major 3D input.")
        steps, batch = input.shape[:2]
        states = self._initial_states(_as_tuple(hx), input, batch, unbatched=False, order=None)
        outputs: list[torch.Tensor] = []
        _, finals = self._layers(input.reshape(steps * batch, input.size(2)), [batch] * steps, states, outputs)
        return [o.view(steps, batch, o.size(1)) for o in outputs], finals

    def _layers(
        self, data: torch.Tensor, sizes: list[int], states: State, outputs: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, State]:
        finals: list[list[torch.Tensor]] = [[] for _ in states]
        directions = self.directions()
        for layer in range(self.num_layers):
            if layer:
                data = self.dropout(data)
            outs = []
            for d, cells in enumerate(directions):
                index = layer * self.num_directions + d
                initial = tuple(s[index] for s in states)
                out, final = run_direction(cells[layer], data, sizes, initial, reverse=d == 1)
                outs.append(out)
                for kind, tensor in enumerate(final):
                    finals[kind].append(tensor)
            data = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
            if outputs is not None:
                outputs.append(data)
        return data, tuple(torch.stack(f) for f in finals)

    @classmethod
    def _from_float_rnn(cls, rnn: nn.Module) -> ModularRNNBase:
        _check_type(rnn, cls._FLOAT)
        if getattr(rnn, "proj_size", 0):
            raise ConversionError(
                f"{rnn!r} uses proj_size={rnn.proj_size}, which the modular LSTM does not implement; "
                "leave this module out of the conversion (converter arg 'types') or drop the projection."
            )
        new = cls(
            rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bias, rnn.batch_first, rnn.dropout,
            rnn.bidirectional, **_placement(rnn.weight_ih_l0),
        )  # fmt: skip
        for layer, direction, cell in new._indexed_cells():
            copy_params(cell, rnn, _suffix(layer, direction), to_modular=True)
        return new.train(rnn.training)

    def _to_float_rnn(self) -> nn.Module:
        rnn = self._FLOAT(
            self.input_size, self.hidden_size, self.num_layers, self.bias, self.batch_first, self.dropout.p,
            self.bidirectional, **_placement(self.cells[0].fc_gate_x.weight),
        )  # fmt: skip
        for layer, direction, cell in self._indexed_cells():
            copy_params(cell, rnn, _suffix(layer, direction), to_modular=False)
        return rnn.train(self.training)

    def _indexed_cells(self) -> list[tuple[int, int, ModularCellBase]]:
        return [(k, d, cells[k]) for d, cells in enumerate(self.directions()) for k in range(self.num_layers)]


def run_direction(
    cell: ModularCellBase, data: torch.Tensor, sizes: list[int], initial: State, *, reverse: bool
) -> tuple[torch.Tensor, State]:
    """Run one cell over a flat time-major sequence in one direction.

    Args:
        cell: the modular cell.
        data: ``[sum(sizes), features]`` time-major rows.
        sizes: active batch size per time step, non-increasing (``PackedSequence.batch_sizes``).
        initial: initial state tensors, each ``[sizes[0], H]``.
        reverse: run from the last time step to the first.

    Returns:
        The ``[sum(sizes), H]`` outputs in the order of ``data`` and the final state, ``[sizes[0], H]`` each.

    Example:
        >>> from compress.modules import ModularGRUCell
        >>> cell = ModularGRUCell(2, 3)
        >>> out, (h,) = run_direction(cell, torch.ones(5, 2), [2, 2, 1], (torch.zeros(2, 3),), reverse=False)
        >>> out.shape, h.shape
        (torch.Size([5, 3]), torch.Size([2, 3]))
    """
    # The input projection of all time steps in one call: exact, and far cheaper than T small calls.
    fused = getattr(cell, "fused_loop", None)
    if fused is not None and len(set(sizes)) == 1:  # a quantizer's loop on codes (compress/quant/fused/lstm.py)
        result = fused(data, sizes[0], initial, reverse=reverse)
        if result is not None:
            return result
    projected = cell.fc_gate_x(data)
    # A model that calls the layer one step at a time pays no split per call.
    steps = (projected,) if len(sizes) == 1 else torch.split(projected, sizes)
    run = _run_backward if reverse else _run_forward
    out, final = run(cell.step, steps, sizes, initial)
    return torch.cat(out), final


def _run_forward(step: StepFn, steps: Sequence[torch.Tensor], sizes: list[int], state: State) -> tuple[list, State]:
    outs = []
    ended = []  # final states of sequences that stopped early, longest-surviving last
    active = sizes[0]
    for x, n in zip(steps, sizes, strict=True):
        if n < active:
            ended.append(tuple(s[n:] for s in state))
            state = tuple(s[:n] for s in state)
            active = n
        state = step(x, state)
        outs.append(state[0])
    if ended:
        ended.append(state)
        state = tuple(torch.cat([e[k] for e in reversed(ended)]) for k in range(len(state)))
    return outs, state


def _run_backward(step: StepFn, steps: Sequence[torch.Tensor], sizes: list[int], initial: State) -> tuple[list, State]:
    outs = []
    active = sizes[-1]
    state = tuple(s[:active] for s in initial)
    for x, n in zip(reversed(steps), reversed(sizes), strict=True):
        if n > active:
            # Shorter sequences start here (going backwards), from their own initial state.
            state = tuple(torch.cat((s, s0[active:n])) for s, s0 in zip(state, initial, strict=True))
            active = n
        state = step(x, state)
        outs.append(state[0])
    outs.reverse()
    return outs, state


def copy_params(cell: ModularCellBase, other: nn.Module, suffix: str, *, to_modular: bool) -> None:
    """Copy the weights and biases between a modular cell and PyTorch parameters ``<stem><suffix>``.

    Example:
        >>> from compress.modules import ModularGRUCell
        >>> cell, ref = ModularGRUCell(2, 3), torch.nn.GRUCell(2, 3)
        >>> copy_params(cell, ref, "", to_modular=True)
        >>> bool(torch.equal(cell.fc_gate_h.bias, ref.bias_hh))
        True
    """
    with torch.no_grad():
        for stem, param in cell.param_map().items():
            theirs = getattr(other, stem + suffix)
            src, dst = (theirs, param) if to_modular else (param, theirs)
            dst.copy_(src)
            dst.requires_grad_(src.requires_grad)


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def _placement(tensor: torch.Tensor) -> dict[str, object]:
    return {"device": tensor.device, "dtype": tensor.dtype}


def _check_type(module: nn.Module, expected: type[nn.Module]) -> None:
    if not isinstance(module, expected):
        raise TypeError(f"Expected an {expected.__name__}, got {type(module).__name__}.")


def _as_tuple(hx: State | torch.Tensor | None) -> State | None:
    return (hx,) if isinstance(hx, torch.Tensor) else hx
