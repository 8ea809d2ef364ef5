"""The Bach chorale corpus: conversion, cache, file-level split, windows and batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data import chorales
from compress.data.corpus import EventCorpus, split_names
from compress.data.events import EVENT_DIM, NOTE_ON, VELOCITY
from compress.errors import DataError
from compress.registry import DATASETS

MAX_FILES = 12


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chorale_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESS_CACHE", str(path))
        chorales.load_chorales(MAX_FILES)  # converted once for the whole module
    return path


@pytest.fixture
def corpus(cache: Path, monkeypatch: pytest.MonkeyPatch) -> EventCorpus:
    monkeypatch.setenv("COMPRESS_CACHE", str(cache))
    return chorales.load_chorales(MAX_FILES)


def test_corpus_is_cached_and_reused(corpus: EventCorpus, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(list(cache.glob("bach_chorales-*.npz"))) == 1
    monkeypatch.setattr(chorales, "encode_chorale", _must_not_convert)
    again = chorales.load_chorales(MAX_FILES)
    assert again.names == corpus.names and np.array_equal(again.events, corpus.events)


def _must_not_convert(path: Path) -> None:
    raise AssertionError(f"converted {path} although a cache exists")


def test_chorale_events_look_like_scores(corpus: EventCorpus) -> None:
    assert corpus.names == tuple(sorted(corpus.names)) and len(corpus.names) == MAX_FILES
    assert corpus.events.max() < EVENT_DIM and len(corpus.events) > 1000 * MAX_FILES // 4
    velocities = corpus.events[(corpus.events >= VELOCITY) & (corpus.events < VELOCITY + 32)]
    assert set(velocities.tolist()) == {VELOCITY + 16}  # every score note has velocity 64
    events, _, _ = corpus.file(0)
    assert events[0] == VELOCITY + 16 and events[1] < VELOCITY  # the first note starts at 0 s
    assert (corpus.events < NOTE_ON + 88).sum() == (corpus.events[corpus.events >= VELOCITY] < VELOCITY + 32).sum()


def test_split_is_deterministic_disjoint_and_by_file(corpus: EventCorpus) -> None:
    splits = {name: corpus.split(name) for name in ("train", "validation", "test")}
    assert {k: len(v) for k, v in splits.items()} == {"train": 10, "validation": 1, "test": 1}
    files = [i for v in splits.values() for i in v]
    assert sorted(files) == list(range(MAX_FILES))  # disjoint and complete
    assert splits == {name: corpus.split(name) for name in splits}
    assert split_names(list(corpus.names)) == split_names(list(corpus.names))
    with pytest.raises(DataError, match="Unknown corpus split"):
        corpus.split("dev")


def test_split_depends_on_the_file_set_not_its_order() -> None:
    names = [f"bwv{i}.mxl" for i in range(400)]
    full = split_names(names)
    assert {k: len(v) for k, v in full.items()} == {"train": 320, "validation": 40, "test": 40}
    shuffled = split_names(list(reversed(names)))
    assert {k: sorted(v) for k, v in shuffled.items()} == {k: sorted(v) for k, v in full.items()}
    assert split_names(["a", "b"]) == {"train": ["a", "b"], "validation": [], "test": []}
    assert [len(v) for v in split_names(["a", "b", "c"]).values()] == [1, 1, 1]


def _dataset(cache: Path, monkeypatch: pytest.MonkeyPatch, **args: object):
    monkeypatch.setenv("COMPRESS_CACHE", str(cache))
    return DATASETS.get("bach_chorales").obj(max_files=MAX_FILES, **args)


def test_evaluation_windows_are_the_validation_files_in_order(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dataset(cache, monkeypatch, window=50, batch_size=4)
    (file,) = data.corpus.split("validation")
    events, _, _ = data.corpus.file(file)
    expected = [events[s : s + 50] for s in range(0, len(events) - 49, 50)]
    got = [b[0][:, k].numpy() for b in data.batches("evaluation") for k in range(b[0].shape[1])]
    assert len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    sizes = [b[0].shape[1] for b in data.batches("evaluation")]
    assert sizes[:-1] == [4] * (len(sizes) - 1) and 1 <= sizes[-1] <= 4  # last partial batch kept


def test_batches_are_deterministic(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dataset(cache, monkeypatch, window=40, batch_size=8, calibration_batches=3, seed=5)
    for split in ("calibration", "evaluation"):
        first, second = list(data.batches(split)), list(data.batches(split))
        assert len(first) == data.num_batches(split)
        for a, b in zip(first, second, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert data.num_batches("calibration") == 3
    calib_z = next(iter(data.batches("calibration")))[2]
    eval_z = next(iter(data.batches("evaluation")))[2]
    assert not torch.equal(calib_z, eval_z)
    other_seed = _dataset(cache, monkeypatch, window=40, batch_size=8, calibration_batches=3, seed=6)
    assert not torch.equal(next(iter(other_seed.batches("calibration")))[0], next(iter(data.batches("calibration")))[0])


def test_batch_layout_and_options(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _dataset(cache, monkeypatch, window=30, batch_size=5, controls=False, init_dim=7, evaluation_batches=1)
    batches = list(data.batches("evaluation"))
    assert len(batches) == 1
    events, controls, z = batches[0]
    assert events.shape == (30, 5) and events.dtype == torch.long and controls is None and z.shape == (5, 7)
    with_controls = _dataset(cache, monkeypatch, window=30, batch_size=5)
    _, dense, _ = next(iter(with_controls.batches("evaluation")))
    assert dense.shape == (30, 5, 24) and dense.dtype == torch.float32
    assert torch.all(dense[..., :12].sum(-1) == 1)  # density one-hot first
    assert torch.allclose(dense[..., 12:].sum(-1), torch.ones(30, 5), atol=12 / 255)
    line = with_controls.describe()
    assert "bach_chorales" in line and "10/1/1" in line and "\n" not in line
    with pytest.raises(DataError, match="calibration"):
        list(data.batches("train"))


def test_schema_is_strict() -> None:
    import jsonschema

    schema = DATASETS.get("bach_chorales").schema
    jsonschema.validate({"window": 100, "evaluation_split": "test", "max_files": None}, schema)
    for bad in ({"windw": 100}, {"window": 1}, {"evaluation_split": "dev"}, {"controls": "yes"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
