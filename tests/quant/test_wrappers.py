"""Quantized wrappers against an independent integer-only reference (numpy int64), bit for bit.

The reference re-derives every scale from the formulas in plain Python and carries all integer
arithmetic in int64, so it shares no code with compress.quant.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import QuantizationError
from compress.modules.ops import Concat, EltwiseAdd, EltwiseMult
from compress.quant import PostTrainLinearQuantizer
from compress.quant.kernels import cpaths
from compress.quant.wrappers.base import Grid
from compress.quant.wrappers.factory import FakeQuantWrapper, FloatWrapper

ACC32 = (-(2**31), 2**31 - 1)


def ref_grid(lo: float, hi: float, bits: int, mode: str) -> tuple[float, float, int, int]:
    """(scale, zp, qmin, qmax) from the old tool's formulas, in plain Python."""
    if mode == "symmetric":
        sat = max(abs(lo), abs(hi))
        return ((2**bits - 1) / 2 / sat if sat else 1.0), 0.0, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (2**bits - 1) / (hi - lo) if hi > lo else 1.0
    zp = float(np.round(scale * lo))
    if mode == "asymmetric_signed":
        return scale, zp + 2 ** (bits - 1), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return scale, zp, 0, 2**bits - 1


def ref_codes(x: np.ndarray, scale, zp, qmin: int, qmax: int) -> np.ndarray:
    return np.clip(np.round(scale * x.astype(np.float64) - zp), qmin, qmax).astype(np.int64)


def ref_out(acc: np.ndarray, requant, grid) -> torch.Tensor:
    s, zp, qmin, qmax = grid
    q = np.clip(np.round(acc.astype(np.float64) * requant - zp), qmin, qmax)
    return torch.from_numpy(((q + zp) / s).astype(np.float32))


def ref_weight(w: np.ndarray, bits: int, mode: str, per_channel: bool):
    rows = w.reshape(w.shape[0], -1)
    if per_channel:
        grids = [ref_grid(float(r.min()), float(r.max()), bits, mode) for r in rows]
    else:
        grids = [ref_grid(float(rows.min()), float(rows.max()), bits, mode)] * rows.shape[0]
    s = np.array([g[0] for g in grids])
    zp = np.array([g[1] for g in grids])
    q = np.stack([ref_codes(r, g[0], g[1], g[2], g[3]) for r, g in zip(rows, grids, strict=True)])
    return (q + zp[:, None].astype(np.int64)).reshape(w.shape), s


def ref_linear(x, lin: nn.Linear, rin, rout, bits_a, bits_w, mode, per_channel):
    gin, gout = ref_grid(rin["min"], rin["max"], bits_a, mode), ref_grid(rout["min"], rout["max"], bits_a, mode)
    x_int = ref_codes(x.numpy(), *gin) + np.int64(gin[1])
    w_int, s_w = ref_weight(lin.weight.detach().numpy().astype(np.float64), bits_w, mode, per_channel)
    acc_scale = gin[0] * s_w
    b_int = np.clip(np.round(lin.bias.detach().numpy().astype(np.float64) * acc_scale), *ACC32).astype(np.int64)
    acc = np.clip(x_int @ w_int.T + b_int, *ACC32)
    return ref_out(acc, gout[0] / acc_scale, gout), acc


def _quantized(module: nn.Module, entry: dict, **kwargs) -> nn.Module:
    model = nn.Sequential(module)
    return PostTrainLinearQuantizer(model, {"0": entry}, **kwargs).prepare_model()[0]


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric_signed", "asymmetric_unsigned"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize(("width", "bits"), [(64, 8), (4096, 8), (4096, 16)])
def test_linear_equals_integer_reference(mode, per_channel, width, bits):
    gen = torch.Generator().manual_seed(width + bits)
    lin = nn.Linear(width, 24)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(24, width, generator=gen) * 0.05)
        lin.bias.copy_(torch.randn(24, generator=gen))
    x = torch.randn(5, width, generator=gen) * 2
    rin, rout = {"min": -5.0, "max": 6.0}, {"min": -4.0, "max": 3.5}  # narrow output: some saturation
    wrapper = _quantized(
        lin,
        {"inputs": {0: rin}, "output": rout},
        mode=mode,
        per_channel_wts=per_channel,
        bits_activations=bits,
        bits_parameters=bits,
    )
    expected, acc = ref_linear(x, lin, rin, rout, bits, bits, mode, per_channel)
    assert torch.equal(wrapper(x), expected)
    if bits == 16:  # the test has teeth: these accumulators are beyond float32's exact integers
        assert np.abs(acc).max() > 2**24


def ref_conv2d(x, conv: nn.Conv2d, rin, rout, bits, mode):
    gin, gout = ref_grid(rin["min"], rin["max"], bits, mode), ref_grid(rout["min"], rout["max"], bits, mode)
    x_int = torch.from_numpy(ref_codes(x.numpy(), *gin) + np.int64(gin[1])).to(torch.float64)
    cols = F.unfold(x_int, conv.kernel_size, padding=conv.padding, stride=conv.stride).numpy().astype(np.int64)
    w_int, s_w = ref_weight(conv.weight.detach().numpy().astype(np.float64), bits, mode, True)
    acc_scale = gin[0] * s_w
    b_int = np.clip(np.round(conv.bias.detach().numpy().astype(np.float64) * acc_scale), *ACC32).astype(np.int64)
    acc = np.einsum("ok,bkl->bol", w_int.reshape(w_int.shape[0], -1), cols) + b_int[None, :, None]
    acc = np.clip(acc, *ACC32)
    h = (x.shape[2] + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    out = ref_out(acc, (gout[0] / acc_scale)[None, :, None], gout)
    return out.reshape(x.shape[0], -1, h, out.shape[-1] // h)


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric_unsigned"])
def test_conv2d_per_channel_equals_integer_reference(mode):
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 5, kernel_size=3, padding=1, stride=2)
    x = torch.randn(2, 3, 9, 8)
    rin, rout = {"min": -3.0, "max": 3.0}, {"min": -2.0, "max": 2.5}
    wrapper = _quantized(conv, {"inputs": {0: rin}, "output": rout}, mode=mode, per_channel_wts=True)
    assert torch.equal(wrapper(x), ref_conv2d(x, conv, rin, rout, 8, mode))


def test_conv1d_equals_the_equivalent_conv2d_reference():
    torch.manual_seed(4)
    conv1 = nn.Conv1d(3, 4, kernel_size=3, padding=1)
    conv2 = nn.Conv2d(3, 4, kernel_size=(1, 3), padding=(0, 1))
    with torch.no_grad():
        conv2.weight.copy_(conv1.weight[:, :, None, :])
        conv2.bias.copy_(conv1.bias)
    x = torch.randn(2, 3, 11)
    rin, rout = {"min": -3.0, "max": 3.0}, {"min": -2.0, "max": 2.5}
    wrapper = _quantized(conv1, {"inputs": {0: rin}, "output": rout}, per_channel_wts=True)
    expected = ref_conv2d(x[:, :, None, :], conv2, rin, rout, 8, "symmetric")[:, :, 0, :]
    assert torch.equal(wrapper(x), expected)


def _two_input_entry():
    r0, r1, rout = {"min": -2.0, "max": 3.0}, {"min": -1.0, "max": 0.5}, {"min": -2.5, "max": 3.0}
    return {"inputs": {0: r0, 1: r1}, "output": rout}, (r0, r1, rout)


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric_signed", "asymmetric_unsigned"])
def test_eltwise_add_equals_integer_reference(mode):
    entry, (r0, r1, rout) = _two_input_entry()
    a, b = torch.randn(3, 4096) * 1.5, torch.randn(3, 4096) * 0.5
    g0, g1, go = (ref_grid(r["min"], r["max"], 8, mode) for r in (r0, r1, rout))
    parts = []
    for x, g in ((a, g0), (b, g1)):
        x_int = ref_codes(x.numpy(), *g) + np.int64(g[1])
        parts.append(np.clip(np.round(x_int * (go[0] / g[0])), *ACC32).astype(np.int64))
    acc = np.clip(parts[0] + parts[1], *ACC32)
    expected = ref_out(acc, 1.0, go)
    assert torch.equal(_quantized(EltwiseAdd(), entry, mode=mode)(a, b), expected)


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric_signed", "asymmetric_unsigned"])
def test_eltwise_mult_equals_integer_reference(mode):
    entry, (r0, r1, rout) = _two_input_entry()
    a, b = torch.randn(3, 4096) * 1.5, torch.randn(3, 4096) * 0.5
    g0, g1, go = (ref_grid(r["min"], r["max"], 8, mode) for r in (r0, r1, rout))
    x0 = ref_codes(a.numpy(), *g0) + np.int64(g0[1])
    x1 = ref_codes(b.numpy(), *g1) + np.int64(g1[1])
    acc = np.clip(x0 * x1, *ACC32)
    expected = ref_out(acc, go[0] / (g0[0] * g1[0]), go)
    assert torch.equal(_quantized(EltwiseMult(), entry, mode=mode)(a, b), expected)


def test_concat_equals_integer_reference():
    entry, (r0, r1, rout) = _two_input_entry()
    a, b = torch.randn(3, 7), torch.randn(3, 5)
    g0, g1, go = (ref_grid(r["min"], r["max"], 8, "symmetric") for r in (r0, r1, rout))
    parts = [
        np.clip(np.round((ref_codes(x.numpy(), *g) + np.int64(g[1])) * (go[0] / g[0])), *ACC32).astype(np.int64)
        for x, g in ((a, g0), (b, g1))
    ]
    expected = ref_out(np.concatenate(parts, axis=1), 1.0, go)
    assert torch.equal(_quantized(Concat(1), entry)(a, b), expected)


def test_op_wrapper_rejects_wrong_input_count():
    entry, _ = _two_input_entry()
    with pytest.raises(QuantizationError, match="got 3 inputs"):
        _quantized(EltwiseAdd(), entry)(torch.ones(2), torch.ones(2), torch.ones(2))


@pytest.mark.parametrize("per_row", [False, True])
def test_embedding_equals_reference_from_its_own_table(per_row):
    torch.manual_seed(4)
    emb = nn.Embedding(50, 16)
    idx = torch.randint(0, 50, (7, 3))
    w_int, s = ref_weight(emb.weight.detach().numpy().astype(np.float64), 8, "asymmetric_signed", per_row)
    expected = torch.from_numpy((w_int / s[:, None]).astype(np.float32))[idx]
    # The quantizer-level per_channel_wts is for Linear/Conv; per-row tables need the embedding's own rule.
    overrides = [{"match": "0", "per_channel_wts": True}] if per_row else []
    wrapper = _quantized(emb, {}, mode="asymmetric_signed", per_channel_wts=True, overrides=overrides)
    assert torch.equal(wrapper(idx), expected)
    assert wrapper.qweight.info["per_channel"] is per_row


def test_weights_only_equals_manual_fake_quantization():
    torch.manual_seed(5)
    lin = nn.Linear(10, 4)
    x = torch.randn(3, 10)
    w_int, s = ref_weight(lin.weight.detach().numpy().astype(np.float64), 4, "symmetric", False)
    manual = F.linear(x, torch.from_numpy((w_int / s[:, None]).astype(np.float32)), lin.bias)
    wrapper = _quantized(lin, {}, bits_activations=None, bits_parameters=4)
    assert torch.equal(wrapper(x), manual)


def test_fake_quant_quantizes_the_output_only():
    class Spy(nn.Module):
        def forward(self, x):
            self.seen = x
            return torch.sigmoid(x)

    spy = Spy()
    wrapper = _quantized(spy, {"inputs": {0: {"min": -1.0, "max": 1.0}}, "output": {"min": 0.0, "max": 1.0}})
    x = torch.tensor([-3.0, 0.1234567, 3.0])
    y = wrapper(x)
    assert torch.equal(wrapper.wrapped.seen, x)  # input not quantized (anchor notebook behaviour)
    scale = 127.5  # symmetric 8 bits, sat 1
    expected = torch.clamp(torch.round(torch.sigmoid(x).double() * scale), -128, 127) / scale
    assert torch.equal(y, expected.float())


def test_bias_quantized_at_build_time_from_calibrated_scale():
    torch.manual_seed(6)
    lin = nn.Linear(8, 3)
    entry = {"inputs": {0: {"min": -1.0, "max": 1.0}}, "output": {"min": -2.0, "max": 2.0}}
    wrapper = _quantized(lin, entry)
    expected_bias = torch.round(lin.bias.detach().double() * 127.5 * wrapper.qweight.scale)
    assert torch.equal(wrapper.bias_int, expected_bias)
    # Stateless: the first batch seen (here a huge one) does not change later outputs.
    x = torch.randn(2, 8)
    fresh = _quantized(lin, entry)
    fresh(torch.randn(4, 8) * 100)
    assert torch.equal(fresh(x), wrapper(x))


def test_scale_approximation_uses_mult_and_shift():
    torch.manual_seed(7)
    lin = nn.Linear(6, 3)
    rin, rout = {"min": -1.3, "max": 1.1}, {"min": -0.9, "max": 1.7}
    wrapper = _quantized(lin, {"inputs": {0: rin}, "output": rout}, scale_approx_mult_bits=8)
    for t in (wrapper.input_scale, wrapper.output_scale, wrapper.requant_scale):
        mult = float(t) * 2 ** np.floor(np.log2(255 / float(t)))
        assert mult == int(mult) and mult < 256  # representable as an 8-bit multiplier and a shift
    exact = _quantized(lin, {"inputs": {0: rin}, "output": rout})
    assert float(wrapper.input_scale) != float(exact.input_scale)


def test_saturation_is_counted_at_the_output():
    wrapper = _quantized(nn.Tanh(), {"output": {"min": -0.5, "max": 0.5}})
    wrapper.reset_tracking(True)
    wrapper(torch.tensor([-3.0, -0.1, 0.0, 0.2, 3.0]))  # tanh(+-3) = +-0.995 > 0.5: 2 of 5 clamped
    assert wrapper.saturation_pct() == pytest.approx(40.0)


def test_half_range_zeroes_negative_outputs():
    fake = _quantized(nn.Tanh(), {"output": {"min": -1.0, "max": 1.0}}, clip_half_range=True)
    assert fake._clip["output"] == (0.0, 1.0)
    assert torch.equal(fake(torch.tensor([-1.0, -0.2])), torch.zeros(2))


def test_float_wrapper_runs_in_half_and_returns_input_dtype():
    torch.manual_seed(8)
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    wrapper = FloatWrapper(lin, "fp16")
    y = wrapper(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, copy.deepcopy(lin).half()(x.half()).float())
    assert lin.weight.dtype == torch.float32  # the original is untouched
    emb = FloatWrapper(nn.Embedding(5, 2), "bf16")
    assert emb(torch.tensor([1, 2])).dtype == torch.float32


def test_fake_wrapper_rejects_non_tensor_outputs():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    wrapper = FakeQuantWrapper(Pair(), Grid(one, zero, -128, 127))
    with pytest.raises(QuantizationError, match="none: true"):
        wrapper(torch.ones(2))


def test_too_wide_for_exact_simulation_is_an_error():
    # 16-bit unsigned codes up to 65535 on both sides: 65535^2 * (2^21 + 256) > 2^53.
    lin = nn.Linear(2**21 + 256, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.5)
    entry = {"inputs": {0: {"min": 0.0, "max": 1.0}}, "output": {"min": 0.0, "max": 1.0}}
    kwargs = {"bits_activations": 16, "bits_parameters": 16, "mode": "asymmetric_unsigned"}
    with pytest.raises(QuantizationError, match="exact float64"):
        _quantized(lin, entry, **kwargs)
    _quantized(nn.Linear(2**20, 1, bias=False), entry, **kwargs)  # half as wide is fine


def test_wrappers_are_deterministic_and_survive_deepcopy():
    torch.manual_seed(9)
    lin = nn.Linear(16, 8)
    entry = {"inputs": {0: {"min": -2.0, "max": 2.0}}, "output": {"min": -1.0, "max": 1.0}}
    wrapper = _quantized(lin, entry, mode="asymmetric_signed", per_channel_wts=True)
    x = torch.randn(4, 16)
    assert torch.equal(wrapper(x), copy.deepcopy(wrapper)(x))
    assert torch.equal(wrapper(x), _quantized(lin, entry, mode="asymmetric_signed", per_channel_wts=True)(x))


def test_float_wrapped_tied_weights_stay_tied_and_count_once() -> None:
    from compress.quant import PostTrainLinearQuantizer
    from compress.utils import weight_bytes

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Embedding(50, 8)
            self.decoder = nn.Linear(8, 50)
            self.decoder.weight = self.encoder.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x))

    model = Tied()
    rules = [{"match": "encoder|decoder", "fp16": True}]
    q = PostTrainLinearQuantizer(model, {}, overrides=rules).prepare_model()
    assert q.encoder.wrapped.weight is q.decoder.wrapped.weight
    assert q.encoder.wrapped.weight.dtype == torch.float16
    assert model.encoder.weight.dtype == torch.float32, "the user's model is never modified"
    # 400 fp16 weights stored once (800 B) + the decoder's 50 fp16 biases (100 B)
    assert weight_bytes(q) == 50 * 8 * 2 + 50 * 2


@pytest.mark.parametrize("mode", ["symmetric", "asymmetric_signed", "asymmetric_unsigned"])
@pytest.mark.parametrize("bits", [3, 8])
def test_fake_quant_equals_reference_with_and_without_c_kernels(mode, bits, kernels_backend):
    """The C pass (kernels_backend "c") and the PyTorch ops ("torch") both give the reference's bits."""
    entry = {"inputs": {0: {"min": -2.0, "max": 2.0}}, "output": {"min": -0.7, "max": 2.3}}
    wrapper = _quantized(nn.LeakyReLU(0.1), entry, mode=mode, bits_activations=bits)
    scale, zp, qmin, qmax = ref_grid(-0.7, 2.3, bits, mode)
    gen = torch.Generator().manual_seed(bits)
    ties = torch.tensor([k + 0.5 for k in range(-4, 5)], dtype=torch.float64) / scale  # x * scale lands on .5
    x = torch.cat([torch.randn(301, generator=gen) * 3, ties.float(), torch.tensor([0.0, -0.0, 1e30, -1e30])])
    for data in (x, x.reshape(2, -1)[:, ::3]):  # contiguous and strided
        y = F.leaky_relu(data, 0.1).double().numpy()
        expected = (ref_codes(y, scale, zp, qmin, qmax) + zp) / scale
        assert torch.equal(wrapper(data), torch.from_numpy(expected.astype(np.float32)))
    ran_c = cpaths.fake_quant_values(wrapper, F.leaky_relu(x, 0.1)) is not None
    assert ran_c == (kernels_backend == "c")


@pytest.mark.parametrize("per_row", [False, True])
def test_embedding_lookup_equals_reference_with_and_without_c_kernels(per_row, kernels_backend):
    torch.manual_seed(9)
    emb = nn.Embedding(40, 6)
    overrides = [{"match": "0", "per_channel_wts": True}] if per_row else []
    wrapper = _quantized(emb, {}, mode="asymmetric_signed", per_channel_wts=True, overrides=overrides)
    w_int, s = ref_weight(emb.weight.detach().numpy().astype(np.float64), 8, "asymmetric_signed", per_row)
    idx = torch.randint(0, 40, (5, 2))
    for data in (idx, idx.t(), idx[0]):  # strided and 1-D indices too
        expected = torch.from_numpy((w_int / s[:, None]).astype(np.float32))[data]
        assert torch.equal(wrapper(data), expected)
    assert (cpaths.embedding_values(wrapper, idx) is not None) == (kernels_backend == "c")
    with pytest.raises(IndexError):  # out of range: PyTorch's own error, from either path
        wrapper(torch.tensor([3, 40]))
