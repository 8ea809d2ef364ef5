"""merge(a, b) against one pass over the concatenated data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stats_toys import EchoModel, TinyRNN, random_batches
from torch import nn

from compress.errors import StatsError
from compress.stats import Stats, collect_stats, load_stats, merge

EXACT = ("min", "max", "avg_min", "avg_max", "mean", "std", "total_numel", "samples")


def _records(stats: Stats):
    for name, entry in stats.items():
        for i, rec in entry.get("inputs", {}).items():
            yield f"{name} input {i}", rec
        yield f"{name} output", entry["output"]


def test_merge_of_two_halves_equals_one_pass() -> None:
    batches = random_batches(6, t=3, b=3)  # batch i has mean ~i and scale 1+i: the halves differ a lot
    whole = collect_stats(TinyRNN(), batches)
    merged = merge(collect_stats(TinyRNN(), batches[:2]), collect_stats(TinyRNN(), batches[2:]))
    assert list(merged) == list(whole) and merged.never_ran == whole.never_ran == ["unused"]
    for (label, got), (_, want) in zip(_records(merged), _records(whole), strict=True):
        for key in EXACT:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), f"{label} {key}"
        assert got["shape"] == want["shape"]


def test_merged_b_stays_within_the_documented_bound() -> None:
    batches = random_batches(6, t=3, b=3)
    a, b = collect_stats(TinyRNN(), batches[:2]), collect_stats(TinyRNN(), batches[2:])
    whole, merged = collect_stats(TinyRNN(), batches), merge(a, b)
    for (label, got), (_, want), (_, ra), (_, rb) in zip(
        _records(merged), _records(whole), _records(a), _records(b), strict=True
    ):
        n, m = want["total_numel"], want["mean"]
        bound = (ra["total_numel"] * abs(ra["mean"] - m) + rb["total_numel"] * abs(rb["mean"] - m)) / n
        assert abs(got["b"] - want["b"]) <= bound + 1e-12, label


def test_merged_b_is_exact_when_the_parts_have_the_same_mean() -> None:
    x = random_batches(1, t=5, b=4)[0]
    mirrored = 2 * x.double().mean() - x.double()  # same mean, other values
    merged = merge(collect_stats(EchoModel(), [x.double()]), collect_stats(EchoModel(), [mirrored]))
    whole = collect_stats(EchoModel(), [x.double(), mirrored])
    assert merged["echo"]["output"]["b"] == pytest.approx(whole["echo"]["output"]["b"], rel=1e-12)


def test_merge_of_separated_parts_by_hand() -> None:
    # a = [-2, -1], b = [1, 2]: merged mean 0; std sqrt((4+1+1+4)/4) = sqrt(2.5);
    # b: each part lies on one side of 0, so its share is n_i |m_i - 0| = 2 * 1.5 -> b = 6/4 = 1.5 (exact)
    # avg_min = (-2 + 1)/2 = -0.5, avg_max = (-1 + 2)/2 = 0.5
    a = collect_stats(EchoModel(), [torch.tensor([[-2.0, -1.0]])])
    b = collect_stats(EchoModel(), [torch.tensor([[1.0, 2.0]])])
    rec = merge(a, b)["echo"]["output"]
    assert (rec["min"], rec["max"], rec["avg_min"], rec["avg_max"], rec["mean"]) == (-2.0, 2.0, -0.5, 0.5, 0.0)
    assert rec["std"] == pytest.approx(2.5**0.5, rel=1e-15) and rec["b"] == 1.5
    assert (rec["total_numel"], rec["samples"]) == (4, 2)


def test_histograms_over_the_same_range_add_exactly() -> None:
    # both parts span [0, 4]; 4 bins of width 1: a = 0 1 4 -> [1,1,0,1]; b = 0 3 4 -> [1,0,0,2]
    xa, xb = torch.tensor([[0.0, 1.0, 4.0]]), torch.tensor([[0.0, 3.0, 4.0]])
    a = collect_stats(EchoModel(), [xa], histogram_bins=4)
    b = collect_stats(EchoModel(), [xb], histogram_bins=4)
    whole = collect_stats(EchoModel(), [xa, xb], histogram_bins=4)
    assert merge(a, b)["echo"]["output"]["histogram"] == whole["echo"]["output"]["histogram"]
    assert whole["echo"]["output"]["histogram"]["counts"] == [2, 1, 0, 3]


def test_histograms_over_different_ranges_are_rebinned_keeping_counts() -> None:
    # a = 0 2 2 over [0, 2] in 2 bins: [1, 2] at centres 0.5, 1.5; b = 2 6 over [2, 6]: [1, 1] at centres 3, 5
    # union [0, 6] in 2 bins of width 3: centres 0.5, 1.5 -> bin 0 (3 values); 3 and 5 -> bin 1 (2 values)
    a = collect_stats(EchoModel(), [torch.tensor([[0.0, 2.0, 2.0]])], histogram_bins=2)
    b = collect_stats(EchoModel(), [torch.tensor([[2.0, 6.0]])], histogram_bins=2)
    hist = merge(a, b)["echo"]["output"]["histogram"]
    assert hist == {"lo": 0.0, "hi": 6.0, "counts": [3, 2]}


def test_modules_in_one_part_only_and_never_ran() -> None:
    a = Stats({"x": {"output": {"min": 0.0, "max": 1.0}}}, never_ran=["y", "z"])
    b = Stats({"y": {"output": {"min": 2.0, "max": 3.0}}}, never_ran=["z"])
    merged = merge(a, b)
    assert merged.to_dict() == {"x": a["x"], "y": b["y"]}
    assert merged.never_ran == ["z"] and merged.header["source"] == "merge"


def test_merge_refuses_other_models_and_records_without_counts(tmp_path: Path) -> None:
    a = collect_stats(EchoModel(), [torch.ones(1, 2)])
    other = collect_stats(nn.Sequential(nn.Linear(2, 2)), [torch.ones(1, 2)])
    with pytest.raises(StatsError, match="different models"):
        merge(a, other)
    old = tmp_path / "old.yaml"
    old.write_text("echo:\n  output: {min: 0.0, max: 1.0, avg_min: 0.0, avg_max: 1.0, mean: 0.5, std: 0.5}\n")
    with pytest.raises(StatsError, match="echo output: the record lacks total_numel, samples"):
        merge(a, load_stats(old))
