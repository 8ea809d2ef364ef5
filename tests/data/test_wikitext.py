"""WikiText folders, the gensim Wikipedia corpus, vocabulary and the notebook's batch layout."""

from __future__ import annotations

import doctest
import json
import random
from pathlib import Path

import jsonschema
import pytest
import torch

from compress.data import wiki_dump
from compress.data import wikitext as wikitext_module
from compress.data.wikitext import (
    EOS,
    UNK,
    TextDataSource,
    batchify,
    bptt_batches,
    build_vocab,
    read_wikitext_folder,
    tokenize_lines,
    vocab_sha256,
)
from compress.errors import DataError
from compress.registry import DATASETS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def write_folder(
    folder: Path, names: tuple[str, str, str] = ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    texts = (" = Heading = \n the cat sat \n\n the dog sat on the cat \n", " the cat ran \n", " a dog \n")
    for name, text in zip(names, texts, strict=True):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def gensim_lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))
        return wiki_dump.load_gensim_wiki()


# ----------------------------------------------------------------------------- WikiText folders


def test_tokenize_lines_appends_eos_to_every_line_including_empty_ones() -> None:
    assert tokenize_lines([" a  b ", "", "c"]) == ["a", "b", EOS, EOS, "c", EOS]


@pytest.mark.parametrize(
    "names", [("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"), ("train.txt", "valid.txt", "test.txt")]
)
def test_folder_loader_reads_both_layouts(tmp_path: Path, names: tuple[str, str, str]) -> None:
    lines = read_wikitext_folder(write_folder(tmp_path / "wt", names))
    assert lines["valid"] == [" the cat ran "]
    assert (
        tokenize_lines(lines["train"])
        == "= Heading = <eos> the cat sat <eos> <eos> the dog sat on the cat <eos>".split()
    )


def test_folder_loader_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_wikitext_folder(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.txt").write_text("a\n")
    with pytest.raises(DataError, match=r"half.*must contain wiki\.train\.tokens"):
        read_wikitext_folder(tmp_path / "half")


def test_registered_wikitext_dataset_batches_and_vocab(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "wt")
    src = DATASETS.get("wikitext").obj(path=str(folder), bptt=2, eval_batch_size=1, calibration_batch_size=2)
    # train counts: <eos> 4, the 3, then = cat sat (2 each) and singletons, ties alphabetically.
    assert src.vocab == [UNK, "<eos>", "the", "=", "cat", "sat", "Heading", "dog", "on"]
    evaluation = list(src.batches("evaluation"))
    assert [x.flatten().tolist() for x, _ in evaluation] == [[2, 4], [0]]  # "the cat", "ran" -> <unk>
    assert [y.flatten().tolist() for _, y in evaluation] == [[4, 0], [1]]
    assert src.num_batches("evaluation") == 2
    assert src.num_batches("calibration") == len(list(src.batches("calibration")))
    assert "wt (vocab 9" in src.describe() and "evaluation: valid split, 2 batches of [2, 1]" in src.describe()


# ----------------------------------------------------------------------------- layout


def test_batchify_and_bptt_match_hand_computed_layout() -> None:
    data = batchify(torch.arange(23), 2)  # 23 -> trimmed to 22, two columns of 11
    assert data.tolist() == [[i, 11 + i] for i in range(11)]
    chunks = [(x.tolist(), y.tolist()) for x, y in bptt_batches(data, 4)]
    assert chunks == [
        ([[0, 11], [1, 12], [2, 13], [3, 14]], [[1, 12], [2, 13], [3, 14], [4, 15]]),
        ([[4, 15], [5, 16], [6, 17], [7, 18]], [[5, 16], [6, 17], [7, 18], [8, 19]]),
        ([[8, 19], [9, 20]], [[9, 20], [10, 21]]),
    ]


@pytest.mark.parametrize("length,bptt", [(71, 35), (72, 35), (36, 35), (10, 3)])
def test_bptt_chunks_equal_notebook_get_batch(length: int, bptt: int) -> None:
    source = batchify(torch.arange(length * 2), 2)
    expected = []
    for i in range(0, source.size(0) - 1, bptt):  # the notebook's get_batch, without empty chunks
        seq_len = min(bptt, len(source) - 1 - i)
        expected.append((source[i : i + seq_len], source[i + 1 : i + 1 + seq_len]))
    got = list(bptt_batches(source, bptt))
    assert len(got) == len(expected) and all(x.numel() > 0 for x, _ in got)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, expected, strict=True))


# ----------------------------------------------------------------------------- vocabulary


def test_vocab_order_min_count_and_cap() -> None:
    tokens = "b a b c c c d <unk> <unk> e e".split()
    assert build_vocab(tokens) == [UNK, "c", "b", "e", "a", "d"]
    assert build_vocab(tokens, min_count=2) == [UNK, "c", "b", "e"]
    assert build_vocab(tokens, max_vocab=3) == [UNK, "c", "b"]


def test_vocab_is_independent_of_token_order() -> None:
    tokens = [f"w{i % 37}" for i in range(2000)] + [f"w{i}" for i in range(37)]
    shuffled = list(tokens)
    random.Random(0).shuffle(shuffled)
    assert build_vocab(tokens, max_vocab=20) == build_vocab(shuffled, max_vocab=20)
    assert vocab_sha256(build_vocab(tokens)) != vocab_sha256(build_vocab(tokens)[::-1])


def test_vocab_fingerprint_is_checked() -> None:
    lines = {"train": ["a b a"], "valid": ["a b"], "test": ["b"]}
    good = vocab_sha256([UNK, "a", EOS, "b"])
    TextDataSource("toy", lines, bptt=1, eval_batch_size=1, calibration_batch_size=1, expected_vocab_sha256=good)
    with pytest.raises(DataError, match="not the expected one"):
        TextDataSource(
            "toy", lines, bptt=1, eval_batch_size=1, calibration_batch_size=1, expected_vocab_sha256="0" * 64
        )


def test_vocab_from_checkpoint_uses_the_model_vocabulary(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "wt")
    ckpt = torch.load(FIXTURES / "word_lm_tiny.pt", weights_only=True)
    src = DATASETS.get("wikitext").obj(
        path=str(folder),
        vocab_from_checkpoint=str(FIXTURES / "word_lm_tiny.pt"),
        eval_batch_size=1,
        calibration_batch_size=1,
    )
    assert src.vocab == ckpt["vocab"] and src.vocab_sha256 == ckpt["vocab_sha256"]
    with pytest.raises(DataError, match="does not exist"):
        DATASETS.get("wikitext").obj(path=str(folder), vocab_from_checkpoint=str(tmp_path / "missing.pt"))


# ----------------------------------------------------------------------------- DataSource contract


def test_unknown_role_and_too_few_tokens_are_data_errors() -> None:
    lines = {"train": ["a b c d"], "valid": ["a"], "test": ["b"]}
    src = TextDataSource("toy", lines, bptt=2, eval_batch_size=1, calibration_batch_size=1)
    with pytest.raises(DataError, match="Unknown split 'train'"):
        list(src.batches("train"))
    with pytest.raises(DataError, match="too few for batch size 3"):
        TextDataSource("toy", lines, bptt=2, eval_batch_size=3, calibration_batch_size=1)


@pytest.mark.parametrize("name", ["gensim_wiki", "wikitext"])
def test_dataset_schemas_are_strict(name: str) -> None:
    schema = DATASETS.get(name).schema
    base = {"path": "x"} if name == "wikitext" else {}
    jsonschema.validate({**base, "bptt": 35, "max_vocab": None, "calibration_split": "valid"}, schema)
    for bad in ({"bpt": 35}, {"bptt": 0}, {"evaluation_split": "dev"}, {"vocab_sha256": "xyz"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**base, **bad}, schema)


# ----------------------------------------------------------------------------- gensim corpus


def test_clean_article_strips_markup_and_reference_sections() -> None:
    raw = "'''Foo''' is a [[bar|Bar]] (1,000 m).\n==History==\n* Old ''text''.\n==Empty==\n==See also==\n* Baz\n"
    assert wiki_dump.clean_article(raw) == ["Foo is a Bar ( 1 , 000 m ) .", "= = History = =", "Old text ."]


def test_gensim_split_is_by_article_deterministic_and_disjoint(tmp_path: Path) -> None:
    path = wiki_dump.gensim_dump_path()
    first, second = wiki_dump.build_gensim_wiki(path), wiki_dump.build_gensim_wiki(path)
    assert first == second
    titles = {s: {a["title"] for a in first["articles"] if a["split"] == s} for s in wiki_dump.SPLITS}
    assert not (
        titles["train"] & titles["valid"] or titles["train"] & titles["test"] or titles["valid"] & titles["test"]
    )
    counts = {s: len(t) for s, t in titles.items()}
    assert counts == {"train": 86, "valid": 10, "test": 10}
    assert "Anarchism" in titles["train"]


def test_gensim_corpus_size_and_cache_reuse(
    gensim_lines: dict[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = {s: len(tokenize_lines(lines)) for s, lines in gensim_lines.items()}
    assert 350_000 < sizes["train"] < 500_000 and 40_000 < sizes["valid"] < 90_000 and 40_000 < sizes["test"] < 90_000
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    assert wiki_dump.load_gensim_wiki() == gensim_lines  # builds and writes the cache
    (cache,) = tmp_path.glob("gensim_wiki_v*.json")
    assert json.loads(cache.read_text())["version"] == wiki_dump.CLEANING_VERSION

    def fail(path: Path) -> dict:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(wiki_dump, "build_gensim_wiki", fail)
    assert wiki_dump.load_gensim_wiki() == gensim_lines
    cache.write_text("{not json")
    monkeypatch.undo()
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    assert wiki_dump.load_gensim_wiki() == gensim_lines  # a corrupt cache is rebuilt


def test_gensim_vocab_is_deterministic_and_max_tokens_keeps_it(gensim_lines: dict[str, list[str]]) -> None:
    full = TextDataSource("gensim_wiki", gensim_lines, max_vocab=8000, min_count=3)
    again = TextDataSource("gensim_wiki", gensim_lines, max_vocab=8000, min_count=3)
    small = TextDataSource("gensim_wiki", gensim_lines, max_vocab=8000, min_count=3, max_tokens=1000)
    assert len(full.vocab) == 8000 and full.vocab[:3] == [UNK, ",", "the"]
    assert full.vocab_sha256 == again.vocab_sha256 == small.vocab_sha256
    assert small.num_batches("evaluation") == 3  # 1000 tokens / 10 columns = 100 rows -> 99 targets
    # Column 0 starts both streams; the other columns start elsewhere once the stream is shorter.
    assert torch.equal(next(full.batches("evaluation"))[0][:, 0], next(small.batches("evaluation"))[0][:, 0])
    assert full.num_batches("calibration") == 64
    assert [b[0].tolist() for b in full.batches("calibration")] == [b[0].tolist() for b in again.batches("calibration")]


def test_registered_gensim_wiki_defaults_match_the_shipped_model() -> None:
    card = json.loads((Path(wiki_dump.__file__).parent.parent / "checkpoints" / "word_lm.json").read_text())
    src = DATASETS.get("gensim_wiki").obj(max_tokens=500)
    assert src.vocab_sha256 == card["vocab_sha256"]
    assert src.describe().startswith("gensim_wiki (vocab 8000")


@pytest.mark.parametrize("module", [wiki_dump, wikitext_module])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
