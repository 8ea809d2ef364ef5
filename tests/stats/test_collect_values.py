"""Every statistic checked against numbers worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from stats_toys import EchoModel

from compress.stats import collect_stats


def _output(batches: list[torch.Tensor], **kwargs) -> dict:
    return collect_stats(EchoModel(), batches, **kwargs)["echo"]["output"]


# Two batches of unequal size: 2 samples, then 1 sample.
#   batch 1: [[1, 2, 3], [4, 5, 6]]   batch 2: [[-3, 0, 9]]
#   all 9 values: 1 2 3 4 5 6 -3 0 9, sum 27 -> mean 3
#   per-sample mins 1, 4, -3 -> avg_min = (1 + 4 - 3) / 3 = 2/3
#     (weighting batches equally, as the old tool did before its bug, would give ((1+4)/2 - 3)/2 = -0.25)
#   per-sample maxs 3, 6, 9 -> avg_max = 18 / 3 = 6
#   deviations from 3: -2 -1 0 1 2 3 -6 -3 6; squares 4+1+0+1+4+9+36+9+36 = 100 -> std = sqrt(100/9) = 10/3
#   |deviations| 2+1+0+1+2+3+6+3+6 = 24 -> b = 24/9 = 8/3
BATCHES = [torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), torch.tensor([[-3.0, 0.0, 9.0]])]


def test_every_statistic_over_unequal_batches() -> None:
    rec = _output(BATCHES)
    assert rec["min"] == -3.0 and rec["max"] == 9.0
    assert rec["avg_min"] == pytest.approx(2 / 3, abs=1e-15)
    assert rec["avg_max"] == pytest.approx(6.0, abs=1e-15)
    assert rec["mean"] == pytest.approx(3.0, abs=1e-15)
    assert rec["std"] == pytest.approx(10 / 3, abs=1e-15)
    assert rec["b"] == pytest.approx(8 / 3, abs=1e-15)
    assert rec["shape"] == "(2, 3)"  # the first shape seen
    assert rec["total_numel"] == 9 and rec["samples"] == 3


def test_input_and_output_records_agree_for_identity_like_leaf() -> None:
    entry = collect_stats(EchoModel(), BATCHES)["echo"]
    assert entry["inputs"] == {0: entry["output"]}


def test_batch_order_does_not_change_sample_weighting() -> None:
    forward, backward = _output(BATCHES), _output(BATCHES[::-1])
    for key in ("min", "max", "avg_min", "avg_max", "mean", "std", "b", "total_numel", "samples"):
        assert backward[key] == pytest.approx(forward[key], abs=1e-14), key
    assert backward["shape"] == "(1, 3)"


def test_integer_tensor_recorded_as_float() -> None:
    # Token ids [[0, 2], [4, 6]]: mean 3, per-sample mins 0, 4 -> avg_min 2; maxs 2, 6 -> avg_max 4
    # deviations -3 -1 1 3: squares 20/4 = 5 -> std sqrt(5); |dev| 8/4 = 2 -> b 2
    rec = _output([torch.tensor([[0, 2], [4, 6]])])
    assert (rec["min"], rec["max"], rec["avg_min"], rec["avg_max"]) == (0.0, 6.0, 2.0, 4.0)
    assert rec["std"] == pytest.approx(math.sqrt(5), abs=1e-15) and rec["b"] == 2.0
    assert all(isinstance(rec[k], float) for k in ("min", "max", "mean", "std", "b"))


def test_samples_are_dim0_of_higher_rank_tensors() -> None:
    # [T=2, B=1, F=2]: samples are the 2 time steps: [1, 5] and [-1, 3]
    # avg_min = (1 - 1)/2 = 0, avg_max = (5 + 3)/2 = 4; mean (1+5-1+3)/4 = 2
    rec = _output([torch.tensor([[[1.0, 5.0]], [[-1.0, 3.0]]])])
    assert (rec["avg_min"], rec["avg_max"], rec["mean"], rec["samples"]) == (0.0, 4.0, 2.0, 2)


def test_single_value_samples_count_the_whole_tensor_as_one_sample() -> None:
    # [[1], [5], [3]]: one value per sample, so (as in the old tool) the tensor is one sample:
    # avg_min = 1, avg_max = 5 (per-sample would give avg_min = avg_max = mean = 3)
    rec = _output([torch.tensor([[1.0], [5.0], [3.0]])])
    assert (rec["avg_min"], rec["avg_max"], rec["samples"]) == (1.0, 5.0, 1)


def test_std_and_b_are_exact_for_large_offsets() -> None:
    # 1e8 + {-1, +1} in float64: E[x^2] - E[x]^2 would lose every digit; Chan's update keeps std = 1.
    rec = _output([torch.tensor([[1e8 - 1, 1e8 + 1]], dtype=torch.float64)] * 3)
    assert rec["std"] == 1.0 and rec["b"] == 1.0 and rec["mean"] == 1e8


def test_histogram_counts_over_first_pass_range() -> None:
    # range [-3, 9] in 4 bins of width 3: [-3,0) gets -3; [0,3) gets 0 1 2; [3,6) gets 3 4 5; [6,9] gets 6 9
    hist = _output(BATCHES, histogram_bins=4)["histogram"]
    assert hist == {"lo": -3.0, "hi": 9.0, "counts": [1, 3, 3, 2]}


def test_histogram_of_constant_tensor_puts_everything_in_bin_zero() -> None:
    hist = _output([torch.full((2, 2), 7.0)], histogram_bins=3)["histogram"]
    assert hist == {"lo": 7.0, "hi": 7.0, "counts": [4, 0, 0]}


def test_tensors_larger_than_one_chunk_match_direct_float64() -> None:
    # 3 x 50_000 values: several 65_536-value chunks, combined with the parallel variance formula
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50_000, generator=g) * 3 + 100
    rec = _output([x])
    d = x.double()
    assert rec["mean"] == pytest.approx(float(d.mean()), rel=1e-14)
    assert rec["std"] == pytest.approx(float(d.std(unbiased=False)), rel=1e-12)
    assert rec["b"] == pytest.approx(float((d - d.mean()).abs().mean()), rel=1e-12)
    assert rec["avg_min"] == pytest.approx(float(d.amin(dim=1).mean()), rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.bool])
def test_other_dtypes_and_inputs_left_untouched(dtype: torch.dtype) -> None:
    # [[0, 1], [1, 1]] in every dtype: min 0, max 1, avg_min (0 + 1)/2 = 0.5, mean 0.75, b 0.375
    x = torch.tensor([[0, 1], [1, 1]]).to(dtype)
    before = x.clone()
    rec = _output([x])
    assert (rec["min"], rec["max"], rec["avg_min"], rec["mean"], rec["b"]) == (0.0, 1.0, 0.5, 0.75, 0.375)
    assert torch.equal(x, before)  # the float64 chunks are copies, never the activation itself
