"""Straight-through stand-ins: golden values, every wrapper type covered, gradients through each, cell internals."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from compress.finetune import thaw
from compress.finetune.ste import STE_OPS, STEOp, fake_quantize, ste_op_for, weight_grid
from compress.modules.ops import Concat, EltwiseAdd, EltwiseMult
from compress.quant import PostTrainLinearQuantizer
from compress.quant.wrappers.base import Grid, QuantWrapper
from compress.quant.wrappers.factory import (
    ConcatQuantWrapper,
    EltwiseAddQuantWrapper,
    EltwiseMultQuantWrapper,
    EmbeddingQuantWrapper,
    FakeQuantWrapper,
    FloatWrapper,
    LinearQuantWrapper,
    WeightFakeQuantWrapper,
    quantize_weight,
)
from tests.quant.quant_helpers import collect_stats, converted_lm, tokens


def _grid(scale: float, zp: float = 0.0, qmin: int = -128, qmax: int = 127) -> Grid:
    return Grid(torch.tensor(scale, dtype=torch.float64), torch.tensor(zp, dtype=torch.float64), qmin, qmax)


def test_fake_quantize_golden_values_and_clipped_gradient() -> None:
    # Asymmetric 8-bit grid of [-2, 10] (scale 21.25, zero point -42, codes 0..255, as activation_grid's example).
    # The grid covers [(0 - 42) / 21.25, (255 - 42) / 21.25] = [-1.976, 10.024].
    x = torch.tensor([-3.0, -1.9, 0.1, 4.0, 10.0, 11.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(21.25), torch.tensor(-42.0), 0, 255)
    y.sum().backward()
    codes = torch.round(y.detach() * 21.25 + 42).tolist()
    # round(21.25 * x + 42), half to even (254.5 -> 254), clamped to 0..255
    assert codes == [0.0, 2.0, 44.0, 127.0, 254.0, 255.0]
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # straight through inside the range, zero outside


def test_weight_grid_is_the_quantizers_grid() -> None:
    w = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    for per_channel in (False, True):
        for mode in ("symmetric", "asymmetric_signed"):
            qw = quantize_weight(w, 4, mode, per_channel)
            scale, zp = weight_grid(w, qw.info, False)
            assert torch.equal(scale.flatten(), qw.scale.flatten()) and torch.equal(
                zp.flatten(), qw.zero_point.flatten()
            )


def _concrete_wrapper_types() -> set[type]:
    found, todo = set(), [QuantWrapper]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("compress.quant.wrappers") and not cls.__name__.startswith("_"):
            found.add(cls)
    return (found - {QuantWrapper}) | {FloatWrapper}


def test_every_wrapper_type_has_a_straight_through_form() -> None:
    assert _concrete_wrapper_types() <= set(STE_OPS), _concrete_wrapper_types() - set(STE_OPS)


# One example per wrapper type: (float module, wrapper, inputs). A new entry in STE_OPS needs one here.
def _linear() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, ...]]:
    fc = nn.Linear(5, 4)
    qw = quantize_weight(fc.weight, 8, "asymmetric_signed", True)
    return fc, LinearQuantWrapper(fc, qw, _grid(60.0), _grid(30.0), 32, None), (torch.randn(7, 5),)


def _weights_only() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, ...]]:
    fc = nn.Linear(5, 4)
    return fc, WeightFakeQuantWrapper(fc, quantize_weight(fc.weight, 4, "symmetric", False)), (torch.randn(7, 5),)


def _embedding() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, ...]]:
    emb = nn.Embedding(9, 4)
    return emb, EmbeddingQuantWrapper(emb, quantize_weight(emb.weight, 8, "symmetric", True)), (tokens(vocab=9),)


def _op(
    module: nn.Module, cls: type, n: int = 2
) -> Callable[[], tuple[nn.Module, nn.Module, tuple[torch.Tensor, ...]]]:
    return lambda: (module, cls(module, [_grid(40.0)] * n, _grid(20.0), 32), tuple(torch.rand(6, 3) for _ in range(n)))


def _fake() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, ...]]:
    return nn.Tanh(), FakeQuantWrapper(nn.Tanh(), _grid(127.0)), (torch.randn(6, 3),)


def _float() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, ...]]:
    fc = nn.Linear(5, 4)
    return fc, FloatWrapper(fc, "fp16"), (torch.randn(7, 5),)


EXAMPLES = {
    LinearQuantWrapper: _linear,
    WeightFakeQuantWrapper: _weights_only,
    EmbeddingQuantWrapper: _embedding,
    EltwiseAddQuantWrapper: _op(EltwiseAdd(), EltwiseAddQuantWrapper),
    EltwiseMultQuantWrapper: _op(EltwiseMult(), EltwiseMultQuantWrapper),
    ConcatQuantWrapper: _op(Concat(1), ConcatQuantWrapper),
    FakeQuantWrapper: _fake,
    FloatWrapper: _float,
}


def test_examples_cover_the_registry() -> None:
    assert set(EXAMPLES) == set(STE_OPS)


@pytest.mark.parametrize("kind", list(STE_OPS), ids=lambda t: t.__name__)
def test_gradients_flow_straight_through_every_wrapper_type(kind: type) -> None:
    torch.manual_seed(0)
    module, wrapper, inputs = EXAMPLES[kind]()
    ste = ste_op_for(module, wrapper)
    inputs = tuple(x.requires_grad_() if x.is_floating_point() else x for x in inputs)
    out = ste(*inputs)
    (out * torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)).sum().backward()
    for x in inputs:
        if x.is_floating_point():
            assert x.grad is not None and bool(x.grad.abs().sum() > 0) and bool(torch.isfinite(x.grad).all())
    for name, p in module.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    # The training forward is the wrapper's forward up to float32 rounding: at most one output code apart.
    with torch.no_grad():
        want, got = wrapper(*[x.detach() for x in inputs]), ste(*[x.detach() for x in inputs])
    if kind is FloatWrapper:  # fp16 values, but float32 arithmetic: within fp16's rounding
        torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-3)
        return
    step = 1 / float(wrapper.output_scale) if "output" in getattr(wrapper, "_qrange", {}) else 1e-3
    assert float((want.double() - got.double()).abs().max()) <= step * 1.001 + 1e-6  # 1e-6: float32 outputs
    assert float(((want - got).abs() < 1e-6).double().mean()) >= 0.9


def test_cell_internals_are_trained_straight_through() -> None:
    model = converted_lm(tied=True)
    x = tokens()
    stats = collect_stats(model, lambda m: m(x))
    qmodel = PostTrainLinearQuantizer(model, stats, mode="asymmetric_signed", per_channel_wts=True).prepare_model()
    trainable = thaw(model, qmodel)
    cell = trainable.rnn.cells[0]
    ops = {name: type(m).__name__ for name, m in cell.named_children()}
    assert all(issubclass(type(m), STEOp) for m in cell.children()), ops
    assert {"fc_gate_x", "fc_gate_h", "eltwiseadd_gate", "act_f", "eltwisemult_cell_forget", "act_h"} <= set(ops)
    assert trainable.decoder.module.weight is trainable.encoder.module.weight  # the tie survives thawing
    trainable(x).logsumexp(-1).sum().backward()
    for name, p in trainable.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    assert all(p.grad is None for p in model.parameters())  # the float model itself is never touched
