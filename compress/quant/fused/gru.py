"""The fused integer time loop of a quantized GRU layer (the GRU counterpart of compress/quant/fused/lstm.py).

A fully quantized :class:`~compress.modules.ModularGRUCell` step, on codes of grids of at most 256
codes, is one int8 product (``fc_gate_h``) and then six table lookups per hidden unit::

    r, z  = RZ[x_r, h_r], RZ[x_z, h_z]       # eltwiseadd_reset/update followed by act_r/act_z
    nr    = NEW_RESET[r, h_n]                # eltwisemult_new_reset
    n     = NEW_GATE[x_n, nr]                # eltwiseadd_new followed by act_n
    h     = HID[KEEP_NEW[z, n], KEEP_OLD[z, h]]   # (1 - z) * n, z * h, their sum

Every table is filled by the op's own wrapper on every code pair, so the loop gives the per-op
path's bits (tests/quant/test_fused_lstm.py runs both cell types). Declining, threads, buffers
and the C kernel follow compress/quant/fused/lstm.py.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import nn

from compress.modules.ops import OneMinus
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
from compress.quant.wrappers.ops import EltwiseAddQuantWrapper, EltwiseMultQuantWrapper

__all__ = ["FusedGRULoop", "fused_gru_blocker"]

_ACTS = {"act_r": (nn.Sigmoid,), "act_z": (nn.Sigmoid,), "act_n": (nn.Tanh,), "oneminus_update": (OneMinus,)}
_PAIRS = {
    "eltwiseadd_reset": EltwiseAddQuantWrapper,
    "eltwiseadd_update": EltwiseAddQuantWrapper,
    "eltwisemult_new_reset": EltwiseMultQuantWrapper,
    "eltwiseadd_new": EltwiseAddQuantWrapper,
    "eltwisemult_update_new": EltwiseMultQuantWrapper,
    "eltwisemult_update_hidden": EltwiseMultQuantWrapper,
    "eltwiseadd_hidden": EltwiseAddQuantWrapper,
}


def fused_gru_blocker(cell: nn.Module) -> str:
    """Why a :class:`~compress.modules.ModularGRUCell` cannot run the fused integer loop ("" when it can).

    Example:
        >>> from compress.modules import ModularGRUCell
        >>> fused_gru_blocker(ModularGRUCell(2, 3))
        'fc_gate_x is Linear, not an integer linear wrapper'
    """
    return fused_blocker(cell, _ACTS, _PAIRS)


class _GruTables:
    """Every table of one GRU cell for one (dtype, device); see the module doc for the names."""

    def __init__(self, cell: nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        def values(module: nn.Module) -> torch.Tensor:
            return _values(module.grid("output"), dtype, device)

        acts = {
            "act_r": _act_table(cell.act_r, values(cell.eltwiseadd_reset)),
            "act_z": _act_table(cell.act_z, values(cell.eltwiseadd_update)),
            "act_n": _act_table(cell.act_n, values(cell.eltwiseadd_new)),
            "oneminus_update": _act_table(cell.oneminus_update, values(cell.act_z)),
        }
        self.unstable = sorted(name for name, table in acts.items() if table is None)
        if self.unstable:
            return
        x_v, h_v, fc_h = values(cell.fc_gate_x), values(cell.fc_gate_h), cell.fc_gate_h
        self.n_x, self.n_h = len(x_v), len(h_v)
        r_sum = _pair_table(cell.eltwiseadd_reset, x_v, h_v).to(torch.int64)
        z_sum = _pair_table(cell.eltwiseadd_update, x_v, h_v).to(torch.int64)
        self.rz = torch.cat([acts["act_r"][r_sum], acts["act_z"][z_sum]]).to(torch.int32)
        self.new_reset = _pair_table(cell.eltwisemult_new_reset, values(cell.act_r), h_v)
        new_reset_v = values(cell.eltwisemult_new_reset)
        self.n_nr = len(new_reset_v)
        new_sum = _pair_table(cell.eltwiseadd_new, x_v, new_reset_v).to(torch.int64)
        self.new_gate = acts["act_n"][new_sum].to(torch.int32)
        one_minus_z = values(cell.oneminus_update)[acts["oneminus_update"]]
        self.keep_new = _pair_table(cell.eltwisemult_update_new, one_minus_z, values(cell.act_n))
        self.n_n = len(values(cell.act_n))
        self.h_values = values(cell.eltwiseadd_hidden)
        self.n_hs = len(self.h_values)
        self.keep_old = _pair_table(cell.eltwisemult_update_hidden, values(cell.act_z), self.h_values)
        self.n_zh = len(values(cell.eltwisemult_update_hidden))
        products = values(cell.eltwisemult_update_new), values(cell.eltwisemult_update_hidden)
        self.hid = _pair_table(cell.eltwiseadd_hidden, *products)
        self.h_in = fc_h._codes(self.h_values, "input").sub_(fc_h.int_mm.x_shift).to(torch.int8)
        names = ("rz", "new_reset", "new_gate", "keep_new", "keep_old", "hid")
        self.bytes = {k: getattr(self, k).to(torch.uint8) for k in names}  # for the C kernel


class FusedGRULoop(FusedLoop):
    """Runs a quantized :class:`~compress.modules.ModularGRUCell` over a sequence on codes (see module doc).

    Example:
        >>> # cell.fused_loop(data, batch, (h0,), reverse=False) -> (outputs, (h,)) or None
    """

    def _make_tables(self, dtype: torch.dtype, device: torch.device) -> Any:
        return _GruTables(self.cell, dtype, device)

    @property
    def c_loop(self) -> CLoop:
        return _C_LOOP

    def _fused(self, tables: Any, data: torch.Tensor, batch: int, initial: tuple, reverse: bool) -> Any:
        result = _run_c(self, tables, data, batch, initial, reverse) if _c_usable(self.cell, data) else None
        return result or _run(self.cell, tables, data, batch, initial, reverse)


def _initial_code(cell: nn.Module, tables: _GruTables, first: torch.Tensor, initial: tuple) -> tuple:
    """Codes ``[B, H]`` (int32) of the entering state; the first step runs per op when it is off the grid."""
    grid = cell.eltwiseadd_hidden.grid("output")
    h = _on_grid(initial[0], grid, tables.h_values)
    if h is not None:
        return h, False
    (h_f,) = cell.step(cell.fc_gate_x(first), tuple(initial))
    return _offset_codes(h_f, grid).to(torch.int32), True


def _run(cell: nn.Module, tables: _GruTables, data: torch.Tensor, batch: int, initial: tuple, reverse: bool):
    fc_x, fc_h, hidden = cell.fc_gate_x, cell.fc_gate_h, cell.hidden_size
    steps = data.shape[0] // batch
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    x_qmin, h_qmin = fc_x._qrange["output"][0], fc_h._qrange["output"][0]
    x = fc_x.output_codes(data, offsets=torch.full((3 * hidden,), -x_qmin)).view(steps, batch, 3 * hidden)
    gate = torch.arange(2 * hidden, device=data.device) // hidden
    base_rz = x[..., : 2 * hidden] * tables.n_h + (gate * (tables.n_x * tables.n_h)).to(torch.int32)
    base_n = x[..., 2 * hidden :] * tables.n_nr
    out = torch.empty(steps, batch * hidden, dtype=torch.int32, device=data.device)
    h, first_done = _initial_code(cell, tables, data[order[0] * batch : (order[0] + 1) * batch], initial)
    if first_done:
        out[order[0]] = h.view(-1)
        order = order[1:]
    requant = fc_h.requant_scale if fc_h._requant is None else fc_h._requant
    for t in order:
        q = hidden_product(fc_h, tables.h_in.index_select(0, h.view(-1)).view(batch, hidden), requant)
        q = q.to(torch.int32).sub_(h_qmin)
        rz = tables.rz.index_select(0, base_rz[t].add_(q[:, : 2 * hidden]).view(-1)).view(batch, 2 * hidden)
        r, z = rz[:, :hidden], rz[:, hidden:]
        nr = tables.new_reset.index_select(0, torch.add(q[:, 2 * hidden :], r, alpha=tables.n_h).view(-1))
        n = tables.new_gate.index_select(0, base_n[t].reshape(-1).add_(nr)).view(batch, hidden)
        keep_new = tables.keep_new.index_select(0, torch.add(n, z, alpha=tables.n_n).view(-1))
        keep_old = tables.keep_old.index_select(0, torch.add(h.view(batch, hidden), z, alpha=tables.n_hs).view(-1))
        torch.index_select(tables.hid, 0, torch.add(keep_old, keep_new, alpha=tables.n_zh), out=out[t])
        h = out[t]
    values = tables.h_values.index_select(0, out.view(-1)).view(steps * batch, hidden)
    return values, (tables.h_values.index_select(0, h.reshape(-1)).view(batch, hidden),)


def _run_c(loop: FusedLoop, tables: _GruTables, data: torch.Tensor, batch: int, initial: tuple, reverse: bool):
    """:func:`_run` as the C loop (:func:`~compress.quant.fused.common.run_c_loop`)."""
    return run_c_loop(loop, tables, data, batch, initial, reverse, _C_LOOP)


def _c_initial_codes(cell: nn.Module, tables: _GruTables, first: torch.Tensor, initial: tuple) -> tuple:
    h, first_done = _initial_code(cell, tables, first, initial)
    return (h,), first_done


def _hold_c_step(held: dict[str, Any], cell: nn.Module, tables: _GruTables, batch: int) -> None:
    """The buffers and the ``GruStep`` struct of the C loop for ``batch`` rows (built once per batch size)."""
    fc_h, hidden = cell.fc_gate_h, cell.hidden_size
    h, a8 = torch.zeros(batch, hidden, dtype=torch.int32), torch.zeros(batch, hidden, dtype=torch.int8)
    mm, codes = torch.empty(batch, 3 * hidden, dtype=torch.int32), torch.empty(3 * hidden, dtype=torch.float64)
    h_qmin = fc_h._qrange["output"][0]
    goff = ((torch.arange(2 * hidden) // hidden) * (tables.n_x * tables.n_h) - h_qmin).to(torch.int32)
    keep = [h, a8, mm, codes, goff]
    ptr, u8 = ckernels.ptr, tables.bytes
    args = ckernels.GruStep(
        cpaths.requant_args(fc_h, mm, a8, keep), batch, hidden, tables.n_h, tables.n_nr, tables.n_n, tables.n_hs,
        tables.n_zh, None, ptr(goff), float(h_qmin), ptr(u8["rz"]), ptr(u8["new_reset"]), ptr(u8["new_gate"]),
        ptr(u8["keep_new"]), ptr(u8["keep_old"]), ptr(u8["hid"]), ptr(tables.h_in), ptr(tables.h_values), ptr(h),
        None, ptr(codes),
    )  # fmt: skip
    held.clear()
    held.update(h=h, a8=a8, mm=mm, keep=keep, args=args, ref=ctypes.byref(args), tables=tables)
    held.update(step=ckernels.library().gru_step, product=fc_h.int_mm.product_for(batch, a8.device))


def _state_grids(cell: nn.Module, tables: _GruTables) -> list[tuple[Any, torch.Tensor]]:
    """(grid, value of every code) of the state entering a step."""
    return [(cell.eltwiseadd_hidden.grid("output"), tables.h_values)]


_C_LOOP = CLoop(
    3, ("h",), _hold_c_step, _c_initial_codes, lambda t, held: (t.h_values[held["h"]],), _state_grids
)  # fmt: skip
