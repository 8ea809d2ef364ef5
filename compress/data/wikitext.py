"""Word-level language-modelling data: WikiText folders and the gensim Wikipedia excerpt.

Tokenization follows the classic word LM example: each line is split on whitespace and
``<eos>`` is appended at its end; a token outside the vocabulary becomes ``<unk>``.

Vocabulary: built from the **train** split only, deterministically: ``<unk>`` first, then
tokens with at least ``min_count`` occurrences sorted by decreasing count, ties
alphabetically, capped at ``max_vocab`` entries in all. The same corpus and arguments
always give the same list, and :func:`vocab_sha256` fingerprints it; a model checkpoint
stores its vocabulary and that fingerprint, so a mismatch is detected rather than scored.
``max_tokens`` truncates token streams *after* the vocabulary is built, so a tiny test run
maps tokens exactly like a full one.

Batch layout (the notebook's ``batchify`` + ``get_batch``): a split's token ids are
trimmed to a multiple of the batch size ``B`` and laid out as ``[T, B]`` (column ``b`` is
the ``b``-th contiguous slice of the stream); batches are consecutive ``bptt``-row chunks
``(data [t, B], targets [t, B])`` with ``targets = next row``, the last chunk shorter.
Consecutive chunks continue the same streams, so a model may carry its state across them.

Example:
    >>> data = batchify(torch.arange(10), 2)
    >>> data.t().tolist()
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    >>> [tuple(x.shape) for x, _ in bptt_batches(data, 3)]
    [(3, 2), (1, 2)]
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from compress.data.wiki_dump import SPLITS, load_gensim_wiki
from compress.errors import DataError
from compress.registry import DATASETS

__all__ = [
    "UNK",
    "EOS",
    "tokenize_lines",
    "read_wikitext_folder",
    "build_vocab",
    "vocab_sha256",
    "encode",
    "batchify",
    "bptt_batches",
    "load_checkpoint_vocab",
    "TextDataSource",
]

UNK = "<unk>"
EOS = "<eos>"
_FOLDER_LAYOUTS = (
    {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
    {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
)


def tokenize_lines(lines: Iterable[str]) -> list[str]:
    """Whitespace tokens of every line, each line ended by ``<eos>`` (empty lines too).

    Example:
        >>> tokenize_lines(["a b", "", "c"])
        ['a', 'b', '<eos>', '<eos>', 'c', '<eos>']
    """
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def read_wikitext_folder(path: str | Path) -> dict[str, list[str]]:
    """Lines per split of a folder with ``wiki.{train,valid,test}.tokens`` or ``{train,valid,test}.txt``.

    Raises:
        DataError: the folder is missing or holds neither layout completely.

    Example:
        >>> splits = read_wikitext_folder("data/wikitext-2")  # doctest: +SKIP
        >>> sorted(splits)  # doctest: +SKIP
        ['test', 'train', 'valid']
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"WikiText folder {folder} does not exist; pass the folder holding wiki.train.tokens etc.")
    for layout in _FOLDER_LAYOUTS:
        files = {split: folder / name for split, name in layout.items()}
        if all(f.is_file() for f in files.values()):
            return {split: _read_lines(f) for split, f in files.items()}
    expected = " or ".join(", ".join(layout.values()) for layout in _FOLDER_LAYOUTS)
    raise DataError(
        f"WikiText folder {folder} must contain {expected}; found {sorted(p.name for p in folder.iterdir())}."
    )


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {path} as UTF-8 text: {exc}.") from exc


def build_vocab(tokens: Iterable[str], max_vocab: int | None = None, min_count: int = 1) -> list[str]:
    """Deterministic vocabulary: ``<unk>``, then tokens by count (desc) then alphabetically.

    Args:
        tokens: the train split's tokens.
        max_vocab: at most this many entries including ``<unk>`` (None: no cap).
        min_count: drop tokens seen fewer times.

    Example:
        >>> build_vocab("b a b c c c d".split(), max_vocab=3)
        ['<unk>', 'c', 'b']
    """
    counts = Counter(tokens)
    counts.pop(UNK, None)
    ranked = sorted((tok for tok, n in counts.items() if n >= min_count), key=lambda t: (-counts[t], t))
    if max_vocab is not None:
        ranked = ranked[: max(max_vocab - 1, 0)]
    return [UNK, *ranked]


def vocab_sha256(vocab: Sequence[str]) -> str:
    """SHA-256 of the vocabulary in order (newline-joined, UTF-8): its fingerprint.

    Example:
        >>> vocab_sha256(["<unk>", "a"])[:12]
        '033b9e9d4f86'
    """
    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


def encode(tokens: Sequence[str], vocab: Sequence[str]) -> torch.Tensor:
    """Token ids (int64) under ``vocab``; unknown tokens map to ``<unk>``.

    Example:
        >>> encode(["a", "zzz"], ["<unk>", "a"]).tolist()
        [1, 0]
    """
    index = {tok: i for i, tok in enumerate(vocab)}
    unk = index[UNK]
    return torch.tensor([index.get(t, unk) for t in tokens], dtype=torch.long)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``[T, B]`` layout of a 1-D id stream, trimmed to a multiple of ``batch_size``.

    Example:
        >>> batchify(torch.arange(7), 3).tolist()
        [[0, 2, 4], [1, 3, 5]]
    """
    nbatch = ids.numel() // batch_size
    return ids[: nbatch * batch_size].view(batch_size, nbatch).t().contiguous()


def bptt_batches(data: torch.Tensor, bptt: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive ``(data, targets)`` chunks of ``bptt`` rows of a ``[T, B]`` tensor.

    ``targets`` is ``data`` shifted by one row; the last chunk is shorter, and the final
    row is only ever a target.

    Example:
        >>> [(x.flatten().tolist(), y.flatten().tolist()) for x, y in bptt_batches(torch.arange(5)[:, None], 2)]
        [([0, 1], [1, 2]), ([2, 3], [3, 4])]
    """
    for i in range(0, data.size(0) - 1, bptt):
        seq_len = min(bptt, data.size(0) - 1 - i)
        yield data[i : i + seq_len], data[i + 1 : i + 1 + seq_len]


def load_checkpoint_vocab(path: str | Path) -> list[str]:
    """The vocabulary stored in a compress checkpoint (``{"vocab": [...], ...}``).

    Example:
        >>> load_checkpoint_vocab("compress/checkpoints/word_lm.pt")[:2]  # doctest: +SKIP
        ['<unk>', 'the']
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"vocab_from_checkpoint: checkpoint {path} does not exist.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise DataError(f"vocab_from_checkpoint: cannot load {path}: {exc}") from exc
    vocab = ckpt.get("vocab") if isinstance(ckpt, dict) else None
    if not (isinstance(vocab, list) and vocab and all(isinstance(t, str) for t in vocab) and UNK in vocab):
        raise DataError(f"vocab_from_checkpoint: {path} stores no vocabulary (a list of tokens with '{UNK}').")
    return vocab


class TextDataSource:
    """DataSource over a word-level corpus: deterministic ``[t, B]`` batches per split.

    Args:
        name: corpus name for :meth:`describe`.
        lines: lines per corpus split (``train``/``valid``/``test``).
        calibration_split / evaluation_split: corpus split feeding each role.
        bptt: rows per batch; eval_batch_size / calibration_batch_size: columns.
        calibration_batches: first N calibration batches only (None: all).
        max_vocab / min_count: vocabulary from the train split (see module doc).
        max_tokens: truncate each split's token stream (None: all).
        vocab: use this vocabulary instead of building one.
        expected_vocab_sha256: fail with DataError unless the vocabulary has this fingerprint.

    Example:
        >>> src = TextDataSource("toy", {"train": ["a b a"], "valid": ["a c"], "test": ["b"]},
        ...                      bptt=2, eval_batch_size=1, calibration_batch_size=1)
        >>> src.vocab
        ['<unk>', 'a', '<eos>', 'b']
        >>> [x.flatten().tolist() for x, _ in src.batches("evaluation")]
        [[1, 0]]
    """

    def __init__(
        self,
        name: str,
        lines: dict[str, list[str]],
        *,
        calibration_split: str = "train",
        evaluation_split: str = "valid",
        bptt: int = 35,
        eval_batch_size: int = 10,
        calibration_batch_size: int = 10,
        calibration_batches: int | None = 64,
        max_vocab: int | None = None,
        min_count: int = 1,
        max_tokens: int | None = None,
        vocab: list[str] | None = None,
        expected_vocab_sha256: str | None = None,
    ) -> None:
        self.name = name
        self.bptt = bptt
        self.roles = {
            "calibration": (calibration_split, calibration_batch_size),
            "evaluation": (evaluation_split, eval_batch_size),
        }
        self.calibration_batches = calibration_batches
        tokens = {split: tokenize_lines(lines[split]) for split in SPLITS}
        self.vocab = list(vocab) if vocab is not None else build_vocab(tokens["train"], max_vocab, min_count)
        self.vocab_sha256 = vocab_sha256(self.vocab)
        if expected_vocab_sha256 is not None and expected_vocab_sha256 != self.vocab_sha256:
            raise DataError(
                f"The {name} vocabulary ({len(self.vocab)} tokens, sha256 {self.vocab_sha256[:12]}...) is not the "
                f"expected one (sha256 {expected_vocab_sha256[:12]}...). Use the max_vocab/min_count the model was "
                "trained with, or set vocab_from_checkpoint to the model's checkpoint."
            )
        self.ids = {
            split: encode(toks[:max_tokens] if max_tokens else toks, self.vocab) for split, toks in tokens.items()
        }
        self._data = {role: self._layout(split, bsz) for role, (split, bsz) in self.roles.items()}

    def _layout(self, split: str, batch_size: int) -> torch.Tensor:
        data = batchify(self.ids[split], batch_size)
        if data.size(0) < 2:
            raise DataError(
                f"The {self.name} '{split}' split has {self.ids[split].numel()} tokens: too few for batch size "
                f"{batch_size} (needs at least {2 * batch_size}). Raise max_tokens or lower the batch size."
            )
        return data

    def _check_role(self, split: str) -> None:
        if split not in self.roles:
            raise DataError(f"Unknown split '{split}' for dataset {self.name}; use 'calibration' or 'evaluation'.")

    def batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Deterministic ``(data [t, B], targets [t, B])`` int64 CPU batches of a role."""
        self._check_role(split)
        limit = self.calibration_batches if split == "calibration" else None
        for i, batch in enumerate(bptt_batches(self._data[split], self.bptt)):
            if limit is not None and i >= limit:
                return
            yield batch

    def training_batches(
        self, batch_size: int | None = None, seed: int = 0, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless full ``bptt`` chunks of the **train** split (fine-tuning), from step ``start`` on.

        The split is laid out as for calibration (``batch_size`` columns, default the calibration batch
        size); each pass starts at a row offset in ``[0, bptt)`` drawn from ``(seed, pass)``, so chunk
        boundaries move between passes. Chunks follow each other, so a model may carry its state.

        Example:
            >>> src = TextDataSource("toy", {"train": ["a b a b a b a"], "valid": ["a"], "test": ["b"]},
            ...                      bptt=2, eval_batch_size=1, calibration_batch_size=1)
            >>> x, y = next(src.training_batches()); tuple(x.shape), tuple(y.shape)
            ((2, 1), (2, 1))
        """
        data = self._layout("train", batch_size or self.roles["calibration"][1])
        step, rounds = 0, 0
        while True:
            offset = int(torch.randint(self.bptt, (1,), generator=torch.Generator().manual_seed(seed + rounds)))
            starts = range(offset, data.size(0) - self.bptt, self.bptt)  # full chunks only
            if not starts:
                raise DataError(f"The {self.name} train split is too short for one training chunk of {self.bptt}.")
            for row in starts:
                if step >= start:
                    yield data[row : row + self.bptt], data[row + 1 : row + 1 + self.bptt]
                step += 1
            rounds += 1

    def num_batches(self, split: str) -> int:
        """How many batches :meth:`batches` yields for ``split``."""
        self._check_role(split)
        n = -(-(self._data[split].size(0) - 1) // self.bptt)
        limit = self.calibration_batches if split == "calibration" else None
        return n if limit is None else min(n, limit)

    def describe(self) -> str:
        """One line: corpus, vocabulary, and per role the split, tokens, batches and batch size."""
        parts = []
        for role, (split, bsz) in self.roles.items():
            tokens = min(self.num_batches(role) * self.bptt, self._data[role].size(0) - 1) * bsz
            parts.append(
                f"{role}: {split} split, {self.num_batches(role)} batches of [{self.bptt}, {bsz}] ({tokens} tokens)"
            )
        return f"{self.name} (vocab {len(self.vocab)}, sha256 {self.vocab_sha256[:12]}); " + "; ".join(parts)


def _prop(type_: str | list[str], default: object, description: str, **extra: object) -> dict:
    return {"type": type_, **extra, "default": default, "description": f"{description} (default {default!r})."}


def _common_schema(max_vocab: int | None, min_count: int) -> dict:
    splits = {"enum": list(SPLITS)}
    nullable_int = ["integer", "null"]
    return {
        "calibration_split": _prop("string", "train", "Corpus split feeding calibration", **splits),
        "evaluation_split": _prop("string", "valid", "Corpus split that is evaluated", **splits),
        "bptt": _prop("integer", 35, "Rows (time steps) per batch", minimum=1, maximum=100000),
        "eval_batch_size": _prop("integer", 10, "Columns of evaluation batches", minimum=1, maximum=65536),
        "calibration_batch_size": _prop("integer", 10, "Columns of calibration batches", minimum=1, maximum=65536),
        "calibration_batches": _prop(
            nullable_int, 64, "Use the first N calibration batches; null: all", minimum=1, maximum=1_000_000
        ),
        "max_vocab": _prop(
            nullable_int, max_vocab, "Vocabulary cap including <unk>; null: none", minimum=2, maximum=10_000_000
        ),
        "min_count": _prop(
            "integer", min_count, "Minimum count in the train split of a vocabulary word", minimum=1, maximum=2**31
        ),
        "max_tokens": _prop(
            nullable_int, None, "Truncate each split to N tokens (quick runs); null: all", minimum=2, maximum=2**40
        ),
        "vocab_sha256": _prop(
            ["string", "null"], None, "Fail unless the vocabulary has this fingerprint", pattern="^[0-9a-f]{64}$"
        ),
        "vocab_from_checkpoint": _prop(
            ["string", "null"], None, "Use the vocabulary stored in this compress checkpoint", format="path"
        ),
    }


def _schema(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _source(name: str, lines: dict[str, list[str]], args: dict) -> TextDataSource:
    ckpt = args.pop("vocab_from_checkpoint", None)
    expected = args.pop("vocab_sha256", None)
    vocab = load_checkpoint_vocab(ckpt) if ckpt else None
    return TextDataSource(name, lines, vocab=vocab, expected_vocab_sha256=expected, **args)


GENSIM_WIKI_DEFAULTS = {"max_vocab": 8000, "min_count": 3}


@DATASETS.register(
    "gensim_wiki",
    schema=_schema(_common_schema(**GENSIM_WIKI_DEFAULTS)),
    description="English Wikipedia excerpt shipped with gensim (106 articles), WikiText-like, split by article.",
)
def gensim_wiki(**args: object) -> TextDataSource:
    """The gensim Wikipedia excerpt as a word-level DataSource (no download; cached cleaning).

    Example:
        >>> src = gensim_wiki(max_tokens=2000)  # doctest: +SKIP
        >>> src.num_batches("evaluation")  # doctest: +SKIP
        6
    """
    return _source("gensim_wiki", load_gensim_wiki(), {**GENSIM_WIKI_DEFAULTS, **args})


@DATASETS.register(
    "wikitext",
    schema=_schema(
        {
            "path": {
                "type": "string",
                "format": "path",
                "description": "Folder with wiki.{train,valid,test}.tokens or {train,valid,test}.txt.",
            },
            **_common_schema(max_vocab=None, min_count=1),
        },
        required=["path"],
    ),
    description="A local WikiText-style folder (e.g. WikiText-2), tokenized on whitespace with <eos> per line.",
)
def wikitext(*, path: str, **args: object) -> TextDataSource:
    """A WikiText-style folder as a word-level DataSource.

    Example:
        >>> src = wikitext(path="data/wikitext-2")  # doctest: +SKIP
        >>> src.describe()  # doctest: +SKIP
        'wikitext-2 (vocab 33278, ...'
    """
    return _source(Path(path).name or "wikitext", read_wikitext_folder(path), dict(args))
