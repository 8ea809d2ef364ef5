"""Which modules are observed, how inputs are indexed, and the collector's error paths."""

from __future__ import annotations

import pytest
import torch
from stats_toys import Echo, EchoModel, PairSum, ScoringModel, TinyRNN, random_batches
from torch import nn

from compress.errors import StatsError
from compress.stats import StatsCollector, collect_stats, observed_modules


class Wrapper(nn.Module):
    _compress_wrapper = True

    def __init__(self) -> None:
        super().__init__()
        self.wrapped_module = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wrapped_module(x)


def test_observes_leaves_and_wrappers_but_not_containers_identity_or_wrapped() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Identity()), Wrapper(), nn.ReLU())
    assert list(observed_modules(model)) == ["0.0", "1", "2"]


def test_rnn_modules_aggregate_every_time_step() -> None:
    x = random_batches(1, t=5, b=2)[0]
    stats = collect_stats(TinyRNN(), [x])
    # fc_x runs once per step on [B=2, F=3]: 5 steps -> 30 values, 10 samples
    rec = stats["cell.fc_x"]["inputs"][0]
    assert (rec["total_numel"], rec["samples"], rec["shape"]) == (30, 10, "(2, 3)")
    assert rec["min"] == float(x.min()) and rec["max"] == float(x.max())
    assert rec["mean"] == pytest.approx(float(x.double().mean()), abs=1e-15)
    assert rec["std"] == pytest.approx(float(x.double().std(unbiased=False)), abs=1e-15)
    mins = x.double().amin(dim=2)  # per (step, batch) sample
    assert rec["avg_min"] == pytest.approx(float(mins.mean()), abs=1e-15)


def test_modules_of_an_rnn_and_both_eltwise_inputs() -> None:
    stats = collect_stats(TinyRNN(), random_batches(2))
    assert sorted(stats) == ["cell.act", "cell.add", "cell.fc_h", "cell.fc_x", "cell.mult"]
    assert sorted(stats["cell.add"]["inputs"]) == [0, 1]
    assert sorted(stats["cell.mult"]["inputs"]) == [0, 1]


def test_never_ran_is_listed_without_sentinel_values() -> None:
    stats = collect_stats(TinyRNN(), random_batches(1))
    assert stats.never_ran == ["unused"]
    assert "unused" not in stats and stats.missing(["unused", "cell.act"]) == ["unused"]
    for entry in stats.values():
        for rec in [*entry.get("inputs", {}).values(), entry["output"]]:
            assert -1e30 < rec["min"] <= rec["max"] < 1e30


def test_tuple_inputs_are_flattened_and_non_tensors_skipped() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = PairSum()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pair((x, 10 * x), 3, None)

    entry = collect_stats(Model(), [torch.tensor([[1.0, 2.0]])])["pair"]
    assert sorted(entry["inputs"]) == [0, 1]
    assert (entry["inputs"][0]["max"], entry["inputs"][1]["max"], entry["output"]["max"]) == (2.0, 20.0, 22.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_activation_names_the_module_and_batch(bad: float) -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    batches = [torch.ones(1, 2), torch.tensor([[1.0, bad]])]
    with pytest.raises(StatsError, match=r"Module '0' input 0 contains NaN or Inf \(calibration batch 1\)"):
        collect_stats(model, batches)


def test_non_finite_output_names_the_module() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with torch.no_grad():
        model[0].bias[1] = float("nan")
    with pytest.raises(StatsError, match=r"Module '0' output contains NaN or Inf \(calibration batch 0\)"):
        collect_stats(model, [torch.ones(1, 2)])


def test_one_shot_iterator_is_refused() -> None:
    with pytest.raises(StatsError, match="read twice"):
        collect_stats(EchoModel(), iter([torch.ones(1, 2)]))


def test_callable_batches_are_read_once_per_pass() -> None:
    calls = []

    def batches():
        calls.append(1)
        return iter([torch.ones(2, 2)])

    assert collect_stats(EchoModel(), batches)["echo"]["output"]["total_numel"] == 4
    assert len(calls) == 2


def test_second_pass_with_different_data_is_an_error() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(StatsError, match="second calibration pass did not see the same data"):
        collect_stats(EchoModel(), lambda: iter([torch.randn(4, 4, generator=g)]))


def test_second_pass_with_different_amount_of_data_is_an_error() -> None:
    sizes = iter([3, 2])
    with pytest.raises(StatsError, match="6 values in pass 1, 4 in pass 2"):
        collect_stats(EchoModel(), lambda: [torch.ones(next(sizes), 2)])


def test_model_mode_is_restored_and_eval_used_during_collection() -> None:
    model = nn.Sequential(nn.Dropout(0.5), Echo()).train()
    stats = collect_stats(model, [torch.ones(8, 8)])
    assert model.training
    assert stats["1"]["output"]["min"] == 1.0  # dropout off: nothing zeroed or scaled


def test_default_forward_uses_score_batch_with_fresh_state_each_pass() -> None:
    model = ScoringModel()
    collect_stats(model, random_batches(3))
    assert model.states_seen == [None, 1, 2, None, 1, 2]


def test_collector_passes_remove_hooks() -> None:
    model = EchoModel()
    collector = StatsCollector(model)
    for _ in collector.passes():
        model(torch.ones(1, 2))
    assert not model.echo._forward_hooks
    model(torch.full((1, 2), 100.0))  # after collection: not observed
    assert collector.stats()["echo"]["output"]["max"] == 1.0


def test_empty_tensors_are_ignored_and_bad_bins_rejected() -> None:
    stats = collect_stats(EchoModel(), [torch.ones(0, 3), torch.ones(1, 3)])
    assert stats["echo"]["output"]["total_numel"] == 3
    with pytest.raises(StatsError, match="histogram_bins"):
        collect_stats(EchoModel(), [torch.ones(1, 3)], histogram_bins=0)


def test_stats_items_are_copies() -> None:
    stats = collect_stats(EchoModel(), [torch.ones(1, 2)])
    stats["echo"]["output"]["min"] = -100.0
    assert stats["echo"]["output"]["min"] == 1.0
