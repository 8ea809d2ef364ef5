"""One-step calls of a whole fused LSTM/GRU stack: batch-1 generation's hot path.

A generating model calls its recurrent core once per token with one time step and the state the previous
call returned. Through the per-layer fused loops such a call pays, per layer, for the sequence machinery
(reshapes, the state's codes, one product call chain per chunk, the final state's dequantization and
stacking) that a one-row step does not need. :class:`FusedStack` runs the same C functions in the same
order on buffers and structs built once per batch size, so a step is per layer: quantize the layer input
(C), its int8 input product (the dispatched backend), its codes as bytes (C), the hidden product, and the
table step (C), which also writes the state values the call returns.

Same operations, same order, same data as :func:`~compress.quant.fused.common.run_c_loop`: the results are
bit-identical (tests/quant/test_fused_stack.py). It declines (returns None, and the per-layer path runs)
for anything but a time-major or batch-first ``[1, B, in]`` float32 CPU step with a state on the grids,
when the cells could be observed, with gradients, or with dropout active between layers.

Example:
    >>> from compress.modules import ModularLSTM
    >>> from compress.quant.fused.attach import attach_fused_loops
    >>> rnn = ModularLSTM(2, 3)
    >>> attach_fused_loops(rnn), "fused_stack" in rnn.__dict__  # float cells: no fused loops, no stack
    ({'cells.0': 'fc_gate_x is Linear, not an integer linear wrapper'}, False)
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

from compress.quant.fused.common import FusedLoop, _c_usable, _on_grid, _one_thread
from compress.quant.kernels import ckernels, cpaths
from compress.utils import RuntimeCache

__all__ = ["FusedStack"]

_MAX_HELD = 16  # (batch size, thread) entries kept; generation uses one or two


class _Layer:
    """One layer's bound step: its fc_gate_x row plan and a private copy of the C loop's buffers and struct."""

    def __init__(self, loop: FusedLoop, tables: Any, batch: int) -> None:
        cell, kind, lib = loop.cell, loop.c_loop, ckernels.library()
        fc_x = cell.fc_gate_x
        plan = cpaths.row_plan(fc_x, batch, fc_x.int_mm.in_features)
        (scale, zp), (qmin, qmax) = fc_x._floats["input"], fc_x._qrange["input"]
        self.quantize, self.a8x_ptr = lib.quantize_i8, plan["a8_ptr"]
        self.quant_args = (batch * fc_x.int_mm.in_features, scale, zp, qmin, qmax, fc_x.int_mm.x_shift)
        self.plan, self.a8x, self.accx, self.product_x = plan, *plan["views"](batch)
        self.rq_x, self.rq_x_ref, self.scratch = plan["args"], plan["ref"], plan["scratch_ptr"]
        self.x = torch.empty(batch, kind.gates * cell.hidden_size, dtype=torch.uint8)
        self.held: dict[str, Any] = {}
        kind.hold(self.held, cell, tables, batch)
        self.args, self.ref, self.step = self.held["args"], self.held["ref"], self.held["step"]
        self.args.x = self.x_ptr = self.x.data_ptr()
        self.product_h, self.a8h, self.mmh = self.held["product"], self.held["a8"], self.held["mm"]
        self.requant_x, self.refused = lib.requant_codes_u8, (fc_x._refused, cell.fc_gate_h._refused)
        self.batch, self.tables, self.grids, self.lstm = batch, tables, kind.grids(cell, tables), len(kind.states) > 1

    def run(self, src: int, h_out: int, c_out: int) -> None:
        """One step from float32 inputs at ``src``; the state values go to ``h_out`` (and ``c_out``: LSTM)."""
        self.quantize(src, *self.quant_args, self.a8x_ptr)
        self.product_x(self.a8x, self.accx)
        self.rq_x.M = self.batch  # the row plan's struct is shared with fc_gate_x's own calls of this row count
        self.requant_x(self.rq_x_ref, self.x_ptr, self.scratch)
        self.args.out = h_out
        if self.lstm:
            self.args.c_out = c_out
        self.product_h(self.a8h, self.mmh)
        self.step(self.ref, 0)

    def encode(self, states: list[torch.Tensor]) -> bool:
        """Load the codes of this layer's entering state (each ``[B, H]``); False when one is off its grid."""
        codes = [_on_grid(s, grid, values) for s, (grid, values) in zip(states, self.grids, strict=True)]
        if any(c is None for c in codes):
            return False
        for name, code in zip(("h", "c"), codes, strict=False):
            self.held[name].copy_(code)
        self.a8h.copy_(self.tables.h_in[self.held["h"]])
        return True


class FusedStack:
    """Runs one time step of a unidirectional modular LSTM/GRU whose every cell has a fused C loop.

    Attached as ``rnn.fused_stack`` by :func:`compress.quant.fused.attach.attach_fused_loops`; the
    recurrent module's forward calls it first and runs the per-layer path when it returns None.

    Example:
        >>> # rnn.fused_stack(torch.zeros(1, 1, 4), (h, c)) -> (output [1, 1, H], (h_n, c_n)) or None
    """

    def __init__(self, rnn: nn.Module) -> None:
        self.rnn = rnn
        self.loops: list[FusedLoop] = [cell.fused_loop for cell in rnn.cells]
        self._held: dict[tuple[int, int], dict[str, Any]] = RuntimeCache()  # not copied with the model
        self._states = len(self.loops[0].c_loop.states)

    def __call__(self, input: Any, hx: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, tuple] | None:
        """``(output, final states)`` as the recurrent module's ``_run`` returns them, or None to let it run."""
        if not self._fits(input, hx):
            return None
        batch = input.shape[0 if self.rnn.batch_first else 1]
        key = (batch, threading.get_ident())
        if key not in self._held and len(self._held) >= _MAX_HELD:  # many batch sizes or threads: bounded memory
            self._held.clear()
        held = self._held.setdefault(key, {})
        last = held.pop("last", None)  # the buffers change below: only a completed call may be recalled
        try:
            layers = self._layers(held, input, batch)
            if layers is None or not (_same(hx, last) or self._encode(layers, hx)):
                return None
            with _one_thread(input.device):
                states = self._step(layers, input, batch)
        except RuntimeError:  # a backend refusing a shape: the per-layer path handles (and notes) it
            return None
        held["last"] = tuple(s.clone() for s in states)
        top = states[0][-1].clone()
        return (top.unsqueeze(1) if self.rnn.batch_first else top.unsqueeze(0)), states

    def _fits(self, input: Any, hx: tuple[torch.Tensor, ...] | None) -> bool:
        rnn = self.rnn
        if not isinstance(input, torch.Tensor) or input.dim() != 3 or not isinstance(hx, (tuple, list)):
            return False
        if len(hx) != self._states or input.shape[0 if rnn.batch_first else 1] > cpaths.MIN_ROWS:
            return False  # more rows than one chunk of fc_gate_x's row plan: a batch, not generation
        if input.shape[1 if rnn.batch_first else 0] != 1 or input.dtype != torch.float32 or input.device.type != "cpu":
            return False
        shape = (rnn.num_layers, input.shape[0 if rnn.batch_first else 1], rnn.hidden_size)
        if any(h.shape != shape or h.dtype != torch.float32 for h in hx):
            return False
        if torch.is_grad_enabled() and (input.requires_grad or any(h.requires_grad for h in hx)):
            return False
        if rnn.dropout.training and rnn.dropout.p > 0 and rnn.num_layers > 1:
            return False
        return not any(loop._observed() for loop in self.loops)

    def _layers(self, held: dict[str, Any], input: torch.Tensor, batch: int) -> list[_Layer] | None:
        """This batch size's bound layers (rebuilt when a cell's tables were), or None when C cannot run them."""
        layers, key = held.get("layers"), (input.dtype, input.device)
        pairs = zip(layers or (), self.loops, strict=False)
        if layers is not None and all(layer.tables is loop._tables.get(key) for layer, loop in pairs):
            refused = any(("cpu", batch) in r for layer in layers for r in layer.refused)
            return None if refused or ckernels.library() is None else layers
        tables = [loop.tables(input.dtype, input.device) for loop in self.loops]
        if any(t.unstable for t in tables) or not all(_c_usable(loop.cell, input) for loop in self.loops):
            return None
        layers = held["layers"] = [_Layer(loop, t, batch) for loop, t in zip(self.loops, tables, strict=True)]
        return layers

    def _encode(self, layers: list[_Layer], hx: tuple[torch.Tensor, ...]) -> bool:
        return all(layer.encode([h[k] for h in hx]) for k, layer in enumerate(layers))

    def _step(self, layers: list[_Layer], input: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
        hidden = self.rnn.hidden_size
        states = tuple(torch.empty(len(layers), batch, hidden) for _ in range(self._states))
        stride = batch * hidden * 4  # float32 bytes per layer
        h_base, c_base = states[0].data_ptr(), states[-1].data_ptr()
        x = input if input.is_contiguous() else input.contiguous()
        src = x.data_ptr()
        for k, layer in enumerate(layers):
            layer.run(src, h_base + k * stride, c_base + k * stride)
            src = h_base + k * stride  # the next layer's input: this layer's hidden values (dropout is off)
        return states


def _same(hx: tuple[torch.Tensor, ...], last: tuple[torch.Tensor, ...] | None) -> bool:
    """True when ``hx`` equals the state the last completed call returned (its codes are still loaded)."""
    return last is not None and all(torch.equal(a, b) for a, b in zip(hx, last, strict=True))
