"""One-step calls through the fused stack (batch-1 generation) give the bits of the per-op emulation.

Each test chains one-step calls the way a generating model does (every call gets the state the previous
call returned), compares every output and state with ``torch.equal`` against the same model built with
``integer_kernels="off"``, and counts the stack's runs, so that a silent decline cannot pass as a success.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.modules import ModularLSTM
from compress.quant.fused.stack import FusedStack
from compress.quant.kernels import ckernels
from tests.quant.test_fused_lstm import Core, quantized_pair, sequences

pytestmark = pytest.mark.usefixtures("int_backend")

SETTINGS = [
    {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg"},
    {"mode": "symmetric", "bits_activations": 5, "bits_parameters": 5},
    {"mode": "asymmetric_unsigned", "per_channel_wts": True, "bits_activations": 3, "bits_parameters": 3},
]


@pytest.fixture
def stack_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the stack's completed one-step runs."""
    runs: list[int] = []
    real = FusedStack._step

    def counting(self, *args):
        result = real(self, *args)
        runs.append(1)
        return result

    monkeypatch.setattr(FusedStack, "_step", counting)
    return runs


def expected(runs: int) -> int:
    """The stack runs on the C kernels only: with PyTorch ops alone it declines every call."""
    return runs if ckernels.library() is not None else 0


def assert_equal(a, b) -> None:
    for x, y in zip(_flat(a), _flat(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert torch.equal(x, y), f"max |diff| {float((x - y).abs().max())}"


def _flat(result) -> list[torch.Tensor]:
    out, state = result
    return [out, *(state if isinstance(state, tuple) else (state,))]


def generate(on: nn.Module, off: nn.Module, steps: int, batch: int, state=None, seed: int = 3):
    """Chained one-step calls on both models; checks every step; returns both final states."""
    inputs = sequences(steps, batch, seed=seed)
    s_on, s_off = state, state
    with torch.no_grad():
        for t in range(steps):
            a, b = on(inputs[t : t + 1], s_on), off(inputs[t : t + 1], s_off)
            assert_equal(a, b)
            s_on, s_off = a[1], b[1]
    return s_on, s_off


def warm_state(on: nn.Module, off: nn.Module, batch: int):
    """A state on the grids (the result of a sequence), equal for both models."""
    with torch.no_grad():
        a, b = on(sequences(4, batch, seed=9)), off(sequences(4, batch, seed=9))
    assert_equal(a, b)
    return a[1]


@pytest.mark.parametrize("gru", [False, True], ids=["lstm", "gru"])
@pytest.mark.parametrize("settings", SETTINGS, ids=["asym-avg", "sym5", "unsigned3"])
@pytest.mark.parametrize("batch", [1, 3])
def test_chained_one_step_calls_equal_the_emulation(gru: bool, settings: dict, batch: int, stack_runs) -> None:
    on, off = quantized_pair(Core(seed=batch, gru=gru), **settings)
    assert isinstance(on.rnn.__dict__.get("fused_stack"), FusedStack)
    generate(on, off, 7, batch, warm_state(on, off, batch))
    assert len(stack_runs) == expected(7)


def test_off_grid_state_declines_then_the_carried_state_runs(stack_runs) -> None:
    on, off = quantized_pair(Core(seed=4), **SETTINGS[0])
    hx = tuple(torch.randn(2, 2, 13, generator=torch.Generator().manual_seed(s)) for s in (7, 8))
    generate(on, off, 5, 2, hx)
    assert len(stack_runs) == expected(4)  # the first call ran per op (off the grids), the other four fused


def test_a_state_other_than_the_last_one_is_encoded_again(stack_runs) -> None:
    on, off = quantized_pair(Core(seed=5), **SETTINGS[0])
    start = warm_state(on, off, 3)
    later, _ = generate(on, off, 3, 3, start)
    generate(on, off, 2, 3, start, seed=5)  # branch from an earlier state
    swapped = tuple(s.clone() for s in later)
    for s in later:  # the caller edits the returned state in place: rows swapped, still on the grids
        s[:, [0, 1]] = s[:, [1, 0]]
    generate(on, off, 2, 3, later, seed=6)
    assert not torch.equal(swapped[0], later[0])
    assert len(stack_runs) == expected(7)


def test_observed_or_differentiated_or_longer_calls_decline(stack_runs) -> None:
    on, off = quantized_pair(Core(seed=6), **SETTINGS[1])
    state = warm_state(on, off, 2)
    calls: list[int] = []
    handle = on.rnn.cells[1].act_h.register_forward_hook(lambda *a: calls.append(1))
    generate(on, off, 2, 2, state)
    handle.remove()
    assert calls == [1, 1] and stack_runs == []
    x = sequences(1, 2).requires_grad_(True)
    with torch.enable_grad():
        on(x, state)
    assert stack_runs == []
    generate(on, off, 1, 2, None)  # no state given: zeros, run per layer
    with torch.no_grad():
        assert_equal(on(sequences(2, 2), state), off(sequences(2, 2), state))  # two steps: the sequence path
    assert stack_runs == []


class BatchFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = ModularLSTM(7, 13, num_layers=3, batch_first=True)

    def forward(self, x: torch.Tensor, hx=None):
        return self.rnn(x, hx)


def test_batch_first_three_layers_and_copies(stack_runs) -> None:
    on, off = quantized_pair(BatchFirst(), **SETTINGS[0])
    inputs = sequences(4, 3).transpose(0, 1).contiguous()  # [B, T, in]
    with torch.no_grad():
        s_on = s_off = on(inputs)[1]
        twin = copy.deepcopy(on)
        assert twin.rnn.fused_stack.rnn is twin.rnn
        s_twin = s_on
        for t in range(4):
            step = inputs[:, t : t + 1]
            a, b, c = on(step, s_on), off(step, s_off), twin(step, s_twin)
            assert a[0].shape == (3, 1, 13)
            assert_equal(a, b)
            assert_equal(c, b)
            s_on, s_off, s_twin = a[1], b[1], c[1]
    assert len(stack_runs) == expected(8)


def test_dropout_between_layers_in_training_declines(stack_runs) -> None:
    on, _ = quantized_pair(Core(seed=7), **SETTINGS[0])
    with torch.no_grad():
        state = on(sequences(4, 1))[1]
    on.rnn.dropout.p = 0.5
    on.train()
    with torch.no_grad():
        on(sequences(1, 1), state)
    assert stack_runs == []


def test_many_batch_sizes_keep_bounded_state(stack_runs) -> None:
    on, off = quantized_pair(Core(seed=8), **SETTINGS[1])
    for batch in range(1, 21):  # more sizes than the stack keeps: old entries are dropped, results unchanged
        generate(on, off, 2, batch, warm_state(on, off, batch))
    assert len(on.rnn.fused_stack._held) <= 16
    assert len(stack_runs) == expected(40)
