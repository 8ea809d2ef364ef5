"""CPU/CUDA parity: the same scales and bit-identical outputs on both devices (needs a GPU)."""

from __future__ import annotations

import pytest
import torch
from quant_helpers import collect_stats, converted_lm, tokens

from compress.quant import PostTrainLinearQuantizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("variant", [{}, {"mode": "asymmetric_signed", "per_channel_wts": True, "clip_acts": "avg"}])
def test_quantized_lstm_is_bit_identical_on_cpu_and_cuda(variant):
    model = converted_lm(tied=True, width=64, vocab=300)
    x = tokens(vocab=300, steps=20, batch=8)
    stats = collect_stats(model, lambda m: m(x))
    qmodel = PostTrainLinearQuantizer(model, stats, bits_activations=16, bits_parameters=16, bits_accum=48, **variant)
    qmodel = qmodel.prepare_model().eval()
    with torch.no_grad():
        cpu = qmodel(x)
        cuda_model = qmodel.to("cuda")
        assert cuda_model.encoder.qweight is cuda_model.decoder.qweight
        gpu = cuda_model(x.to("cuda")).cpu()
    assert torch.equal(cpu, gpu)
