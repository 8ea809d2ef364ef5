"""The placement rule and the one-process team (no process group without torchrun's environment)."""

from __future__ import annotations

import pytest
import torch

from compress.distributed import SoloTeam, Work, in_distributed_env, join, place
from compress.stats.merge import merge_first_pass, merge_second_pass


def _units(n: int, shardable: bool = True) -> list[Work]:
    return [Work(f"u{i}", shardable=lambda: shardable) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "size", "owners"),
    [
        (4, 2, [0, 1, 0, 1]),  # full rounds: spread
        (3, 2, [0, 1, None]),  # the last partial round: sharded
        (1, 4, [None]),
        (5, 3, [0, 1, 2, None, None]),
    ],
)
def test_full_rounds_are_spread_and_the_rest_sharded(n: int, size: int, owners: list[int | None]) -> None:
    assert [p.owner for p in place(_units(n), size)] == owners


def test_units_that_cannot_be_sharded_are_spread_and_exports_run_on_the_writer() -> None:
    assert [p.owner for p in place(_units(3, shardable=False), 2)] == [0, 1, 0]
    units = [Work("a"), Work("b"), Work("export", pinned_to_writer=True)]
    assert [p.owner for p in place(units, 2)] == [1, 0, 0]


def test_the_shardable_probe_runs_only_for_units_that_would_be_sharded() -> None:
    asked = []
    units = [Work(f"u{i}", shardable=lambda i=i: asked.append(i) or True) for i in range(3)]
    place(units, 2)
    place(units, 1)
    assert asked == [2]


def test_forced_modes() -> None:
    assert [p.owner for p in place(_units(3), 2, "spread")] == [0, 1, 0]
    assert [p.owner for p in place(_units(2), 2, "shard")] == [None, None]


def test_without_torchrun_nothing_distributed_is_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    team = join()
    assert isinstance(team, SoloTeam) and team.writer and team.size == 1
    assert not torch.distributed.is_initialized()
    assert not in_distributed_env({"WORLD_SIZE": "1", "RANK": "0"})  # torchrun with one process: solo


def test_merged_passes_equal_one_pass_over_all_the_data() -> None:
    from compress.stats.accumulate import TensorAccumulator

    xs = [torch.randn(4, 7, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(5)]
    whole, parts = TensorAccumulator(8), [TensorAccumulator(8), TensorAccumulator(8)]
    for i, x in enumerate(xs):
        whole.update_first(x)
        parts[i % 2].update_first(x)
    merged = merge_first_pass([{"s": p.first_state()} for p in parts])["s"]
    for acc in (whole, *parts):
        if acc is not whole:
            acc.load_first(merged)
        acc.start_second_pass()
    for i, x in enumerate(xs):
        whole.update_second(x)
        parts[i % 2].update_second(x)
    sums = merge_second_pass([{"s": p.second_state()} for p in parts])["s"]
    for acc in parts:
        acc.load_second(sums)
        acc.finish_second_pass("m", "output")
    whole.finish_second_pass("m", "output")
    a, b = whole.record(), parts[1].record()
    assert a["min"] == b["min"] and a["max"] == b["max"] and a["histogram"] == b["histogram"]
    for key in ("avg_min", "avg_max", "mean", "std", "b"):
        assert abs(a[key] - b[key]) <= 1e-12 * (abs(a[key]) + a["std"]), key
