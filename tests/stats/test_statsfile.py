"""Saving and loading statistics: round trip, the old tool's layout, malformed files, fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from stats_toys import TinyRNN, random_batches
from torch import nn

from compress.errors import StatsError
from compress.stats import Stats, collect_stats, load_stats, model_fingerprint


@pytest.fixture
def collected() -> Stats:
    return collect_stats(TinyRNN(), random_batches(3), histogram_bins=8)


def test_collected_saved_loaded_agree_exactly(collected: Stats, tmp_path: Path) -> None:
    loaded = load_stats(collected.save(tmp_path / "s.yaml"))
    assert loaded.to_dict() == collected.to_dict()
    assert loaded.header == collected.header
    assert loaded.never_ran == ["unused"]
    assert loaded.header["fingerprint"] == model_fingerprint(TinyRNN())


def test_file_layout_header_int_keys_and_no_sentinels(collected: Stats, tmp_path: Path) -> None:
    text = collected.save(tmp_path / "s.yaml").read_text()
    raw = yaml.safe_load(text)
    assert list(raw)[0] == "compress_stats"
    head = raw["compress_stats"]
    assert (head["version"], head["source"], head["never_ran"]) == (1, "python", ["unused"])
    assert list(raw["cell.add"]["inputs"]) == [0, 1]  # integer keys
    assert "unused" not in raw and "e+308" not in text and ".inf" not in text
    assert "counts: [" in text  # histogram counts on one line


def test_save_is_atomic_and_overwrites(collected: Stats, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("old")
    collected.save(path)
    assert load_stats(path).to_dict() == collected.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]


OLD_LAYOUT = """\
rnn.cells.0.eltwiseadd_gate:
  inputs:
    0:
      min: -7.25
      max: 6.0
      avg_min: -4.5
      avg_max: 3.75
      mean: -0.5
      std: 1.25
      b: 0.875
      shape: (10, 6000)
      total_numel: 13062000
    1: {min: -12.5, max: 12.0, avg_min: -4.0, avg_max: 3.5, mean: -0.25, std: 0.5, b: 0.5, shape: '(10, 6000)',
        total_numel: 13062000}
  output: {min: -15.5, max: 15.25, avg_min: -6.5, avg_max: 5.5, mean: -0.75, std: 1.5, b: 1.0, shape: '(10, 6000)',
    total_numel: 13062000}
encoder:
  output: {min: -1.0, max: 1.0, avg_min: -0.5, avg_max: 0.5, mean: 0.0, std: 0.25}
route:
  inputs:
    0: {min: 1.7976931348623157e+308, max: -1.7976931348623157e+308, avg_min: 0.0, avg_max: 0.0, shape: ''}
  output: {min: 1.7976931348623157e+308, max: -1.7976931348623157e+308, shape: ''}
"""


def test_old_layout_loads_with_sentinels_as_never_ran(tmp_path: Path) -> None:
    path = tmp_path / "acts_quantization_stats.yaml"
    path.write_text(OLD_LAYOUT)
    stats = load_stats(path)
    assert stats.header["fingerprint"] is None and stats.header["version"] == 0
    assert list(stats) == ["rnn.cells.0.eltwiseadd_gate", "encoder"]
    assert stats.never_ran == ["route"]
    gate = stats["rnn.cells.0.eltwiseadd_gate"]
    assert gate["inputs"][1]["min"] == -12.5 and gate["inputs"][0]["shape"] == "(10, 6000)"
    assert gate["output"]["b"] == 1.0 and stats["encoder"]["output"]["std"] == 0.25


def test_old_layout_check_model_compares_names(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("encoder:\n  output: {min: -1.0, max: 1.0}\n")
    stats = load_stats(path)
    model = nn.Module()
    model.encoder = nn.Embedding(3, 2)
    stats.check_model(model)
    with pytest.raises(StatsError, match=r"old.yaml.*1 module\(s\) this model does not have: encoder"):
        stats.check_model(nn.Linear(1, 1))
    stats.check_model(nn.Linear(1, 1), force=True)


def test_fingerprint_mismatch_is_an_error_unless_forced(collected: Stats, tmp_path: Path) -> None:
    loaded = load_stats(collected.save(tmp_path / "s.yaml"))
    loaded.check_model(TinyRNN())
    other = TinyRNN(size=4)
    with pytest.raises(StatsError, match=r"s.yaml.*another model.*force: true"):
        loaded.check_model(other)
    loaded.check_model(other, force=True)


def test_fingerprint_ignores_values_and_device_but_not_dtype() -> None:
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    with torch.no_grad():
        b.weight.add_(1)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(nn.Linear(3, 2).double())
    assert model_fingerprint(a) != model_fingerprint(nn.Linear(3, 2, bias=False))
    assert len(model_fingerprint(a)) == 16


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must be a mapping of module names"),
        ("fc: {output: {min: 1.0, max: [\n", r"bad.yaml:2:1: the file is not valid YAML"),
        ("fc:\n  output: {min: abc, max: 1.0}\n", "module 'fc' output: 'min' must be a number, got 'abc'"),
        ("fc:\n  output: {min: 0.0}\n", "module 'fc' output: 'max' is required"),
        ("fc:\n  output: {min: 0.0, max: 1.0, maxx: 2.0}\n", r"unknown key\(s\) \['maxx'\]"),
        ("fc:\n  inputs: {a: {min: 0.0, max: 1.0}}\n", "input index 'a' must be a non-negative integer"),
        ("fc:\n  output: {min: 0.0, max: .inf}\n", "'max' is infinite"),
        ("fc:\n  weights: {}\n", "module 'fc' must be a mapping with 'inputs' and/or 'output'"),
        ("fc:\n  output: {min: 0.0, max: 1.0, total_numel: -3}\n", "'total_numel' must be a non-negative integer"),
        ("compress_stats: {version: 2}\n", "format version 2"),
        ("compress_stats: {version: 1, colour: red}\n", "'compress_stats' must be a mapping with keys"),
        (
            "compress_stats: {version: 1}\nfc:\n  output: {min: 2.0, max: 1.0}\n",
            r"module 'fc' output: 'min' \(2.0\) is above 'max'",
        ),
        (
            "fc:\n  output: {min: 0.0, max: 1.0, histogram: {lo: 0.0, hi: 1.0, counts: [1, -2]}}\n",
            "histogram 'counts' must be a non-empty list of non-negative integers",
        ),
    ],
)
def test_malformed_files_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(StatsError, match=message) as info:
        load_stats(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_stats_error(tmp_path: Path) -> None:
    with pytest.raises(StatsError, match="Cannot read stats file .*nope.yaml"):
        load_stats(tmp_path / "nope.yaml")


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("fc: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(StatsError, match="not valid YAML"):
        load_stats(path)
