"""ModularLSTM / ModularGRU and their cells against nn.LSTM / nn.GRU, dropout, round trips."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from compress.modules import ModularGRU, ModularGRUCell, ModularLSTM, ModularLSTMCell

# Where the tolerances come from: machine epsilon is 1.2e-7 (float32) and 2.2e-16 (float64).
# PyTorch's fused kernels sum the gate pre-activations in another order, and rounding
# differences grow through the recurrence over T steps and L layers; with the small sizes here
# they stay within ~100 eps in float32, while a wrong formula (gate order, bias placement in the
# GRU's reset product) shows up at 1e-2 or more. float64 leaves a 1e6 * eps margin.
FLOAT32_TOL = 1e-5
FLOAT64_TOL = 1e-10
TOL = {torch.float32: FLOAT32_TOL, torch.float64: FLOAT64_TOL}

IN, HIDDEN, STEPS, BATCH = 3, 5, 6, 4
LENGTHS = [4, 6, 1, 5]  # unsorted on purpose: exercises sorted_indices / unsorted_indices
PAIRS = {"lstm": (nn.LSTM, ModularLSTM), "gru": (nn.GRU, ModularGRU)}
CELL_PAIRS = {"lstm": (nn.LSTMCell, ModularLSTMCell), "gru": (nn.GRUCell, ModularGRUCell)}


def max_err(a: object, b: object) -> float:
    """Max abs difference over (nested tuples of) tensors or PackedSequences with equal layout."""
    if isinstance(a, PackedSequence):
        assert isinstance(b, PackedSequence)
        assert torch.equal(a.batch_sizes, b.batch_sizes)
        for x, y in ((a.sorted_indices, b.sorted_indices), (a.unsorted_indices, b.unsorted_indices)):
            assert (x is None and y is None) or torch.equal(x, y)
        return max_err(a.data, b.data)
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        return max(max_err(x, y) for x, y in zip(a, b, strict=True))
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a - b).abs().max().item()


def random_state(kind: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> object:
    h = torch.randn(shape, dtype=dtype, generator=gen)
    return (h, torch.randn(shape, dtype=dtype, generator=gen)) if kind == "lstm" else h


def make_pair(kind: str, dtype: torch.dtype, **kwargs: object) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    ref = PAIRS[kind][0](IN, HIDDEN, **kwargs).to(dtype).eval()
    return ref, PAIRS[kind][1].from_float(ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "num_layers,bidirectional,batch_first,bias,initial,packed",
    list(itertools.product([1, 3], [False, True], [False, True], [True, False], [False, True], [False, True])),
)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_matches_pytorch(
    kind: str, num_layers: int, bidirectional: bool, batch_first: bool, bias: bool, initial: bool, packed: bool, dtype
) -> None:
    ref, mod = make_pair(
        kind, dtype, num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional
    )
    gen = torch.Generator().manual_seed(1)
    shape = (BATCH, STEPS, IN) if batch_first else (STEPS, BATCH, IN)
    x = torch.randn(shape, dtype=dtype, generator=gen)
    if packed:
        x = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
    directions = 2 if bidirectional else 1
    hx = random_state(kind, (num_layers * directions, BATCH, HIDDEN), dtype, gen) if initial else None
    with torch.no_grad():
        expected, got = ref(x, hx), mod(x, hx)
    assert max_err(expected, got) <= TOL[dtype]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("initial", [False, True])
def test_unbatched_input_matches_pytorch(kind: str, initial: bool) -> None:
    ref, mod = make_pair(kind, torch.float64, num_layers=2, bidirectional=True)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(STEPS, IN, dtype=torch.float64, generator=gen)
    hx = random_state(kind, (4, HIDDEN), torch.float64, gen) if initial else None
    expected, got = ref(x, hx), mod(x, hx)
    assert max_err(expected, got) <= FLOAT64_TOL


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("initial", [False, True])
def test_cells_match_pytorch(kind: str, dtype: torch.dtype, bias: bool, batched: bool, initial: bool) -> None:
    torch.manual_seed(0)
    ref = CELL_PAIRS[kind][0](IN, HIDDEN, bias=bias).to(dtype)
    mod = CELL_PAIRS[kind][1].from_float(ref)
    gen = torch.Generator().manual_seed(3)
    lead = (BATCH,) if batched else ()
    x = torch.randn(*lead, IN, dtype=dtype, generator=gen)
    hx = random_state(kind, (*lead, HIDDEN), dtype, gen) if initial else None
    with torch.no_grad():
        assert max_err(ref(x, hx), mod(x, hx)) <= TOL[dtype]


def test_cell_rejects_3d_input() -> None:
    with pytest.raises(ValueError, match="1D or 2D"):
        ModularGRUCell(IN, HIDDEN)(torch.zeros(2, 2, IN))


def test_wrong_initial_state_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"initial state of shape \[2, 4, 5\]"):
        ModularGRU(IN, HIDDEN, num_layers=2)(torch.zeros(STEPS, BATCH, IN), torch.zeros(1, BATCH, HIDDEN))


def test_empty_sequence_is_rejected() -> None:
    with pytest.raises(ValueError, match="sequence length larger than 0"):
        ModularLSTM(IN, HIDDEN)(torch.zeros(0, BATCH, IN))


def test_unbatched_input_needs_unbatched_state() -> None:
    with pytest.raises(ValueError, match=r"initial state of shape \[1, 1, 5\]"):
        ModularGRU(IN, HIDDEN)(torch.zeros(STEPS, IN), torch.zeros(1, 1, HIDDEN))


def _capture_inputs(module: nn.Module, store: list[torch.Tensor]) -> None:
    module.register_forward_hook(lambda _m, args, _out: store.append(args[0].detach().clone()))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_dropout_one_zeroes_every_layer_input_but_the_first_in_training(kind: str) -> None:
    _, mod = make_pair(kind, torch.float32, num_layers=3, dropout=1.0, bidirectional=True)
    mod.train()
    seen: dict[str, list[torch.Tensor]] = {}
    for name in ("cells.0.fc_gate_x", "cells.1.fc_gate_x", "cells_reverse.2.fc_gate_x"):
        _capture_inputs(mod.get_submodule(name), seen.setdefault(name, []))
    out = mod(torch.randn(STEPS, BATCH, IN))[0]
    assert seen["cells.0.fc_gate_x"][0].abs().sum() > 0
    assert seen["cells.1.fc_gate_x"][0].abs().sum() == 0
    assert seen["cells_reverse.2.fc_gate_x"][0].abs().sum() == 0
    assert out.abs().sum() > 0, "dropout must not be applied after the last layer"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_dropout_is_ignored_in_eval_mode(kind: str) -> None:
    ref, mod = make_pair(kind, torch.float64, num_layers=3, dropout=1.0)
    x = torch.randn(STEPS, BATCH, IN, dtype=torch.float64)
    assert not mod.training
    assert max_err(ref(x), mod(x)) <= FLOAT64_TOL


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_zero_dropout_in_training_matches_pytorch(kind: str) -> None:
    ref, mod = make_pair(kind, torch.float64, num_layers=2)
    ref.train()
    mod.train()
    x = torch.randn(STEPS, BATCH, IN, dtype=torch.float64)
    assert max_err(ref(x), mod(x)) <= FLOAT64_TOL


def test_dropout_runs_between_layers_only() -> None:
    mod = ModularLSTM(IN, HIDDEN, num_layers=3, dropout=0.5)
    calls = []
    mod.dropout.register_forward_hook(lambda *_: calls.append(1))
    mod(torch.randn(STEPS, BATCH, IN))
    assert len(calls) == 2


def _float_variants() -> list[nn.Module]:
    torch.manual_seed(0)
    return [
        nn.LSTM(IN, HIDDEN, num_layers=3, bidirectional=True, batch_first=True, dropout=0.25),
        nn.LSTM(IN, HIDDEN, bias=False).double(),
        nn.GRU(IN, HIDDEN, num_layers=2, bidirectional=True, dropout=0.5),
        nn.GRU(IN, HIDDEN, bias=False).double(),
        nn.LSTMCell(IN, HIDDEN),
        nn.GRUCell(IN, HIDDEN, bias=False).double(),
    ]


MODULAR_OF = {nn.LSTM: ModularLSTM, nn.GRU: ModularGRU, nn.LSTMCell: ModularLSTMCell, nn.GRUCell: ModularGRUCell}


@pytest.mark.parametrize("ref", _float_variants(), ids=repr)
def test_round_trip_reproduces_state_dict_and_settings(ref: nn.Module) -> None:
    ref.train(False)
    next(ref.parameters()).requires_grad_(False)
    mod = MODULAR_OF[type(ref)].from_float(ref)
    back = mod.to_float()
    expected, got = ref.state_dict(), back.state_dict()
    assert list(expected) == list(got)
    for key, tensor in expected.items():
        assert torch.equal(tensor, got[key]) and tensor.dtype == got[key].dtype, key
        assert tensor.data_ptr() != got[key].data_ptr(), "must copy, not share, parameters"
    assert repr(back) == repr(ref)
    assert not mod.training and not back.training
    assert [p.requires_grad for p in back.parameters()] == [p.requires_grad for p in ref.parameters()]


def test_from_float_keeps_dtype_and_maps_reverse_weights() -> None:
    ref = nn.GRU(IN, HIDDEN, num_layers=2, bidirectional=True).double()
    mod = ModularGRU.from_float(ref)
    assert mod.cells[1].fc_gate_x.weight.dtype == torch.float64
    assert torch.equal(mod.cells_reverse[1].fc_gate_h.bias, ref.bias_hh_l1_reverse)
    assert torch.equal(mod.cells_reverse[0].fc_gate_x.weight, ref.weight_ih_l0_reverse)
    assert mod.cells[1].fc_gate_x.in_features == 2 * HIDDEN


def test_from_float_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="Expected an LSTM, got GRU"):
        ModularLSTM.from_float(nn.GRU(IN, HIDDEN))


def test_repr_mirrors_pytorch() -> None:
    mod = ModularLSTM(IN, HIDDEN, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True)
    assert mod.extra_repr() == "3, 5, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_sorted_packed_input_without_index_permutation(kind: str) -> None:
    ref, mod = make_pair(kind, torch.float64, num_layers=2, bidirectional=True)
    gen = torch.Generator().manual_seed(4)
    x = pack_padded_sequence(torch.randn(STEPS, 3, IN, dtype=torch.float64, generator=gen), torch.tensor([6, 4, 4]))
    assert x.sorted_indices is None
    hx = random_state(kind, (4, 3, HIDDEN), torch.float64, gen)
    assert max_err(ref(x, hx), mod(x, hx)) <= FLOAT64_TOL


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradients_match_pytorch(kind: str) -> None:
    ref, mod = make_pair(kind, torch.float64, num_layers=2, bidirectional=True)
    x = torch.randn(STEPS, BATCH, IN, dtype=torch.float64)
    ref(x)[0].square().sum().backward()
    mod(x)[0].square().sum().backward()
    assert (ref.weight_hh_l1.grad - mod.cells[1].fc_gate_h.weight.grad).abs().max() <= FLOAT64_TOL
    assert (ref.bias_ih_l0_reverse.grad - mod.cells_reverse[0].fc_gate_x.bias.grad).abs().max() <= FLOAT64_TOL
