"""The word-level LSTM LM: protocol methods, checkpoints, scoring as the notebook, shipped weights."""

from __future__ import annotations

import copy
import doctest
import json
import math
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import torch
from torch import nn

from compress.errors import ModelError
from compress.models import word_lm as word_lm_module
from compress.models.word_lm import SHIPPED_CHECKPOINT, WordLM, perplexity, save_checkpoint, word_lm
from compress.registry import DATASETS, MODELS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TINY = FIXTURES / "word_lm_tiny.pt"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # The machine is shared: more threads than free cores makes evaluation 10x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(seed: int = 0, tied: bool = True, ntoken: int = 23) -> WordLM:
    torch.manual_seed(seed)
    model = WordLM(ntoken, 6, 6, 2, dropout=0.2, tie_weights=tied)
    # Non-zero decoder bias so a scoring bug in the bias path cannot hide.
    nn.init.uniform_(model.decoder.bias, -0.5, 0.5)
    return model.eval()


def evaluate_like_notebook(model: WordLM, data_source: torch.Tensor, sequence_len: int) -> float:
    """The notebook's ``evaluate`` (mean CE weighted by chunk length, divided by len(data_source))."""
    criterion = nn.CrossEntropyLoss()
    total_loss, hidden = 0.0, None
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, sequence_len):
            seq_len = min(sequence_len, len(data_source) - 1 - i)
            data, targets = data_source[i : i + seq_len], data_source[i + 1 : i + 1 + seq_len].reshape(-1)
            output, hidden = model(data, hidden)
            total_loss += len(data) * criterion(output.view(-1, model.ntoken), targets).item()
            hidden = tuple(h.detach() for h in hidden)
    return total_loss / len(data_source)


def score_all(model: WordLM, source: torch.Tensor, bptt: int) -> tuple[float, int]:
    total, count, state = 0.0, 0, None
    for i in range(0, source.size(0) - 1, bptt):
        seq_len = min(bptt, source.size(0) - 1 - i)
        groups, state = model.score_batch((source[i : i + seq_len], source[i + 1 : i + 1 + seq_len]), state)
        total, count = total + groups["all"][0], count + groups["all"][1]
    return total, count


# ----------------------------------------------------------------------------- structure and protocol


def test_submodule_names_and_tied_parameter() -> None:
    model = tiny_model()
    names = dict(model.named_children())
    assert isinstance(names["encoder"], nn.Embedding) and isinstance(names["rnn"], nn.LSTM)
    assert isinstance(names["decoder"], nn.Linear) and isinstance(names["drop"], nn.Dropout)
    assert model.decoder.weight is model.encoder.weight
    assert tiny_model(tied=False).decoder.weight is not tiny_model(tied=False).encoder.weight
    with pytest.raises(ModelError, match="nhid == ninp"):
        WordLM(10, 4, 8, 1, tie_weights=True)


def test_forward_batch_shapes_and_detached_state() -> None:
    model = tiny_model().train()  # even in training mode the returned state carries no graph
    data = torch.randint(23, (7, 3))
    logits, (h, c) = model.forward_batch((data, data))
    assert logits.shape == (7, 3, 23) and h.shape == c.shape == (2, 3, 6)
    assert not h.requires_grad and not c.requires_grad


def test_score_batch_equals_notebook_formula() -> None:
    model = tiny_model()
    source = torch.randint(23, (40, 4), generator=torch.Generator().manual_seed(1))
    total, count = score_all(model, source, bptt=6)
    assert count == 4 * (40 - 1)
    notebook = evaluate_like_notebook(model, source, 6)
    # The notebook divides by len(data_source) = n rows while n - 1 rows are predicted.
    assert total / count == pytest.approx(notebook * 40 / 39, rel=1e-6)
    assert perplexity(total, count) == pytest.approx(math.exp(notebook * 40 / 39), rel=1e-6)


def test_score_batch_by_hand_on_one_chunk() -> None:
    model = tiny_model()
    data = torch.tensor([[1, 2], [3, 4], [5, 6]])
    targets = torch.tensor([[3, 4], [5, 6], [7, 8]])
    with torch.no_grad():
        logits, _ = model(data, None)
    expected = sum(
        -torch.log_softmax(logits[t, b].double(), -1)[targets[t, b]].item() for t in range(3) for b in range(2)
    )
    (nll, n), _ = model.score_batch((data, targets))[0]["all"], None
    assert n == 6 and nll == pytest.approx(expected, rel=1e-6)


def test_state_is_carried_across_chunks() -> None:
    model = tiny_model()
    source = torch.randint(23, (13, 2), generator=torch.Generator().manual_seed(2))
    one_chunk, _ = score_all(model, source, bptt=12)
    many_chunks, _ = score_all(model, source, bptt=5)
    assert many_chunks == pytest.approx(one_chunk, rel=1e-5)
    fresh_each_time = sum(
        model.score_batch((source[i : i + 4], source[i + 1 : i + 5]))[0]["all"][0] for i in range(0, 12, 4)
    )
    assert fresh_each_time != pytest.approx(one_chunk, rel=1e-4)  # so the carried state really matters


def test_half_model_scores_close_to_fp32() -> None:
    model = tiny_model()
    batch = (torch.randint(23, (5, 3)), torch.randint(23, (5, 3)))
    (ref, n), _ = model.score_batch(batch)[0]["all"], None
    half = copy.deepcopy(model).half()
    groups, (h, _) = half.score_batch(batch)
    assert h.dtype == torch.float16 and groups["all"][1] == n
    assert math.isfinite(groups["all"][0]) and groups["all"][0] == pytest.approx(ref, rel=1e-2)


def test_out_of_vocabulary_ids_are_a_model_error() -> None:
    batch = (torch.tensor([[0], [23]]), torch.tensor([[1], [2]]))
    with pytest.raises(ModelError, match="outside the model's vocabulary of 23"):
        tiny_model().score_batch(batch)


def test_sample_for_calibration_is_seeded() -> None:
    model = tiny_model()
    seen: list[torch.Tensor] = []
    model.encoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0].clone()))
    model.sample_for_calibration(4, 6, torch.Generator().manual_seed(5))
    first, seen[:] = list(seen), []
    model.sample_for_calibration(4, 6, torch.Generator().manual_seed(5))
    assert len(first) == 6 and all(x.shape == (1, 4) for x in first)
    assert all(torch.equal(a, b) for a, b in zip(first, seen, strict=True))
    assert len({tuple(x.flatten().tolist()) for x in first}) > 1  # tokens change from step to step


def test_modular_lstm_drop_in_keeps_outputs() -> None:
    from compress.modules import lstm as lstm_module

    model = tiny_model()
    converted = copy.deepcopy(model)
    converted.rnn = lstm_module.ModularLSTM.from_float(model.rnn)
    batch = (torch.randint(23, (6, 2)), torch.randint(23, (6, 2)))
    with torch.no_grad():
        torch.testing.assert_close(converted.forward_batch(batch)[0], model.forward_batch(batch)[0], atol=1e-5, rtol=0)
    assert any(name.startswith("rnn.cells.0.") for name, _ in converted.named_modules())


# ----------------------------------------------------------------------------- factory and checkpoints


def test_registered_schema_is_strict() -> None:
    schema = MODELS.get("word_lm").schema
    jsonschema.validate({"ntoken": 10, "ninp": 4, "nhid": 4, "tie_weights": True}, schema)
    for bad in ({"ntokens": 10}, {"nlayers": 0}, {"dropout": 2}, {"vocab_sha256": "abc"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_checkpoint_round_trip_keeps_tied_parameter_vocab_and_outputs(tmp_path: Path) -> None:
    model = tiny_model()
    vocab = ["<unk>"] + [f"w{i}" for i in range(22)]
    save_checkpoint(model, tmp_path / "lm.pt", vocab=vocab, vocab_sha256="a" * 64, card={"path": tmp_path})
    loaded = word_lm(checkpoint=tmp_path / "lm.pt")
    assert loaded.decoder.weight is loaded.encoder.weight
    assert loaded.vocab == vocab and loaded.vocab_sha256 == "a" * 64 and not loaded.training
    assert loaded.compress_spec == {
        "model": "word_lm",
        "args": {**model.compress_spec["args"], "vocab_sha256": "a" * 64},
    }
    x = torch.randint(23, (4, 2))
    torch.testing.assert_close(loaded.forward_batch((x, x))[0], model.forward_batch((x, x))[0], rtol=0, atol=0)
    rebuilt = word_lm(**loaded.compress_spec["args"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in loaded.state_dict().items()}


def test_plain_state_dict_needs_matching_args(tmp_path: Path) -> None:
    model = tiny_model(tied=False)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    loaded = word_lm(checkpoint=tmp_path / "sd.pt", ntoken=23, ninp=6, nhid=6)
    assert torch.equal(loaded.decoder.weight, model.decoder.weight)
    with pytest.raises(ModelError, match=r"does not fit the model: missing \['rnn.bias_hh_l2'"):
        word_lm(checkpoint=tmp_path / "sd.pt", ntoken=23, ninp=6, nhid=6, nlayers=3)
    with pytest.raises(ModelError, match="needs 'ntoken'"):
        word_lm(checkpoint=tmp_path / "sd.pt")


def test_checkpoint_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "lm.pt"
    with pytest.raises(ModelError, match=str(missing)):
        word_lm(checkpoint=missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="garbage.pt' cannot be read as a PyTorch checkpoint"):
        word_lm(checkpoint=garbage)
    save_checkpoint(tiny_model(), tmp_path / "lm.pt", vocab=["<unk>"] * 23, vocab_sha256="b" * 64)
    with pytest.raises(ModelError, match="nhid=8 disagrees with checkpoint"):
        word_lm(checkpoint=tmp_path / "lm.pt", nhid=8)
    with pytest.raises(ModelError, match="vocabulary sha256"):
        word_lm(checkpoint=tmp_path / "lm.pt", vocab_sha256="c" * 64)
    ckpt = torch.load(tmp_path / "lm.pt", weights_only=True)
    torch.save({**ckpt, "model": "performance_rnn"}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="for model 'performance_rnn'"):
        word_lm(checkpoint=tmp_path / "other.pt")


def test_model_rejects_a_dataset_with_another_vocabulary(tmp_path: Path) -> None:
    model = word_lm(checkpoint=TINY)
    folder = tmp_path / "wt"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text("the cat sat on the mat\n" * 30)
    own = DATASETS.get("wikitext").obj(path=str(folder), vocab_from_checkpoint=str(TINY))
    model.check_data(own)
    other = DATASETS.get("wikitext").obj(path=str(folder))
    with pytest.raises(ModelError, match="not the model's"):
        model.check_data(other)


def test_tiny_fixture_reaches_its_recorded_perplexity() -> None:
    card = torch.load(TINY, weights_only=True)["card"]
    model = word_lm(checkpoint=TINY)
    assert TINY.stat().st_size < 1_000_000 and model.ntoken == 2000 and model.decoder.weight is model.encoder.weight
    data = DATASETS.get("gensim_wiki").obj(**card["data"]["args"])
    model.check_data(data)
    total, count, state = 0.0, 0, None
    for batch in data.batches("evaluation"):
        groups, state = model.score_batch(batch, state)
        total, count = total + groups["all"][0], count + groups["all"][1]
    ppl = perplexity(total, count)
    assert ppl == pytest.approx(card["perplexity"]["valid"], rel=1e-3)
    assert ppl < card["untrained_perplexity"]["valid"] / 10


# ----------------------------------------------------------------------------- shipped checkpoint


def test_shipped_checkpoint_loads_and_is_small() -> None:
    record = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    model = word_lm(checkpoint=SHIPPED_CHECKPOINT)
    assert SHIPPED_CHECKPOINT.stat().st_size < 10_000_000
    assert model.vocab_sha256 == record["vocab_sha256"] and len(model.vocab) == model.ntoken
    assert model.decoder.weight is model.encoder.weight


# About 10 s per split on an idle core; the test split runs with -m slow only.
@pytest.mark.parametrize("split", ["valid", pytest.param("test", marks=pytest.mark.slow)])
def test_shipped_checkpoint_reaches_recorded_perplexity(split: str) -> None:
    record = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    model = word_lm(checkpoint=SHIPPED_CHECKPOINT)
    data = DATASETS.get("gensim_wiki").obj(**record["data"]["args"], evaluation_split=split)
    model.check_data(data)
    total, count, state = 0.0, 0, None
    for batch in data.batches("evaluation"):
        groups, state = model.score_batch(batch, state)
        total, count = total + groups["all"][0], count + groups["all"][1]
    ppl = perplexity(total, count)
    assert ppl == pytest.approx(record["perplexity"][split], rel=record["tolerance_rel"])
    assert ppl < record["untrained_perplexity"][split] / 20


def test_docstring_examples() -> None:
    result = doctest.testmod(word_lm_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
