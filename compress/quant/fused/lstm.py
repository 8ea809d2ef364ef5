"""The fused integer time loop of a quantized LSTM layer: one int8 product and a few table lookups per step.

In a fully quantized :class:`~compress.modules.ModularLSTMCell` every value that crosses a step is a
code on a known grid of at most 256 codes, and every gate op after ``fc_gate_h`` is an element-wise
function of one or two such codes. Such a function is exactly a table: built once by running the
op's own wrapper on every code (pair), it returns the wrapper's output code bit for bit. So a step is

    a8    = HIN[h]                              # fc_gate_h's int8 input codes
    q     = requant(int8_product(a8, W) + corr)     # fc_gate_h's output codes (the wrapper's float64 ops)
    gates = GATE[x_t, q]                        # eltwiseadd_gate followed by act_i/f/g/o, all four at once
    c     = CELL[MULF[f, c], MULI[i, g]]        # forget and input products, then their sum
    h     = HID[o, c]                           # act_h followed by eltwisemult_hidden

with ``x_t`` the codes of ``fc_gate_x`` on all steps (computed before the loop, one batched product).
The loop keeps codes only; outputs are dequantized once at the end. Outputs and final states are
identical (``torch.equal``) to running the wrappers one op at a time (tests/quant/test_fused_lstm.py).

The loop declines (returns None, and the per-op modules run) when a call could observe the ops:
hooks on the cell's modules, saturation counting, gradients, or sequences of unequal length.
Activation tables are built from both the vectorized and the scalar evaluation of the activation;
when the two disagree on any code the layer is not fused (the per-op path would depend on the
element's position).
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import nn

from compress.quant.fused.common import (
    CLoop,
    FusedLoop,
    _act_table,
    _c_usable,
    _offset_codes,
    _on_grid,
    _pair_table,
    _values,
    fused_blocker,
    hidden_product,
    run_c_loop,
)
from compress.quant.kernels import ckernels, cpaths
from compress.quant.wrappers.base import QuantWrapper
from compress.quant.wrappers.ops import EltwiseAddQuantWrapper, EltwiseMultQuantWrapper
from compress.quant.wrappers.params import LinearQuantWrapper

__all__ = ["FusedLSTMLoop", "fused_lstm_blocker"]

_ACTS = ("act_i", "act_f", "act_g", "act_o", "act_h")
_PAIRS = {
    "eltwiseadd_gate": EltwiseAddQuantWrapper,
    "eltwisemult_cell_forget": EltwiseMultQuantWrapper,
    "eltwisemult_cell_input": EltwiseMultQuantWrapper,
    "eltwiseadd_cell": EltwiseAddQuantWrapper,
    "eltwisemult_hidden": EltwiseMultQuantWrapper,
}


def fused_lstm_blocker(cell: nn.Module) -> str:
    """Why ``cell`` cannot run the fused integer loop ("" when it can).

    Example:
        >>> from compress.modules import ModularLSTMCell
        >>> fused_lstm_blocker(ModularLSTMCell(2, 3))
        'fc_gate_x is Linear, not an integer linear wrapper'
    """
    return fused_blocker(cell, {name: (nn.Sigmoid, nn.Tanh) for name in _ACTS}, _PAIRS)


class _Tables:
    """Every table of one cell for one (dtype, device); see the module doc for the names."""

    def __init__(self, cell: nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        def values(module: QuantWrapper) -> torch.Tensor:
            return _values(module.grid("output"), dtype, device)

        fc_x, fc_h, add = cell.fc_gate_x, cell.fc_gate_h, cell.eltwiseadd_gate
        acts = {name: _act_table(getattr(cell, name), values(add)) for name in _ACTS if name != "act_h"}
        acts["act_h"] = _act_table(cell.act_h, values(cell.eltwiseadd_cell))
        self.unstable = sorted(name for name, table in acts.items() if table is None)
        if self.unstable:
            return
        gate_sum = _pair_table(add, values(fc_x), values(fc_h)).to(torch.int64)
        self.n_x, self.n_h = fc_x.grid("output").qmax - fc_x.grid("output").qmin + 1, len(values(fc_h))
        self.gate = torch.cat([acts[name][gate_sum] for name in ("act_i", "act_f", "act_g", "act_o")]).to(torch.int32)
        self.n_f, self.n_i, self.n_g = len(values(cell.act_f)), len(values(cell.act_i)), len(values(cell.act_g))
        self.n_c = len(values(cell.eltwiseadd_cell))
        self.mul_f = _pair_table(cell.eltwisemult_cell_forget, values(cell.act_f), values(cell.eltwiseadd_cell))
        self.mul_i = _pair_table(cell.eltwisemult_cell_input, values(cell.act_i), values(cell.act_g))
        self.n_mi = len(values(cell.eltwisemult_cell_input))
        products = values(cell.eltwisemult_cell_forget), values(cell.eltwisemult_cell_input)
        self.cell = _pair_table(cell.eltwiseadd_cell, *products)
        tanh_c = values(cell.act_h)[acts["act_h"]]
        self.hidden = _pair_table(cell.eltwisemult_hidden, values(cell.act_o), tanh_c)
        h_values = values(cell.eltwisemult_hidden)
        shift = fc_h.int_mm.x_shift
        self.h_in = fc_h._codes(h_values, "input").sub_(shift).to(torch.int8)
        self.h_values, self.c_values = h_values, values(cell.eltwiseadd_cell)
        # Byte copies for the C kernel (every entry is an offset code below 256): 4x less cache.
        self.bytes = {k: getattr(self, k).to(torch.uint8) for k in ("gate", "mul_f", "mul_i", "cell", "hidden")}
        self._goff: torch.Tensor | None = None

    def c_gate_offsets(self, fc_h: LinearQuantWrapper, hidden: int) -> torch.Tensor:
        """int32 ``[4H]``: each column's gate block in the gate table, minus fc_gate_h's qmin (C kernel)."""
        if self._goff is None:
            gate = torch.arange(4 * hidden, dtype=torch.int64) // hidden
            self._goff = (gate * (self.n_x * self.n_h) - fc_h._qrange["output"][0]).to(torch.int32)
        return self._goff


class FusedLSTMLoop(FusedLoop):
    """Runs a quantized :class:`~compress.modules.ModularLSTMCell` over a sequence on codes (see module doc).

    Example:
        >>> # cell.fused_loop(data, batch, (h0, c0), reverse=False) -> (outputs, (h, c)) or None
    """

    def _make_tables(self, dtype: torch.dtype, device: torch.device) -> Any:
        return _Tables(self.cell, dtype, device)

    @property
    def c_loop(self) -> CLoop:
        return _C_LOOP

    def _fused(self, tables: Any, data: torch.Tensor, batch: int, initial: tuple, reverse: bool) -> Any:
        result = _run_c(self, tables, data, batch, initial, reverse) if _c_usable(self.cell, data) else None
        return result or _run(self.cell, tables, data, batch, initial, reverse)


def _initial_codes(cell: nn.Module, tables: _Tables, first: torch.Tensor, initial: tuple[torch.Tensor, ...]):
    """Codes of the state entering the loop, running the first step per op when ``initial`` is off the grids.

    ``first``: the layer input rows of the first step taken (projected here only when needed).
    """
    h_grid, c_grid = cell.eltwisemult_hidden.grid("output"), cell.eltwiseadd_cell.grid("output")
    h, c = _on_grid(initial[0], h_grid, tables.h_values), _on_grid(initial[1], c_grid, tables.c_values)
    if h is not None and c is not None:
        return h, c, False
    h_f, c_f = cell.step(cell.fc_gate_x(first), tuple(initial))
    return _offset_codes(h_f, h_grid).to(torch.int32), _offset_codes(c_f, c_grid).to(torch.int32), True


def _gate_base(cell: nn.Module, tables: _Tables, data: torch.Tensor) -> torch.Tensor:
    """``[T * B, 4H]`` int32: each step's gate-table index before fc_gate_h's code is added (see ``_run``).

    From fc_gate_x's codes (never dequantized): index = gate * n_x * n_h + (x_code - x_qmin) * n_h - h_qmin.
    """
    hidden, fc_x = cell.hidden_size, cell.fc_gate_x
    gate = torch.arange(4 * hidden, device=data.device, dtype=torch.int64) // hidden
    x_qmin, h_qmin = fc_x._qrange["output"][0], cell.fc_gate_h._qrange["output"][0]
    offsets = gate * (tables.n_x * tables.n_h) - x_qmin * tables.n_h - h_qmin
    return fc_x.output_codes(data, mul=tables.n_h, offsets=offsets)


def _steps(
    fc_h: LinearQuantWrapper,
    tables: _Tables,
    base: torch.Tensor,
    out: torch.Tensor,
    order: range,
    h: torch.Tensor,
    c: torch.Tensor,
    requant: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The time loop proper: the codes of every step's ``h`` go to ``out``; returns the last ``(h, c)`` codes."""
    batch, hidden = base.shape[1], base.shape[2] // 4
    for t in order:
        q = hidden_product(fc_h, tables.h_in.index_select(0, h.view(-1)).view(batch, hidden), requant)
        gates = tables.gate.index_select(0, base[t].add_(q.to(torch.int32)).view(-1)).view(batch, 4 * hidden)
        i, f, g, o = gates.chunk(4, 1)
        forget = tables.mul_f.index_select(0, torch.add(c.view(batch, hidden), f, alpha=tables.n_c).view(-1))
        inp = tables.mul_i.index_select(0, torch.add(g, i, alpha=tables.n_g).view(-1))
        c = tables.cell.index_select(0, torch.add(inp, forget, alpha=tables.n_mi))
        torch.index_select(tables.hidden, 0, torch.add(c.view(batch, hidden), o, alpha=tables.n_c).view(-1), out=out[t])
        h = out[t]
    return h, c


def _run(cell: nn.Module, tables: _Tables, data: torch.Tensor, batch: int, initial: tuple, reverse: bool):
    fc_h, hidden = cell.fc_gate_h, cell.hidden_size
    steps = data.shape[0] // batch
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    base = _gate_base(cell, tables, data).view(steps, batch, -1)
    out = torch.empty(steps, batch * hidden, dtype=torch.int32, device=data.device)
    first = data[order[0] * batch : (order[0] + 1) * batch]
    h, c, first_done = _initial_codes(cell, tables, first, initial)
    if first_done:
        out[order[0]] = h.view(-1)
        order = order[1:]
    requant = fc_h.requant_scale if fc_h._requant is None else fc_h._requant
    h, c = _steps(fc_h, tables, base, out, order, h, c, requant)
    values = tables.h_values.index_select(0, out.view(-1)).view(steps * batch, hidden)
    h_last, c_last = (tables.h_values.index_select(0, h.reshape(-1)), tables.c_values.index_select(0, c.reshape(-1)))
    return values, (h_last.view(batch, hidden), c_last.view(batch, hidden))


def _run_c(loop: FusedLoop, tables: _Tables, data: torch.Tensor, batch: int, initial: tuple, reverse: bool):
    """:func:`_run` as the C loop (:func:`~compress.quant.fused.common.run_c_loop`)."""
    return run_c_loop(loop, tables, data, batch, initial, reverse, _C_LOOP)


def _c_initial_codes(cell: nn.Module, tables: _Tables, first: torch.Tensor, initial: tuple) -> tuple:
    h, c, first_done = _initial_codes(cell, tables, first, initial)
    return (h, c), first_done


def _hold_c_step(held: dict[str, Any], cell: nn.Module, tables: _Tables, batch: int) -> None:
    """The buffers and the ``LstmStep`` struct of the C loop for ``batch`` rows (built once per batch size)."""
    fc_h, hidden = cell.fc_gate_h, cell.hidden_size
    h, c = (torch.zeros(batch, hidden, dtype=torch.int32) for _ in range(2))
    a8, mm = torch.zeros(batch, hidden, dtype=torch.int8), torch.empty(batch, 4 * hidden, dtype=torch.int32)
    codes, gates = torch.empty(4 * hidden, dtype=torch.float64), torch.empty(4 * hidden, dtype=torch.int32)
    goff = tables.c_gate_offsets(fc_h, hidden)
    keep = [h, c, a8, mm, codes, gates, goff]
    ptr, u8 = ckernels.ptr, tables.bytes
    args = ckernels.LstmStep(
        cpaths.requant_args(fc_h, mm, a8, keep), batch, hidden, tables.n_h, tables.n_c, tables.n_g, tables.n_mi,
        None, ptr(goff), ptr(u8["gate"]), ptr(u8["mul_f"]), ptr(u8["mul_i"]), ptr(u8["cell"]), ptr(u8["hidden"]),
        ptr(tables.h_in), ptr(tables.h_values), ptr(c), ptr(h), None, ptr(codes), ptr(gates), None,
        ptr(tables.c_values),
    )  # fmt: skip
    held.clear()
    held.update(h=h, c=c, a8=a8, mm=mm, keep=keep, args=args, ref=ctypes.byref(args), tables=tables)
    held.update(step=ckernels.library().lstm_step, product=fc_h.int_mm.product_for(batch, a8.device))


def _state_grids(cell: nn.Module, tables: _Tables) -> list[tuple[Any, torch.Tensor]]:
    """(grid, value of every code) of each state entering a step: h, then c."""
    h_grid, c_grid = cell.eltwisemult_hidden.grid("output"), cell.eltwiseadd_cell.grid("output")
    return [(h_grid, tables.h_values), (c_grid, tables.c_values)]


_C_LOOP = CLoop(
    4, ("h", "c"), _hold_c_step, _c_initial_codes, lambda t, held: (t.h_values[held["h"]], t.c_values[held["c"]]),
    _state_grids,
)  # fmt: skip
