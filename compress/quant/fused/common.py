"""What the fused LSTM and GRU loops share: grids small enough for tables, the tables' construction from
the ops' own wrappers, the loop object (declining when observed, per-thread buffers, one thread), and the
per-step hidden product.

Example:
    >>> from compress.modules import ModularGRUCell
    >>> fused_blocker(ModularGRUCell(2, 3), {}, {})
    'fc_gate_x is Linear, not an integer linear wrapper'
"""

from __future__ import annotations

import abc
import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch import nn

from compress.quant.kernels import cpaths
from compress.quant.wrappers.base import Grid, QuantWrapper
from compress.quant.wrappers.factory import FakeQuantWrapper
from compress.quant.wrappers.params import LinearQuantWrapper
from compress.utils import RuntimeCache

__all__ = ["CLoop", "FusedLoop", "fused_blocker", "hidden_product", "recall_codes", "remember", "run_c_loop"]

_MAX_CODES = 256  # table sizes grow with the square of the codes per grid: 8-bit grids at most


def _small_grid(wrapper: QuantWrapper, prefix: str) -> bool:
    qmin, qmax = wrapper._qrange[prefix]
    return wrapper._floats[prefix] is not None and qmax - qmin < _MAX_CODES


def fused_blocker(cell: nn.Module, acts: dict[str, tuple[type, ...]], pairs: dict[str, type]) -> str:
    """Why a modular cell cannot be fused ("" when it can): its two gate products must be int8 linear
    wrappers, ``acts`` quantized element-wise modules of the given types, ``pairs`` two-input integer ops,
    every grid per tensor with at most 256 codes.

    Example:
        >>> from compress.modules import ModularGRUCell
        >>> fused_blocker(ModularGRUCell(2, 3), {}, {})
        'fc_gate_x is Linear, not an integer linear wrapper'
    """
    for name in ("fc_gate_x", "fc_gate_h"):
        fc = getattr(cell, name)
        if not isinstance(fc, LinearQuantWrapper):
            return f"{name} is {type(fc).__name__}, not an integer linear wrapper"
        if not _small_grid(fc, "output"):
            return f"{name}: output grid wider than {_MAX_CODES} codes or per channel"
    if cell.fc_gate_h.integer_kernels == "off":
        return "integer_kernels: off"
    if cell.fc_gate_h.int_mm is None or not _small_grid(cell.fc_gate_h, "input"):
        return "fc_gate_h does not run on the int8 kernel"
    for name, types in acts.items():
        act = getattr(cell, name)
        if not isinstance(act, FakeQuantWrapper) or not isinstance(act.wrapped, types):
            return f"{name} is {type(act).__name__}, not a quantized {'/'.join(t.__name__ for t in types)}"
        if not _small_grid(act, "output"):
            return f"{name}: output grid wider than {_MAX_CODES} codes"
    for name, kind in pairs.items():
        op = getattr(cell, name)
        if type(op) is not kind or op.num_inputs != 2:
            return f"{name} is {type(op).__name__}, not a quantized two-input op"
        if not all(_small_grid(op, p) for p in ("input0", "input1", "output")):
            return f"{name}: a grid wider than {_MAX_CODES} codes or per channel"
    return ""


def _values(grid: Grid, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The float value of every code of ``grid``, computed as the wrappers dequantize (float64, then ``dtype``)."""
    codes = torch.arange(grid.qmin, grid.qmax + 1, dtype=torch.float64, device=device)
    return codes.add_(grid.zero_point.to(device)).div_(grid.scale.to(device)).to(dtype)


def _offset_codes(values: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Codes minus ``qmin`` (int64) of dequantized ``values`` of ``grid``: the exact inverse of :func:`_values`."""
    zp, scale = grid.zero_point.to(values.device), grid.scale.to(values.device)
    codes = values.to(torch.float64).mul_(scale).sub_(zp).round_()
    return codes.sub_(grid.qmin).to(torch.int64)


def _pair_table(op: QuantWrapper, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Flat table ``[len(first) * len(second)]`` of ``op``'s output codes on every pair of input values."""
    a = first[:, None].expand(len(first), len(second)).contiguous()
    b = second[None, :].expand(len(first), len(second)).contiguous()
    return _offset_codes(op(a, b), op.grid("output")).reshape(-1).to(torch.int32)


def _act_table(act: FakeQuantWrapper, inputs: torch.Tensor) -> torch.Tensor | None:
    """Output codes of ``act`` on every input value, or None when vector and scalar evaluation disagree."""
    vector = _offset_codes(act(inputs), act.grid("output"))
    doubled = torch.stack([inputs, inputs], 1).reshape(-1)
    scalar = _offset_codes(act(doubled[::2]), act.grid("output"))  # a strided input takes the scalar loop
    return vector if torch.equal(vector, scalar) else None


class FusedLoop(abc.ABC):
    """Runs a fully quantized modular cell over a sequence on codes; subclasses give the tables and the run.

    Attached by :func:`compress.quant.fused.attach.attach_fused_loops` as ``cell.fused_loop``;
    ``run_direction`` calls it and falls back to the per-op loop when it returns None. Not a module: it
    adds no state and no names.

    Example:
        >>> # cell.fused_loop(data, batch, initial_state, reverse=False) -> (outputs, state) or None
    """

    def __init__(self, cell: nn.Module) -> None:
        self.cell = cell
        self._tables: dict[tuple[torch.dtype, torch.device], Any] = {}
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}
        self._held: dict[tuple[int, int], dict[str, Any]] = RuntimeCache()  # not copied with the model
        # Listed once: walking the module tree on every call costs more than a whole step at batch 1.
        self._watched = list(cell.modules())
        self._trackers = [m for m in self._watched if hasattr(m, "track_saturation")]
        # The hook dicts themselves (a module keeps its dicts): `any` over them runs in C, once per call.
        self._hook_dicts = [d for m in self._watched for d in (m._forward_hooks, m._forward_pre_hooks)]

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A reusable CPU scratch tensor (grown when needed): large fresh buffers cost a page fault per page.

        One set per thread, so a model shared by several threads never shares scratch space.
        """
        numel, key = math.prod(shape), (name, threading.get_ident())
        held = self._buffers.get(key)
        if held is None or held.dtype != dtype or held.numel() < numel:
            held = self._buffers[key] = torch.empty(numel, dtype=dtype)
        return held[:numel].view(shape)

    def held(self, batch: int) -> dict[str, Any]:
        """What the C loop keeps between calls for ``batch`` rows on this thread: its state code buffers, the
        step struct pointing at them, and the last state it returned (see :func:`recall_codes`)."""
        return self._held.setdefault((batch, threading.get_ident()), {})

    def tables(self, dtype: torch.dtype, device: torch.device) -> Any:
        key = (dtype, device)
        if key not in self._tables:
            self._tables[key] = self._make_tables(dtype, device)
        return self._tables[key]

    @abc.abstractmethod
    def _make_tables(self, dtype: torch.dtype, device: torch.device) -> Any:
        """The cell type's tables for one (dtype, device)."""

    @property
    @abc.abstractmethod
    def c_loop(self) -> CLoop:
        """What :func:`run_c_loop` and the one-step stack need of the cell type."""

    @abc.abstractmethod
    def _fused(self, tables: Any, data: torch.Tensor, batch: int, initial: tuple, reverse: bool) -> Any:
        """The cell type's loop over the sequence (C when it can run, else PyTorch ops)."""

    def _observed(self) -> bool:
        """True when running the ops one by one could be seen from outside (hooks, saturation counting)."""
        hooks = (nn.modules.module._global_forward_hooks, nn.modules.module._global_forward_pre_hooks)
        if any(hooks):
            return True
        if any(m.track_saturation for m in self._trackers):
            return True
        return any(self._hook_dicts)

    def __call__(
        self, data: torch.Tensor, batch: int, initial: tuple[torch.Tensor, ...], *, reverse: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None:
        """``([T * batch, H] outputs, (h, c))`` for time-major input rows ``data`` ``[T * batch, in]``
        as the per-op loop computes them, or None to let it run."""
        if self._observed() or (torch.is_grad_enabled() and data.requires_grad) or not data.is_floating_point():
            return None
        tables = self.tables(data.dtype, data.device)
        if tables.unstable:
            return None
        try:
            with _one_thread(data.device):
                return self._fused(tables, data, batch, initial, reverse)
        except RuntimeError:  # e.g. a device's _int_mm refusing a shape: the per-op path handles (and notes) it
            return None


def _on_grid(state: torch.Tensor, grid: Grid, values: torch.Tensor) -> torch.Tensor | None:
    """Offset codes of a state tensor when every element is exactly a value of ``grid``, else None."""
    codes = _offset_codes(state, grid).clamp_(0, len(values) - 1)
    return codes.to(torch.int32) if torch.equal(values[codes], state) else None


def recall_codes(held: dict[str, Any], initial: tuple[torch.Tensor, ...]) -> bool:
    """True when ``initial`` equals the state the last call returned: its codes are still in the held buffers.

    One-step generation feeds each call's state to the next; comparing values (a copy was kept) costs far
    less than finding the codes of a state again, and any other state takes the full path.
    """
    last = held.get("last")
    if last is None or len(last) != len(initial):
        return False
    return all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(initial, last, strict=True))


def remember(held: dict[str, Any], state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Keep a copy of the returned ``state`` for :func:`recall_codes`; returns ``state``."""
    held["last"] = tuple(t.clone() for t in state)
    return state


class CLoop(NamedTuple):
    """What a cell type gives :func:`run_c_loop`: gate blocks per step, state buffer names (``h`` first),
    ``hold(held, cell, tables, batch)`` building its buffers and struct, ``initial_codes(cell, tables, first,
    initial) -> (codes, first_done)``, ``final(tables, held)``, the state tuple it returns, and
    ``grids(cell, tables)``: ``(grid, value per code)`` of each state (the one-step stack's encoding)."""

    gates: int
    states: tuple[str, ...]
    hold: Callable[..., None]
    initial_codes: Callable[..., tuple[tuple[torch.Tensor, ...], bool]]
    final: Callable[[Any, dict[str, Any]], tuple[torch.Tensor, ...]]
    grids: Callable[..., list[tuple[Grid, torch.Tensor]]]


def run_c_loop(loop: FusedLoop, tables: Any, data: torch.Tensor, batch: int, initial: tuple, reverse: bool,
               kind: CLoop) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]] | None:  # fmt: skip
    """A cell's C loop: fc_gate_x's codes as bytes, then each step after its int8 product in one C call.

    The state code buffers and the step struct are kept per batch size (:meth:`FusedLoop.held`), so a
    one-step call (generation) whose state is the previous call's result pays only for its own step.
    """
    cell = loop.cell
    hidden, steps = cell.hidden_size, data.shape[0] // batch
    x = loop.buffer("x", (steps * batch, kind.gates * hidden), torch.uint8)  # reused: no fresh pages to fault in
    if not cpaths.linear_byte_codes(cell.fc_gate_x, data, x):
        return None
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    out = torch.empty(steps, batch, hidden, dtype=data.dtype)
    held = loop.held(batch)
    if "args" not in held or held["tables"] is not tables:
        kind.hold(held, cell, tables, batch)
    recalled = recall_codes(held, initial)
    held.pop("last", None)  # the buffers change below: only a completed call may be recalled
    if not recalled:
        first = data[order[0] * batch : (order[0] + 1) * batch]
        codes, first_done = kind.initial_codes(cell, tables, first, initial)
        for name, code in zip(kind.states, codes, strict=True):
            held[name].copy_(code.reshape(batch, hidden))
        held["a8"].copy_(tables.h_in[held["h"]])
        if first_done:
            out[order[0]] = tables.h_values[held["h"]]
            order = order[1:]
    args, step, product, mm, a8 = held["args"], held["step"], held["product"], held["mm"], held["a8"]
    args.x, args.out = x.data_ptr(), out.data_ptr()
    ref = held["ref"]
    for t in order:
        product(a8, mm)
        step(ref, t)
    return out.view(steps * batch, hidden), remember(held, kind.final(tables, held))


def hidden_product(fc: LinearQuantWrapper, a8: torch.Tensor, requant: Any) -> torch.Tensor:
    """fc_gate_h's output codes (float64) from its int8 input codes: the wrapper's own operations."""
    acc = fc.int_mm.accumulate(a8)
    if fc._clamp_acc:
        acc = acc.clamp_(*fc.accum)
    if fc.half_range:
        acc = acc.relu_()
    return fc._requantize(acc, requant, -1, owned=True)


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run the loop on one CPU thread: its per-step ops are too small to split (2 threads: 2.4x slower, measured)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _c_usable(cell: nn.Module, data: torch.Tensor) -> bool:
    """The C loop needs float32 CPU inputs and fc_gate_h's sum provably inside int32 (ckernels.c)."""
    return data.dtype == torch.float32 and cell.fc_gate_h.int_mm.exact_int32 and cpaths.usable(cell.fc_gate_x, data)
