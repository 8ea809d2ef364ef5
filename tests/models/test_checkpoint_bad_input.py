"""Malformed checkpoints give a ModelError naming the file and the problem, before anything large is built."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from compress.errors import ModelError
from compress.models.perf_rnn_checkpoint import save_checkpoint
from compress.models.performance_rnn import PerformanceRNN, performance_rnn
from compress.models.word_lm import WordLM, word_lm
from compress.models.word_lm import save_checkpoint as save_lm


def _perf(tmp_path: Path) -> dict[str, Any]:
    save_checkpoint(PerformanceRNN(hidden_dim=4, num_layers=1), tmp_path / "ok.pt")
    return torch.load(tmp_path / "ok.pt", weights_only=True)


def _lm(tmp_path: Path) -> dict[str, Any]:
    save_lm(WordLM(5, 4, 4, 1), tmp_path / "lm.pt", vocab=list("abcde"), vocab_sha256="")
    return torch.load(tmp_path / "lm.pt", weights_only=True)


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def _with_state(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**d, "state_dict": {**d["state_dict"], key: value}}


PERF_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("no_args", lambda c: _without(c, "args"), "lacks 'args'"),
    ("no_state_dict", lambda c: _without(c, "state_dict"), "lacks 'state_dict'"),
    ("args_not_mapping", lambda c: {**c, "args": 5}, "'args' must be a mapping"),
    ("state_not_mapping", lambda c: {**c, "state_dict": [1, 2]}, "no state dict"),
    ("state_value_not_tensor", lambda c: _with_state(c, "gru.weight_hh_l0", 3), "holds a int"),
    ("hidden_dim_huge", lambda c: {**c, "args": {**c["args"], "hidden_dim": 10_000_000}}, "hidden_dim"),
    ("hidden_dim_float", lambda c: {**c, "args": {**c["args"], "hidden_dim": 4.0}}, "not of type 'integer'"),
    ("too_many_parameters", lambda c: {**c, "args": {**c["args"], "hidden_dim": 16384, "num_layers": 32}}, "param"),
    ("zero_width", lambda c: _with_state(c, "gru.weight_hh_l0", torch.zeros(16, 0)), "has shape (16, 0)"),
    ("one_d_weight", lambda c: _with_state(c, "output_fc.weight", torch.zeros(240)), "has shape (240,)"),
    ("extra_key", lambda c: _with_state(c, "surprise", torch.zeros(1)), "unexpected ['surprise']"),
    ("int_weights", lambda c: _with_state(c, "output_fc.bias", torch.zeros(240, dtype=torch.int64)), "not floats"),
    (
        "sess_one_d",
        lambda c: {
            "model_state": {"gru.weight_ih_l0": torch.zeros(4), "gru.weight_hh_l0": torch.zeros(4)},
            "model_config": {"hidden_dim": 4},
        },
        "non-empty matrices",
    ),  # fmt: skip
    (
        "sess_zero",
        lambda c: {
            "model_state": {"gru.weight_ih_l0": torch.zeros(0, 4), "gru.weight_hh_l0": torch.zeros(4, 0)},
            "model_config": {"hidden_dim": 4},
        },
        "non-empty matrices",
    ),  # fmt: skip
    ("sess_config_not_mapping", lambda c: {"model_state": c["state_dict"], "model_config": 3}, "must be a mapping"),
]


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in PERF_CASES], ids=[c[0] for c in PERF_CASES])
def test_bad_performance_rnn_checkpoint(tmp_path: Path, make: Callable, message: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(make(_perf(tmp_path)), path)
    with pytest.raises(ModelError) as info:
        performance_rnn(checkpoint=path)
    assert str(path) in str(info.value) and message in str(info.value), info.value


LM_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("args_not_mapping", lambda c: {**c, "args": "x"}, "'args' must be a mapping"),
    ("nhid_huge", lambda c: {**c, "args": {**c["args"], "nhid": 10_000_000, "ninp": 10_000_000}}, "nhid"),
    ("state_missing", lambda c: _without(c, "state_dict"), "no state dict"),
    ("vocab_not_list", lambda c: {**c, "vocab": 7}, "'vocab' must be a list"),
    ("zero_width", lambda c: _with_state(c, "encoder.weight", torch.zeros(5, 0)), "has shape (5, 0)"),
]


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in LM_CASES], ids=[c[0] for c in LM_CASES])
def test_bad_word_lm_checkpoint(tmp_path: Path, make: Callable, message: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(make(_lm(tmp_path)), path)
    with pytest.raises(ModelError) as info:
        word_lm(checkpoint=path)
    assert str(path) in str(info.value) and message in str(info.value), info.value


@pytest.mark.parametrize("factory", [performance_rnn, word_lm])
def test_pickled_code_is_refused_in_compress_words(tmp_path: Path, factory: Callable) -> None:
    path = tmp_path / "code.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a pickled class: loading it would import and run code
    with pytest.raises(ModelError, match="holds Python objects or code") as info:
        factory(checkpoint=path)
    assert "weights_only" not in str(info.value)


@pytest.mark.parametrize("factory", [performance_rnn, word_lm])
def test_truncated_or_special_files(tmp_path: Path, factory: Callable) -> None:
    good = tmp_path / "ok.pt"
    save_checkpoint(PerformanceRNN(hidden_dim=4, num_layers=1), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ModelError, match="cut.pt' cannot be read as a PyTorch checkpoint"):
        factory(checkpoint=cut)
    with pytest.raises(ModelError, match="is not a regular file"):
        factory(checkpoint=Path("/dev/zero"))
