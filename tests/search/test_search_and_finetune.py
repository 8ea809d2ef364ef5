"""A search experiment cannot also fine-tune (each trial would train): a schedule error before the run."""

from __future__ import annotations

from compress.schedule_checks import search_problems


def test_a_search_with_a_finetune_block_is_refused() -> None:
    exps = [{"name": "s", "search": {"target": {"max_delta_pct": 1}}, "finetune": {"steps": 10}}]
    problems = search_problems({"experiments": exps})
    assert [p.path for p in problems] == [("experiments", 0, "search")]
    assert "best.yaml" in problems[0].message
