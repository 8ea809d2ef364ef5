"""Declarative statistics edits: set, clip, collapse, selection, errors, immutability."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from compress.errors import StatsError
from compress.stats import EDIT_RULE_SCHEMA, Stats, apply_edits


def _rec(lo: float, hi: float, alo: float, ahi: float) -> dict:
    return {"min": lo, "max": hi, "avg_min": alo, "avg_max": ahi, "mean": 0.5, "std": 1.0, "b": 0.8}


@pytest.fixture
def stats() -> Stats:
    return Stats(
        {
            "cells.0.eltwiseadd_gate": {
                "inputs": {0: _rec(-3, 2, -1, 1), 1: _rec(-4, 4, -2, 2)},
                "output": _rec(-9, 8, -5, 4),
            },
            "cells.0.act_i": {"inputs": {0: _rec(-9, 8, -5, 4)}, "output": _rec(0, 1, 0.1, 0.9)},
            "cells.0.act_h": {"inputs": {0: _rec(7, 9, 7.5, 8.5)}, "output": _rec(0.9, 1, 0.95, 0.99)},
        }
    )


def test_clip_intersects_ranges_and_logs_each_tensor(stats: Stats) -> None:
    new, log = apply_edits(stats, [{"match": r"cells\.\d+\.act_i", "tensor": "inputs", "clip": [-6, 6]}])
    # [-9, 8] ∩ [-6, 6] = [-6, 6]; avg [-5, 4] is inside and unchanged
    assert {k: new["cells.0.act_i"]["inputs"][0][k] for k in ("min", "max", "avg_min", "avg_max")} == {
        "min": -6.0,
        "max": 6.0,
        "avg_min": -5,
        "avg_max": 4,
    }
    assert new["cells.0.act_i"]["output"] == stats["cells.0.act_i"]["output"]  # tensor: inputs only
    assert log == ["cells.0.act_i input 0: min -9 -> -6, max 8 -> 6 (rule 0)"]


def test_clip_range_entirely_outside_collapses_onto_the_bound(stats: Stats) -> None:
    new, log = apply_edits(stats, [{"match": ".*act_h", "tensor": "inputs", "clip": [-6, 6]}])
    rec = new["cells.0.act_h"]["inputs"][0]
    assert (rec["min"], rec["max"], rec["avg_min"], rec["avg_max"]) == (6.0, 6.0, 6.0, 6.0)
    assert log == ["cells.0.act_h input 0: min 7 -> 6, max 9 -> 6, avg_min 7.5 -> 6, avg_max 8.5 -> 6 (rule 0)"]


def test_clip_leaves_mean_std_b_alone(stats: Stats) -> None:
    new, _ = apply_edits(stats, [{"match": ".*", "clip": [-1, 1]}])
    rec = new["cells.0.eltwiseadd_gate"]["output"]
    assert (rec["mean"], rec["std"], rec["b"]) == (0.5, 1.0, 0.8)


def test_set_writes_values_on_all_tensors_by_default(stats: Stats) -> None:
    new, log = apply_edits(stats, [{"match": "cells.0.eltwiseadd_gate", "set": {"min": -6, "max": 6}}])
    entry = new["cells.0.eltwiseadd_gate"]
    assert [(r["min"], r["max"]) for r in (entry["inputs"][0], entry["inputs"][1], entry["output"])] == [(-6, 6)] * 3
    assert len(log) == 3 and log[2] == "cells.0.eltwiseadd_gate output: min -9 -> -6, max 8 -> 6 (rule 0)"


def test_rules_apply_in_order(stats: Stats) -> None:
    rules = [{"match": ".*act_i", "tensor": "output", "set": {"max": 0.5}}, {"match": ".*act_i", "clip": [0.2, 0.4]}]
    new, log = apply_edits(stats, rules)
    rec = new["cells.0.act_i"]["output"]
    assert (rec["min"], rec["max"], rec["avg_min"], rec["avg_max"]) == (0.2, 0.4, 0.2, 0.4)
    assert log[0] == "cells.0.act_i output: max 1 -> 0.5 (rule 0)"


def test_input_is_not_mutated_and_header_records_the_rules(stats: Stats) -> None:
    before = copy.deepcopy(stats.to_dict())
    rules = [{"match": ".*", "clip": [-1, 1]}]
    new, _ = apply_edits(stats, rules)
    assert stats.to_dict() == before and "edits" not in stats.header
    assert new.header["edits"] == rules
    assert apply_edits(new, rules)[0].header["edits"] == rules * 2


def test_matching_without_change_is_logged_once(stats: Stats) -> None:
    _, log = apply_edits(stats, [{"match": ".*act_i", "tensor": "output", "clip": [-6, 6]}])
    assert log == ["rule 0 (match '.*act_i'): 1 tensor(s) matched, none changed"]


def test_rule_matching_nothing_is_an_error(stats: Stats) -> None:
    with pytest.raises(StatsError, match=r"rule 1 \(match 'act_i'.*no module name fully matches"):
        apply_edits(stats, [{"match": ".*", "clip": [-9, 9]}, {"match": "act_i", "clip": [-6, 6]}])


def test_rule_matching_modules_without_the_tensor_is_an_error() -> None:
    only_output = Stats({"fc": {"output": _rec(0, 1, 0, 1)}})
    with pytest.raises(StatsError, match="have no 'inputs' statistics"):
        apply_edits(only_output, [{"match": "fc", "tensor": "inputs", "clip": [0, 1]}])


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"match": "x", "clip": [-6, 6], "set": {"min": 1}}, "malformed"),
        ({"match": "x"}, "malformed"),
        ({"match": "x", "clip": [6, -6]}, "lo <= hi"),
        ({"match": "x", "set": {"minimum": 1}}, "malformed"),
        ({"match": "x", "tensor": "weights", "clip": [0, 1]}, "malformed"),
        ({"match": "(", "clip": [0, 1]}, "not a valid regex"),
        ({"match": "x", "set": {"min": float("nan")}}, "finite"),
    ],
)
def test_malformed_rules(stats: Stats, rule: dict, message: str) -> None:
    with pytest.raises(StatsError, match=message):
        apply_edits(stats, [rule])


def test_set_leaving_min_above_max_is_an_error(stats: Stats) -> None:
    with pytest.raises(StatsError, match="leaves cells.0.act_i output with min 2.0 above max 1"):
        apply_edits(stats, [{"match": ".*act_i", "tensor": "output", "set": {"min": 2}}])


def test_schema_is_strict_json_schema() -> None:
    validator = jsonschema.Draft202012Validator(EDIT_RULE_SCHEMA)
    assert validator.is_valid({"match": "a", "tensor": "output", "set": {"min": -6, "avg_max": 3}})
    assert validator.is_valid({"match": "a", "clip": [-6, 6]})
    assert not validator.is_valid({"match": "a", "clip": [-6, 6], "extra": 1})
    assert not validator.is_valid({"match": "a", "clip": [-6]})
