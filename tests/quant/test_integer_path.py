"""Integer kernels (int8 products on every backend, int32 products) give the same bits as the float64 emulation.

Every test builds the same wrapper twice, ``integer_kernels="auto"`` and ``"off"``, checks which kernel
each one chose (so a silent fall-back to emulation fails the test) and compares the float outputs
with ``torch.equal``. The whole module runs once per int8 backend (``int_backend``: ``int_mm``, ``fp32``,
``c``, each forced) and with and without the C kernels around them (both in ``int_backend``), and
``assert_same`` checks that the forced backend is the one that ran.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from torch import nn

from compress.modules import ModularLSTM
from compress.modules.ops import EltwiseAdd, EltwiseMult
from compress.quant import PostTrainLinearQuantizer
from compress.quant.kernels import dispatch
from compress.quant.kernels.intmatmul import int8_shift, plan_int_matmul, product_fits_int32
from compress.quant.numerics.primitives import (
    dequantize,
    fake_quantize,
    mode_qrange,
    quantize,
    quantize_unclamped,
    scale_zero_point,
)
from compress.quant.wrappers.base import Grid
from compress.quant.wrappers.factory import FakeQuantWrapper
from compress.quant.wrappers.ops import EltwiseAddQuantWrapper, EltwiseMultQuantWrapper
from compress.quant.wrappers.params import LinearQuantWrapper, quantize_weight
from tests.quant.conftest import used_backends
from tests.quant.quant_helpers import collect_stats, converted_lm, tokens

pytestmark = pytest.mark.usefixtures("int_backend")

MODES = ["symmetric", "symmetric_restricted", "asymmetric_signed", "asymmetric_unsigned"]


def grid(lo: float, hi: float, bits: int, mode: str) -> Grid:
    scale, zp = scale_zero_point(lo, hi, bits, mode)
    return Grid(scale, zp, *mode_qrange(bits, mode), (lo, hi))


def linear_pair(
    module: nn.Module, bits_a: int, bits_w: int, mode_a: str, mode_w: str, per_channel: bool, **kwargs
) -> tuple[LinearQuantWrapper, LinearQuantWrapper]:
    """The same quantized layer with integer kernels on and off (input range wider than the data seen)."""
    qweight = quantize_weight(module.weight, bits_w, mode_w, per_channel)
    g_in, g_out = grid(-1.7, 2.3, bits_a, mode_a), grid(-3.0, 2.5, bits_a, mode_a)
    args = (qweight, g_in, g_out, kwargs.pop("bits_accum", 32), None, kwargs.pop("half_range", False))
    return (
        LinearQuantWrapper(module, *args, integer_kernels="auto", **kwargs),
        LinearQuantWrapper(module, *args, integer_kernels="off", **kwargs),
    )


def seeded_linear(k: int, n: int, seed: int, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    fc = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        fc.weight.mul_(3.0)  # wider than the input scale so bias and products use many codes
    return fc


def inputs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    # Beyond the input range on both sides: saturated codes, 0 and every code in between occur.
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 1.5


def assert_same(on: nn.Module, off: nn.Module, *xs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        a, b = on(*xs), off(*xs)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a, b), f"max |diff| {float((a - b).abs().max())}"
    forced = os.environ.get(dispatch.ENV)
    assert used_backends(on) <= {forced}, f"forced {forced}, ran {used_backends(on)}"
    return a


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("bits", range(2, 9))
def test_linear_int_mm_equals_emulation(mode: str, per_channel: bool, bits: int) -> None:
    fc = seeded_linear(37, 29, seed=bits)
    on, off = linear_pair(fc, bits, bits, mode, mode, per_channel)
    assert (on.kernel, off.kernel) == ("int8", "emulated")
    out = assert_same(on, off, inputs((6, 37), seed=bits))
    assert out.unique().numel() >= min(2**bits - 1, 8)  # not a degenerate, nearly constant output


@pytest.mark.parametrize(("mode_a", "mode_w"), list(itertools.permutations(MODES, 2)))
def test_mixed_activation_and_weight_modes(mode_a: str, mode_w: str) -> None:
    on, off = linear_pair(seeded_linear(19, 11, seed=3), 8, 8, mode_a, mode_w, per_channel=True)
    assert on.kernel == "int8"
    assert_same(on, off, inputs((4, 19), seed=4))


@pytest.mark.parametrize(
    ("k", "n", "rows"),
    [(1, 1, 1), (1, 5, 3), (3, 1000, 2), (257, 5, 1), (257, 1000, 7), (4096, 1000, 3), (64, 4096, 2), (4096, 4096, 1)],
)
@pytest.mark.parametrize("mode", ["symmetric", "asymmetric_unsigned"])
def test_odd_and_wide_shapes(k: int, n: int, rows: int, mode: str) -> None:
    on, off = linear_pair(seeded_linear(k, n, seed=k + n), 8, 8, mode, mode, per_channel=True)
    assert on.kernel == "int8"
    assert_same(on, off, inputs((rows, k), seed=rows))


def test_batch_one_leading_dims_and_chunked_rows() -> None:
    on, off = linear_pair(seeded_linear(24, 400, seed=5), 8, 8, "asymmetric_signed", "asymmetric_signed", True)
    assert_same(on, off, inputs((24,), seed=1))  # unbatched
    assert_same(on, off, inputs((1, 1, 24), seed=2))
    rows = inputs((3, 1000, 24), seed=3)  # processed in chunks of rows
    whole = assert_same(on, off, rows)
    with torch.no_grad():
        assert torch.equal(whole[1, 700:], on(rows[1, 700:]))


def test_fake_quant_of_a_large_tensor_in_chunks() -> None:
    sigmoid = FakeQuantWrapper(nn.Sigmoid(), grid(0.0, 1.0, 8, "asymmetric_unsigned"))
    sigmoid.reset_tracking(True)
    x = inputs((700, 1000), seed=0)
    g = sigmoid._floats["output"]
    want = fake_quantize(torch.sigmoid(x), g[0], g[1], 0, 255)
    with torch.no_grad():
        assert torch.equal(sigmoid(x), want)
    assert sigmoid.observed == x.numel()


@pytest.mark.parametrize("bias", [False, True])
def test_no_bias_half_range_and_narrow_accumulator(bias: bool) -> None:
    fc = seeded_linear(300, 17, seed=8, bias=bias)
    on, off = linear_pair(fc, 8, 8, "asymmetric_unsigned", "asymmetric_signed", True, bits_accum=14, half_range=True)
    out = assert_same(on, off, inputs((5, 300), seed=9))
    assert bool((out >= 0).all())


def test_codes_that_do_not_fit_int8_are_emulated_with_a_reason() -> None:
    fc = seeded_linear(16, 8, seed=2)
    on, _ = linear_pair(fc, 16, 8, "symmetric", "symmetric", False)
    assert on.kernel == "emulated" and "input codes" in on.note
    on, off = linear_pair(fc, 8, 9, "symmetric", "symmetric", False)
    assert on.kernel == "emulated" and "weight codes" in on.note
    assert_same(on, off, inputs((3, 16), seed=1))


def test_accumulator_bound_rejects_possible_int32_overflow() -> None:
    k = 2**17  # 128 * 128 * 2^17 = 2^31 > 2^31 - 1
    w = torch.full((1, k), -128, dtype=torch.int32)
    mm, why = plan_int_matmul(w, torch.tensor(0.0), (-128, 127), None, 0.0, None)
    assert mm is None and "overflow" in why
    mm, _ = plan_int_matmul(w[:, : k // 2], torch.tensor(0.0), (-128, 127), None, 0.0, None)
    assert mm is not None


def test_int8_shift_and_product_bound() -> None:
    assert [int8_shift(*r) for r in [(-128, 127), (0, 255), (-127, 127), (0, 3), (-1, 255)]] == [0, 128, 0, 0, None]
    assert product_fits_int32([255, 255, 255], (-(2**31), 2**31 - 1))
    assert not product_fits_int32([2**16, 2**16], (-(2**53), 2**53))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "conv",
    [
        lambda: nn.Conv1d(3, 5, 3, padding=1),
        lambda: nn.Conv1d(4, 6, 5, stride=2, dilation=2, padding=3, bias=False),
        lambda: nn.Conv2d(3, 4, (3, 2), padding=(1, 2), stride=(2, 1)),
        lambda: nn.Conv2d(2, 7, 1),
    ],
)
def test_conv_int_mm_equals_emulation(mode: str, conv) -> None:
    torch.manual_seed(0)
    module = conv()
    on, off = linear_pair(module, 8, 8, mode, mode, per_channel=True)
    assert on.kernel == "int8"
    shape = (2, module.in_channels, 9) if isinstance(module, nn.Conv1d) else (2, module.in_channels, 7, 6)
    assert_same(on, off, inputs(shape, seed=1))
    assert_same(on, off, inputs(shape[1:], seed=2))  # unbatched


def test_grouped_conv_is_emulated() -> None:
    on, off = linear_pair(nn.Conv1d(4, 4, 3, groups=2), 8, 8, "symmetric", "symmetric", False)
    assert on.kernel == "emulated" and "groups=2" in on.note
    assert_same(on, off, inputs((1, 4, 6), seed=0))


def test_refused_int_mm_falls_back_to_emulation(monkeypatch: pytest.MonkeyPatch) -> None:
    on, off = linear_pair(seeded_linear(8, 8, seed=1), 8, 8, "symmetric", "symmetric", False)

    def refuse(*_args, **_kwargs):
        raise RuntimeError("_int_mm: shape not supported")

    monkeypatch.setattr(on.int_mm, "product_for", refuse)
    assert_same(on, off, inputs((2, 8), seed=0))
    assert "refused" in on.note and on.kernel == "int8"


def mult_pair(grids: list[Grid], bits_accum: int = 32) -> tuple[EltwiseMultQuantWrapper, EltwiseMultQuantWrapper]:
    out = grid(-2.0, 2.0, 8, "asymmetric_signed")
    make = lambda mode: EltwiseMultQuantWrapper(EltwiseMult(), grids, out, bits_accum, integer_kernels=mode)  # noqa: E731
    return make("auto"), make("off")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bits", [2, 5, 8])
@pytest.mark.parametrize("n_inputs", [2, 3])
def test_eltwise_mult_int32_equals_emulation(mode: str, bits: int, n_inputs: int) -> None:
    grids = [grid(-1.0 - i, 1.5 + i, bits, mode) for i in range(n_inputs)]
    on, off = mult_pair(grids)
    assert (on.kernel, off.kernel) == ("int32", "emulated")
    assert_same(on, off, *[inputs((3, 50), seed=i) for i in range(n_inputs)])


@pytest.mark.parametrize("kernels", ["auto", "off"])
def test_narrow_accumulators_still_clamp(kernels: str) -> None:
    """With 10-bit accumulators the clamps matter: both kernels match a reference built from the primitives."""
    g_in, g_out = grid(-1.0, 1.5, 8, "asymmetric_signed"), grid(-0.5, 0.7, 8, "asymmetric_signed")
    xs = [inputs((40,), seed=i) for i in range(2)]
    ints = [quantize(x, g_in.scale, g_in.zero_point, g_in.qmin, g_in.qmax) + g_in.zero_point for x in xs]

    def emit(acc: torch.Tensor, requant: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(quantize_unclamped(acc, requant, g_out.zero_point), g_out.qmin, g_out.qmax)
        return dequantize(q, g_out.scale, g_out.zero_point)

    mult = EltwiseMultQuantWrapper(EltwiseMult(), [g_in, g_in], g_out, 10, integer_kernels=kernels)
    acc = torch.clamp(ints[0] * ints[1], -512, 511)
    assert bool((acc.abs() == 512).any() | (acc == 511).any())  # the clamp is active
    assert torch.equal(mult(*xs), emit(acc, g_out.scale / (g_in.scale * g_in.scale)))
    add = EltwiseAddQuantWrapper(EltwiseAdd(), [g_in, g_in], g_out, 8, integer_kernels=kernels)
    parts = [torch.clamp(torch.round(x * (g_out.scale / g_in.scale)), -128, 127) for x in ints]
    assert torch.equal(add(*xs), emit(torch.clamp(parts[0] + parts[1], -128, 127), torch.tensor(1.0)))


def test_eltwise_mult_with_wide_codes_is_emulated() -> None:
    on, off = mult_pair([grid(-1.0, 1.0, 16, "symmetric")] * 3, bits_accum=53)
    assert on.kernel == "emulated"
    assert_same(on, off, *[inputs((4,), seed=i) for i in range(3)])


def test_quantizer_switch_and_report_field() -> None:
    model = converted_lm(seed=0)
    x = tokens(steps=7, batch=3)
    stats = collect_stats(model, lambda m: m(x))
    args = {"mode": "asymmetric_unsigned", "per_channel_wts": True}
    q_on = PostTrainLinearQuantizer(model, stats, **args)
    q_off = PostTrainLinearQuantizer(model, stats, integer_kernels="off", **args)
    on, off = q_on.prepare_model().eval(), q_off.prepare_model().eval()
    assert_same(on, off, x)
    rows = {r["module"]: r for r in q_on.layer_records(lambda m: m(x))}
    forced = os.environ[dispatch.ENV]
    assert rows["decoder"]["kernel"] == forced
    assert rows["rnn.cells.1.fc_gate_h"]["kernel"] == f"{forced}, fused loop"  # the LSTM runs the fused loop
    assert rows["rnn.cells.0.eltwisemult_hidden"]["kernel"] == "table, fused loop"
    assert rows["rnn.cells.0.act_i"]["kernel"] == "table, fused loop"
    assert on.rnn.cells[0].eltwisemult_hidden.kernel == "int32"  # what runs when the loop steps aside
    assert {r["kernel"] for r in q_off.layer_records(lambda m: m(x)) if r["kernel"]} == {"emulated"}


def test_modular_lstm_projects_all_steps_with_one_call() -> None:
    torch.manual_seed(0)
    lstm = ModularLSTM.from_float(nn.LSTM(6, 8, num_layers=2)).eval()
    x = torch.randn(5, 3, 6)
    stats = collect_stats(lstm, lambda m: m(x))
    qmodel = PostTrainLinearQuantizer(lstm, stats, mode="asymmetric_signed").prepare_model().eval()
    shapes: dict[str, list] = {"fc_gate_x": [], "fc_gate_h": []}
    for name, module in qmodel.named_modules():
        kind = name.rsplit(".", 1)[-1]
        if kind in shapes:
            module.register_forward_hook(lambda _m, args, _o, k=kind: shapes[k].append(tuple(args[0].shape)))
    with torch.no_grad():
        qmodel(x)
    assert shapes["fc_gate_x"] == [(15, 6), (15, 8)]  # one [T*B, in] product per layer
    assert shapes["fc_gate_h"] == [(3, 8)] * 10  # one per time step and layer


@pytest.mark.gpu
def test_cuda_matches_cpu_and_emulation() -> None:
    on, off = linear_pair(seeded_linear(64, 48, seed=1), 8, 8, "asymmetric_unsigned", "asymmetric_signed", True)
    x = inputs((40, 64), seed=0)
    cpu = assert_same(on, off, x)
    on, off = on.cuda(), off.cuda()
    for rows in (40, 3):  # CUDA's _int_mm refuses small M: those calls fall back to emulation
        cuda = assert_same(on, off, x[:rows].cuda())
        assert torch.equal(cuda.cpu(), cpu[:rows])
