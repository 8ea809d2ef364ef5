"""The registered stats sources: schemas, collect, generate and file."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from stats_toys import ListData, ScoringModel, random_batches

from compress.errors import StatsError
from compress.registry import STATS_SOURCES
from compress.stats import StatsContext, collect_stats, model_fingerprint


def _ctx(model: ScoringModel, data: ListData | None = None, base: Path = Path("."), seed: int = 7) -> StatsContext:
    return StatsContext(model=model, data=data, device="cpu", seed=seed, progress=False, base_dir=base)


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("collect", [{}, {"batches": 3}, {"histogram_bins": 64}], [{"batches": 0}, {"batch": 3}, {"batches": "3"}]),
        ("generate", [{}, {"batch_size": 2, "steps": 5}], [{"steps": 0}, {"seed": 1}, {"batch_size": 1.5}]),
        ("file", [{"path": "s.yaml"}, {"path": "s.yaml", "force": True}], [{}, {"path": ""}, {"path": "a", "x": 1}]),
    ],
)
def test_registered_with_strict_schemas(name: str, good: list[dict], bad: list[dict]) -> None:
    schema = STATS_SOURCES.get(name).schema
    assert schema["additionalProperties"] is False
    validator = jsonschema.Draft202012Validator(schema)
    assert all(validator.is_valid(args) for args in good)
    assert not any(validator.is_valid(args) for args in bad)


def test_collect_uses_the_first_n_calibration_batches() -> None:
    batches = random_batches(5)
    model = ScoringModel()
    stats = STATS_SOURCES.get("collect").obj(_ctx(model, ListData(batches)), batches=2)
    direct = collect_stats(ScoringModel(), batches[:2])
    assert stats.to_dict() == direct.to_dict()
    head = stats.header
    assert (head["source"], head["args"], head["seed"]) == ("collect", {"batches": 2}, 7)
    assert head["fingerprint"] == model_fingerprint(model)
    assert model.states_seen == [None, 1, None, 1]  # state carried within a pass, fresh per pass


def test_collect_all_batches_by_default_with_histograms() -> None:
    stats = STATS_SOURCES.get("collect").obj(_ctx(ScoringModel(), ListData(random_batches(3))), histogram_bins=5)
    assert stats.header["args"] == {"batches": 3, "histogram_bins": 5}
    assert len(stats["head"]["output"]["histogram"]["counts"]) == 5


def test_collect_more_batches_than_available_is_an_error() -> None:
    with pytest.raises(StatsError, match="asks for 9 calibration batches but the dataset has 3"):
        STATS_SOURCES.get("collect").obj(_ctx(ScoringModel(), ListData(random_batches(3))), batches=9)


def test_generate_is_seeded_and_replayed() -> None:
    gen = STATS_SOURCES.get("generate").obj
    a = gen(_ctx(ScoringModel(), seed=3), batch_size=4, steps=6)
    b = gen(_ctx(ScoringModel(), seed=3), batch_size=4, steps=6)
    c = gen(_ctx(ScoringModel(), seed=4), batch_size=4, steps=6)
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    rec = a["rnn.cell.fc_x"]["inputs"][0]
    assert (rec["total_numel"], rec["shape"]) == (6 * 4 * 3, "(4, 3)")
    assert a.header["args"] == {"batch_size": 4, "steps": 6} and a.header["seed"] == 3


def test_generate_needs_a_sampling_model() -> None:
    from torch import nn

    with pytest.raises(StatsError, match="needs a model with sample_for_calibration"):
        STATS_SOURCES.get("generate").obj(_ctx(nn.Linear(1, 1)))


def test_file_source_resolves_relative_paths_and_checks_the_model(tmp_path: Path) -> None:
    model = ScoringModel()
    saved = collect_stats(model, random_batches(2))
    saved.save(tmp_path / "stats" / "s.yaml")
    load = STATS_SOURCES.get("file").obj
    assert load(_ctx(model, base=tmp_path), path="stats/s.yaml").to_dict() == saved.to_dict()
    other = ScoringModel(size=4)
    with pytest.raises(StatsError, match="another model"):
        load(_ctx(other, base=tmp_path), path="stats/s.yaml")
    assert len(load(_ctx(other, base=tmp_path), path="stats/s.yaml", force=True)) == len(saved)
