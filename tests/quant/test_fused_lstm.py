"""The fused integer LSTM and GRU loops give the same bits as running the quantized ops one by one.

Every comparison is ``torch.equal`` between a model built with ``integer_kernels="auto"`` (fused loop
attached) and the same model with ``"off"`` (the float64 emulation, one module call per op and step),
and every test also checks that the fused loop really ran (a silent fall-back would pass otherwise).
"""

from __future__ import annotations

import itertools
import os
import threading

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import compress.quant.fused.gru as fused_gru
import compress.quant.fused.lstm as fused_lstm
from compress.modules import ModularGRU, ModularLSTM
from compress.quant import PostTrainLinearQuantizer
from compress.quant.fused.attach import attach_fused_loops
from compress.quant.fused.common import _act_table
from compress.quant.fused.lstm import fused_lstm_blocker
from compress.quant.kernels import dispatch
from compress.quant.wrappers.base import Grid
from compress.quant.wrappers.factory import FakeQuantWrapper
from tests.quant.quant_helpers import collect_stats

pytestmark = pytest.mark.usefixtures("int_backend")

MODES = ["symmetric", "symmetric_restricted", "asymmetric_signed", "asymmetric_unsigned"]


class Core(nn.Module):
    """A bare modular LSTM (or GRU) as a model (the quantizer wraps its cells' ops)."""

    def __init__(
        self, width: int = 7, hidden: int = 13, bidirectional: bool = False, seed: int = 0, gru: bool = False
    ) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.rnn = (ModularGRU if gru else ModularLSTM)(width, hidden, num_layers=2, bidirectional=bidirectional)

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        return self.rnn(x, hx)


def sequences(steps: int, batch: int, width: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randn(steps, batch, width, generator=torch.Generator().manual_seed(seed)) * 1.3


def quantized_pair(model: nn.Module, **settings) -> tuple[nn.Module, nn.Module]:
    stats = collect_stats(model, lambda m: [m(sequences(9, 5, seed=s)) for s in range(3)])
    on = PostTrainLinearQuantizer(model, stats, **settings).prepare_model()
    off = PostTrainLinearQuantizer(model, stats, integer_kernels="off", **settings).prepare_model()
    return on, off


@pytest.fixture
def fused_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the fused loop's runs (one per layer and direction that it computed)."""
    runs: list[int] = []
    for module, name in itertools.product((fused_lstm, fused_gru), ("_run", "_run_c")):  # PyTorch and C loops
        real = getattr(module, name)

        def counting(*args, real=real, **kwargs):
            result = real(*args, **kwargs)
            runs.extend([1] if result is not None else [])
            return result

        monkeypatch.setattr(module, name, counting)
    return runs


def assert_same_outputs(on: nn.Module, off: nn.Module, x: torch.Tensor, hx=None) -> None:
    with torch.no_grad():
        (y1, s1), (y2, s2) = on(x, hx), off(x, hx)
    states = list(zip(s1, s2, strict=True)) if isinstance(s1, tuple) else [(s1, s2)]  # LSTM (h, c) or GRU h
    for a, b in [(y1, y2), *states]:
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b), f"max |diff| {float((a - b).abs().max())}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_fused_loop_equals_per_op_emulation(mode: str, per_channel: bool, bits: int, fused_runs: list[int]) -> None:
    settings = {"mode": mode, "per_channel_wts": per_channel, "bits_activations": bits, "bits_parameters": bits}
    on, off = quantized_pair(Core(seed=bits), **settings)
    assert attach_fused_loops(on) == {}
    for steps, batch in ((11, 4), (6, 1), (1, 3)):
        assert_same_outputs(on, off, sequences(steps, batch, seed=steps))
    assert len(fused_runs) == 3 * 2  # every call, both layers


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits", [2, 5, 8])
def test_fused_gru_equals_per_op_emulation(mode: str, per_channel: bool, bits: int, fused_runs: list[int]) -> None:
    settings = {"mode": mode, "per_channel_wts": per_channel, "bits_activations": bits, "bits_parameters": bits}
    on, off = quantized_pair(Core(seed=bits, gru=True), **settings)
    assert attach_fused_loops(on) == {}
    for steps, batch in ((11, 4), (6, 1), (1, 3)):
        assert_same_outputs(on, off, sequences(steps, batch, seed=steps))
    assert_same_outputs(on, off, sequences(7, 3), torch.randn(2, 3, 13, generator=torch.Generator().manual_seed(3)))
    assert len(fused_runs) == 4 * 2


def test_bidirectional_gru_and_its_blockers(fused_runs: list[int]) -> None:
    model = Core(bidirectional=True, seed=12, gru=True)
    on, off = quantized_pair(model, mode="asymmetric_signed", per_channel_wts=True, clip_acts="avg")
    assert_same_outputs(on, off, sequences(9, 2, seed=4))
    assert len(fused_runs) == 4
    stats = collect_stats(model, lambda m: m(sequences(9, 5)))
    mixed = PostTrainLinearQuantizer(model, stats, overrides=[{"match": r".*oneminus.*", "fp16": True}]).prepare_model()
    assert set(attach_fused_loops(mixed).values()) == {"oneminus_update is FloatWrapper, not a quantized OneMinus"}


@pytest.mark.parametrize("clip", ["avg", "n_std"])
def test_clipped_asymmetric_model_and_bidirectional_layers(clip: str, fused_runs: list[int]) -> None:
    settings = {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": clip, "clip_n_stds": 2.0}
    on, off = quantized_pair(Core(bidirectional=True, seed=3), **settings)
    assert_same_outputs(on, off, sequences(10, 3, seed=5))
    assert len(fused_runs) == 4  # 2 layers x 2 directions


def test_off_grid_initial_state_runs_the_first_step_per_op(fused_runs: list[int]) -> None:
    on, off = quantized_pair(Core(seed=4), mode="asymmetric_signed", per_channel_wts=True)
    hx = tuple(torch.randn(2, 3, 13, generator=torch.Generator().manual_seed(s)) for s in (7, 8))
    assert_same_outputs(on, off, sequences(8, 3), hx)
    assert len(fused_runs) == 2


def test_state_carried_between_calls_stays_on_the_grids(monkeypatch: pytest.MonkeyPatch) -> None:
    on, off = quantized_pair(Core(seed=5), mode="symmetric")
    with torch.no_grad():
        _, state = on(sequences(5, 2, seed=2))
    steps = []
    cell = on.rnn.cells[0]
    monkeypatch.setattr(cell, "step", lambda *a: steps.append(1) or type(cell).step(cell, *a))
    assert_same_outputs(on, off, sequences(4, 2, seed=3), state)
    assert steps == []  # the carried state is on the grids: no step ran per op


def test_hooks_and_saturation_counting_see_every_op(fused_runs: list[int]) -> None:
    on, off = quantized_pair(Core(seed=6), mode="symmetric")
    calls = []
    handle = on.rnn.cells[1].act_h.register_forward_hook(lambda *a: calls.append(1))
    assert_same_outputs(on, off, sequences(6, 2))
    handle.remove()
    assert len(calls) == 6 and len(fused_runs) == 1  # layer 0 fused, layer 1 ran per op for its hook
    on.rnn.cells[0].eltwiseadd_cell.reset_tracking(True)
    assert_same_outputs(on, off, sequences(6, 2))
    assert on.rnn.cells[0].eltwiseadd_cell.observed == 6 * 2 * 13


def test_unequal_lengths_run_per_op(fused_runs: list[int]) -> None:
    on, off = quantized_pair(Core(seed=7), mode="symmetric")
    packed = pack_padded_sequence(sequences(6, 3), torch.tensor([6, 4, 2]))
    with torch.no_grad():
        (a, (h1, c1)), (b, (h2, c2)) = on(packed), off(packed)
    assert torch.equal(a.data, b.data) and torch.equal(h1, h2) and torch.equal(c1, c2)
    assert fused_runs == []


def test_cells_that_cannot_fuse_say_why() -> None:
    model = Core(seed=8)
    stats = collect_stats(model, lambda m: m(sequences(9, 5)))
    fp16_ops = [{"match": r"rnn\.cells\.1\.eltwise.*", "fp16": True}]
    mixed = PostTrainLinearQuantizer(model, stats, overrides=fp16_ops).prepare_model()
    assert attach_fused_loops(mixed) == {"rnn.cells.1": "eltwiseadd_gate is FloatWrapper, not a quantized two-input op"}
    assert hasattr(mixed.rnn.cells[0], "fused_loop") and not hasattr(mixed.rnn.cells[1], "fused_loop")
    off = PostTrainLinearQuantizer(model, stats, integer_kernels="off").prepare_model()
    assert set(attach_fused_loops(off).values()) == {"integer_kernels: off"}
    wide = PostTrainLinearQuantizer(model, stats, bits_activations=9).prepare_model()
    assert "wider than 256 codes" in fused_lstm_blocker(wide.rnn.cells[0])


def test_report_rows_name_the_fused_kernels() -> None:
    on, _ = quantized_pair(Core(seed=9), mode="symmetric")
    cell = on.rnn.cells[0]
    assert cell.fc_gate_h.describe()["kernel"] == "int8, fused loop"  # no product has run yet
    with torch.no_grad():
        on(sequences(4, 3))
    assert cell.fc_gate_h.describe()["kernel"] == f"{os.environ[dispatch.ENV]}, fused loop"
    assert cell.act_f.describe()["kernel"] == "table, fused loop"
    assert cell.eltwisemult_hidden.describe()["kernel"] == "table, fused loop"


class PositionDependent(nn.Module):
    """Returns 0.625 for contiguous inputs and the next float32 above it for strided ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.full_like(x, 0.625)
        return y if x.is_contiguous() else torch.nextafter(y, torch.full_like(y, 2.0))


def test_activation_tables_need_vector_and_scalar_evaluation_to_agree() -> None:
    # Scale 4: 0.625 is the code 2.5, a rounding tie (half to even: 2); one ulp above rounds to 3.
    grid = Grid(torch.tensor(4.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64), -128, 127)
    stable = FakeQuantWrapper(nn.Sigmoid(), grid)
    assert torch.equal(_act_table(stable, torch.tensor([0.0, 0.5, 1.0])), torch.tensor([130, 130, 131]))
    unstable = FakeQuantWrapper(PositionDependent(), grid)
    assert _act_table(unstable, torch.zeros(4)) is None


def test_every_code_pair_of_a_two_input_table_matches_the_wrapper() -> None:
    on, _ = quantized_pair(Core(seed=10), mode="asymmetric_unsigned", bits_activations=4)
    cell = on.rnn.cells[0]
    tables = cell.fused_loop.tables(torch.float32, torch.device("cpu"))
    f_grid, c_grid = cell.act_f.grid("output"), cell.eltwiseadd_cell.grid("output")
    for qf, qc in itertools.product(range(f_grid.qmin, f_grid.qmax + 1), range(c_grid.qmin, c_grid.qmax + 1)):
        f = torch.tensor([(qf + float(f_grid.zero_point)) / float(f_grid.scale)], dtype=torch.float64).float()
        c = torch.tensor([(qc + float(c_grid.zero_point)) / float(c_grid.scale)], dtype=torch.float64).float()
        out = cell.eltwisemult_cell_forget(f, c)
        grid = cell.eltwisemult_cell_forget.grid("output")
        code = int(torch.round(out.double() * grid.scale - grid.zero_point)) - grid.qmin
        assert tables.mul_f[(qf - f_grid.qmin) * tables.n_c + (qc - c_grid.qmin)] == code


def test_loop_runs_on_one_thread_and_restores_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    on, off = quantized_pair(Core(seed=11), mode="symmetric")
    seen = []
    for name in ("_steps", "_run_c"):  # the PyTorch and the C time loop
        real = getattr(fused_lstm, name)
        monkeypatch.setattr(fused_lstm, name, lambda *a, real=real: seen.append(torch.get_num_threads()) or real(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert_same_outputs(on, off, sequences(5, 2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1]


def test_threads_sharing_one_model_get_their_own_scratch_space() -> None:
    on, _ = quantized_pair(Core(seed=13), mode="asymmetric_signed", per_channel_wts=True)
    inputs = [sequences(40, 3, seed=s) for s in range(4)]
    with torch.no_grad():
        want = [on(x)[0] for x in inputs]
    got: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        with torch.no_grad():
            got[i] = [on(inputs[i])[0] for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(y, want[i]) for i, ys in got.items() for y in ys) and len(got) == len(inputs)


@pytest.mark.parametrize("gru", [False, True])
def test_one_step_calls_recall_their_state_and_equal_the_per_op_path(gru: bool) -> None:
    """Generation calls the layer one step at a time: the loop keeps the state's codes between calls, and
    interleaving two sequences (each call's state is not the previous call's result) must not confuse it."""
    on, off = quantized_pair(Core(seed=4, gru=gru), mode="asymmetric_signed")
    xs = sequences(6, 3, seed=2), sequences(6, 3, seed=3)
    with torch.no_grad():
        wholes = [on(x)[0] for x in xs]
        states: list = [None, None]
        outs: list[list[torch.Tensor]] = [[], []]
        for t in range(6):
            for k in (0, 1):  # two sequences in turn, batch size 3 each
                out, states[k] = on(xs[k][t : t + 1], states[k])
                ref, _ = off(xs[k][t : t + 1], _per_op_state(off, xs[k][: t + 1]) if t else None)
                assert torch.equal(out, ref)
                outs[k].append(out)
    for k in (0, 1):
        assert torch.equal(torch.cat(outs[k]), wholes[k])


def _per_op_state(model: nn.Module, prefix: torch.Tensor):
    """The per-op model's state after ``prefix`` without its last step."""
    _, state = model(prefix[:-1])
    return state
