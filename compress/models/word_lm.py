"""Word-level LSTM language model (the classic embedding -> LSTM -> linear decoder).

Submodule names are part of the contract: ``encoder`` (nn.Embedding), ``drop`` (dropout,
inactive in eval), ``rnn`` (nn.LSTM, or a ModularLSTM after ``rnn_to_modular``, so override
regexes such as ``rnn.cells.0.*`` apply) and ``decoder`` (nn.Linear). With tied weights
``decoder.weight`` *is* ``encoder.weight`` (one Parameter).

Scoring reproduces the notebook's evaluation. The notebook accumulates
``len(chunk) * mean_CE(chunk)`` over consecutive bptt chunks (state carried and detached)
and divides by ``len(data_source)``; since ``mean_CE = NLL_sum / (len(chunk) * B)`` that is
``total NLL / (B * len(data_source))``. :meth:`WordLM.score_batch` returns the NLL sum and
the token count ``len(chunk) * B``, whose total over a split is ``B * (len(data_source) - 1)``
(the last row is only a target), so ``exp(sum / count)`` is the notebook's perplexity except
for that divide-by-``len(data_source)`` detail (a factor ``(n - 1) / n`` on the loss).

Checkpoint format (``torch.load(weights_only=True)``)::

    {"format": "compress-checkpoint", "version": 1, "model": "word_lm", "args": {...},
     "state_dict": {...}, "vocab": [...], "vocab_sha256": "...", "card": {...}}

A plain state dict is accepted too when the architecture args are given explicitly.

Example:
    >>> model = WordLM(ntoken=50, ninp=8, nhid=8, nlayers=2, tie_weights=True).eval()
    >>> data = torch.randint(50, (5, 3))
    >>> groups, state = model.score_batch((data, data))
    >>> groups["all"][1]
    15
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import ModelError
from compress.fileio import atomic_torch_save
from compress.models.checks import check_and_build, check_args, check_state_dict, load_weights
from compress.registry import MODELS
from compress.utils import model_device, model_dtype

__all__ = ["WordLM", "word_lm", "save_checkpoint", "load_checkpoint_file", "SHIPPED_CHECKPOINT", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "compress-checkpoint"
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "word_lm.pt"
Batch = tuple[torch.Tensor, torch.Tensor]
State = tuple[torch.Tensor, torch.Tensor]
_ARCH_KEYS = ("ntoken", "ninp", "nhid", "nlayers", "tie_weights")


class WordLM(nn.Module):
    """Embedding -> multi-layer LSTM -> linear decoder over a word vocabulary.

    Args:
        ntoken: vocabulary size.
        ninp: embedding size.
        nhid: LSTM hidden size (must equal ``ninp`` when ``tie_weights``).
        nlayers: LSTM layers.
        dropout: dropout on embeddings, between LSTM layers and on LSTM outputs (training only).
        tie_weights: share the decoder weight with the embedding (same Parameter).

    Example:
        >>> m = WordLM(100, 16, 16, 2, tie_weights=True)
        >>> m.decoder.weight is m.encoder.weight
        True
    """

    def __init__(
        self, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float = 0.0, tie_weights: bool = False
    ) -> None:
        super().__init__()
        if tie_weights and nhid != ninp:
            raise ModelError(f"tie_weights needs nhid == ninp, got nhid={nhid}, ninp={ninp}; make them equal.")
        self.ntoken, self.ninp, self.nhid, self.nlayers = ntoken, ninp, nhid, nlayers
        self.dropout, self.tie_weights = float(dropout), bool(tie_weights)
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout if nlayers > 1 else 0.0)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self._init_weights()
        self.vocab: list[str] | None = None
        self.vocab_sha256: str | None = None

    def _init_weights(self) -> None:
        # The classic example's uniform init: small embeddings train faster than N(0, 1).
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        if not self.tie_weights:
            nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    @property
    def compress_spec(self) -> dict[str, Any]:
        """``{"model": "word_lm", "args": {...}}``: enough to rebuild this architecture."""
        args: dict[str, Any] = {
            "ntoken": self.ntoken,
            "ninp": self.ninp,
            "nhid": self.nhid,
            "nlayers": self.nlayers,
            "dropout": self.dropout,
            "tie_weights": self.tie_weights,
        }
        if self.vocab_sha256:
            args["vocab_sha256"] = self.vocab_sha256
        return {"model": "word_lm", "args": args}

    def init_state(self, batch_size: int) -> State:
        """Zero ``(h, c)``, each ``[nlayers, batch_size, nhid]``, on the model's device and dtype."""
        shape = (self.nlayers, batch_size, self.nhid)
        device, dtype = model_device(self), model_dtype(self)
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)

    def forward(self, input: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits ``[T, B, ntoken]`` and the new ``(h, c)`` for token ids ``[T, B]``.

        Example:
            >>> logits, (h, c) = WordLM(20, 4, 4, 1)(torch.zeros(3, 2, dtype=torch.long))
            >>> tuple(logits.shape), tuple(h.shape)
            ((3, 2, 20), (1, 2, 4))
        """
        if state is None:
            # Explicit zeros rather than None: a converted ModularLSTM then sees the same inputs.
            state = self.init_state(input.size(1))
        emb = self.drop(self.encoder(input))
        output, state = self.rnn(emb, state)
        return self.decoder(self.drop(output)), state

    def _on_device(self, batch: Batch) -> Batch:
        device = model_device(self)
        data, targets = batch
        return data.to(device), targets.to(device)

    def forward_batch(self, batch: Batch, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Teacher-forced logits ``[T, B, V]`` of a ``(data, targets)`` batch and the detached state.

        Example:
            >>> x = torch.zeros(4, 2, dtype=torch.long)
            >>> WordLM(10, 4, 4, 1).forward_batch((x, x))[0].shape
            torch.Size([4, 2, 10])
        """
        data, _ = self._on_device(batch)
        self._check_ids(data)
        logits, state = self(data, state)
        return logits, (state[0].detach(), state[1].detach())

    def score_batch(self, batch: Batch, state: State | None = None) -> tuple[dict[str, tuple[float, int]], State]:
        """NLL sum (float64) and token count of one bptt chunk; pass the state on to the next chunk.

        Log-probabilities are computed in float32 from the model's logits (so a ``.half()``
        model's loss is not rounded to half precision) and summed in float64.

        Example:
            >>> m = WordLM(10, 4, 4, 1).eval()
            >>> x = torch.zeros(3, 2, dtype=torch.long)
            >>> (nll, n), _ = m.score_batch((x, x))[0]["all"], None
            >>> n
            6
        """
        _, targets = self._on_device(batch)
        self._check_ids(targets)
        with torch.no_grad():
            logits, state = self.forward_batch(batch, state)
            # Per-token log-probabilities in float32 (half logits are upcast first) are exact to
            # ~1e-7 relative; a float64 softmax over the whole vocabulary would double the cost of
            # scoring. The sum over tokens, where rounding accumulates, is float64.
            logp = F.log_softmax(logits.float(), dim=-1)
            nll = -logp.gather(-1, targets.unsqueeze(-1)).double().sum()
        return {"all": (float(nll), int(targets.numel()))}, state

    def training_loss(self, batch: Batch, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Mean NLL per token of one chunk (differentiable; what :meth:`score_batch` sums) and the state to carry.

        Example:
            >>> x = torch.zeros(3, 2, dtype=torch.long)
            >>> loss, _ = WordLM(10, 4, 4, 1).training_loss((x, x)); loss.requires_grad
            True
        """
        _, targets = self._on_device(batch)
        logits, state = self.forward_batch(batch, state)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1)), state

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.ntoken):
            raise ModelError(
                f"token id {int(ids.max())} is outside the model's vocabulary of {self.ntoken}: the dataset's "
                "vocabulary is not the one the model was trained with. Use the same max_vocab/min_count, or set "
                "the dataset's vocab_from_checkpoint to the model's checkpoint."
            )

    def check_data(self, data: Any) -> None:
        """Raise ModelError when ``data`` (a DataSource with ``vocab_sha256``) uses another vocabulary.

        Example:
            >>> class D: vocab_sha256 = "0" * 64
            >>> WordLM(10, 4, 4, 1).check_data(D())  # model without a vocabulary: nothing to check
        """
        theirs = getattr(data, "vocab_sha256", None)
        if self.vocab_sha256 and theirs and theirs != self.vocab_sha256:
            raise ModelError(
                f"the dataset's vocabulary (sha256 {theirs[:12]}..., {len(getattr(data, 'vocab', []))} tokens) is not "
                f"the model's (sha256 {self.vocab_sha256[:12]}..., {self.ntoken} tokens). Build the dataset with the "
                "max_vocab/min_count recorded in the model card, or set vocab_from_checkpoint."
            )

    # ------------------------------------------------------------------ autoregressive protocol
    generates = "words"  # compress/models/autoregressive.py: sequences are written as text

    def rollout_init(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, State]:
        """Random first tokens ``[1, B]`` drawn with ``generator`` and the zero state.

        Example:
            >>> x, (h, c) = WordLM(20, 4, 4, 2).rollout_init(3, torch.Generator().manual_seed(0))
            >>> tuple(x.shape), tuple(h.shape)
            ((1, 3), (2, 3, 4))
        """
        tokens = torch.randint(self.ntoken, (1, batch_size), generator=generator)
        return tokens.to(model_device(self)), self.init_state(batch_size)

    def rollout_step(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Logits ``[B, ntoken]`` of the token after ``inputs [1, B]``, and the new state.

        Example:
            >>> m = WordLM(20, 4, 4, 1).eval()
            >>> tuple(m.rollout_step(*m.rollout_init(2, torch.Generator()))[0].shape)
            (2, 20)
        """
        logits, state = self(inputs.to(model_device(self)), state)
        return logits[0], state

    def rollout_hidden(self, state: State) -> torch.Tensor:
        """Every layer's hidden state ``h`` per sequence, ``[B, nlayers * nhid]``.

        Example:
            >>> m = WordLM(20, 4, 4, 2)
            >>> tuple(m.rollout_hidden(m.init_state(3)).shape)
            (3, 8)
        """
        return state[0].transpose(0, 1).reshape(state[0].shape[1], -1)

    def sample_for_calibration(self, batch_size: int, steps: int, generator: torch.Generator) -> None:
        """Sample ``steps`` tokens autoregressively from random start tokens (no gradients).

        Start tokens and each next token are drawn with ``generator`` (on its device), so the
        same seed gives the same run.

        Example:
            >>> WordLM(10, 4, 4, 1).eval().sample_for_calibration(2, 3, torch.Generator().manual_seed(0))
        """
        gen_device = generator.device
        tokens = torch.randint(self.ntoken, (1, batch_size), generator=generator, device=gen_device)
        state = None
        with torch.no_grad():
            for _ in range(steps):
                logits, state = self.forward_batch((tokens, tokens), state)
                probs = F.softmax(logits[-1].double(), dim=-1).to(gen_device)
                tokens = torch.multinomial(probs, 1, generator=generator).t()


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    model: WordLM, path: str | Path, *, vocab: list[str], vocab_sha256: str, card: dict[str, Any] | None = None
) -> None:
    """Write ``model`` in the compress checkpoint format (atomically).

    Example:
        >>> save_checkpoint(WordLM(2, 4, 4, 1), "/tmp/lm.pt", vocab=["<unk>", "a"], vocab_sha256="")  # doctest: +SKIP
    """
    if len(vocab) != model.ntoken:
        raise ModelError(f"vocabulary has {len(vocab)} tokens but the model has ntoken={model.ntoken}.")
    args = {k: v for k, v in model.compress_spec["args"].items() if k != "vocab_sha256"}
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if model.tie_weights:
        # Keep one shared tensor so the file stores the tied matrix once.
        state_dict["decoder.weight"] = state_dict["encoder.weight"]
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "model": "word_lm",
        "args": args,
        "state_dict": state_dict,
        "vocab": list(vocab),
        "vocab_sha256": vocab_sha256,
        # A JSON round trip keeps only plain types: torch.load(weights_only=True) refuses others.
        "card": json.loads(json.dumps(card or {}, default=str)),
    }
    atomic_torch_save(ckpt, path)


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """``torch.load`` a checkpoint safely (weights only, CPU); errors name the path.

    Example:
        >>> load_checkpoint_file(SHIPPED_CHECKPOINT)["model"]  # doctest: +SKIP
        'word_lm'
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"word_lm checkpoint {path} does not exist; fix the path.")
    obj = load_weights(path, "checkpoint")
    if not isinstance(obj, dict):
        raise ModelError(f"word_lm checkpoint {path} holds a {type(obj).__name__}, not a dict or state dict.")
    return obj


def _merge_args(path: Path, ckpt: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    if ckpt.get("version") != 1 or ckpt.get("model") != "word_lm":
        raise ModelError(
            f"{path} is a compress checkpoint for model '{ckpt.get('model')}' version {ckpt.get('version')}, "
            "not word_lm version 1."
        )
    merged = dict(check_args(ckpt.get("args") or {}, _SCHEMA, path, "word_lm"))
    for key in _ARCH_KEYS:
        if key in args and key in merged and args[key] != merged[key]:
            raise ModelError(
                f"model arg {key}={args[key]!r} disagrees with checkpoint {path} ({key}={merged[key]!r}); "
                "drop it from the schedule (the checkpoint records its architecture)."
            )
    want = args.get("vocab_sha256")
    if want and want != ckpt.get("vocab_sha256"):
        raise ModelError(f"checkpoint {path} has vocabulary sha256 {ckpt.get('vocab_sha256')}, expected {want}.")
    merged.update({k: v for k, v in args.items() if k != "vocab_sha256"})
    return merged


def _build(args: dict[str, Any]) -> WordLM:
    if "ntoken" not in args:
        raise ModelError("word_lm needs 'ntoken' (vocabulary size) when no compress checkpoint provides it.")
    kwargs = {k: v for k, v in args.items() if k != "vocab_sha256"}
    return WordLM(**{"ninp": 200, "nhid": 200, "nlayers": 2, **kwargs})


def _checked_build(args: dict[str, Any], state_dict: Any, path: Path) -> WordLM:
    """The model of ``args`` with ``state_dict`` loaded, checked on the meta device first (sizes, shapes)."""
    check_args({k: v for k, v in args.items() if v is not None}, _SCHEMA, path, "word_lm")
    # A tied checkpoint stores decoder.weight too, as the same tensor: the meta model lists it as well.
    return check_and_build(lambda: _build(args), check_state_dict(state_dict, path), path)  # type: ignore[return-value]


def _vocab(ckpt: dict[str, Any], path: Path) -> list[str] | None:
    vocab = ckpt.get("vocab") or None
    if vocab is not None and (not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab)):
        raise ModelError(f"word_lm checkpoint {path}: 'vocab' must be a list of words.")
    return vocab


_SCHEMA = {
    "type": "object",
    "properties": {
        "ntoken": {
            "type": "integer",
            "minimum": 2,
            "maximum": 10_000_000,
            "description": "Vocabulary size (from the checkpoint if given).",
        },
        "ninp": {"type": "integer", "minimum": 1, "maximum": 16384, "description": "Embedding size (default 200)."},
        "nhid": {"type": "integer", "minimum": 1, "maximum": 16384, "description": "LSTM hidden size (default 200)."},
        "nlayers": {"type": "integer", "minimum": 1, "maximum": 16, "description": "LSTM layers (default 2)."},
        "dropout": {"type": "number", "minimum": 0, "maximum": 1, "description": "Dropout while training (default 0)."},
        "tie_weights": {"type": "boolean", "description": "Decoder shares the embedding matrix (default false)."},
        "vocab_sha256": {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "Fail unless the checkpoint's vocabulary has this fingerprint (default: no check).",
        },
    },
    "additionalProperties": False,
}


@MODELS.register("word_lm", schema=_SCHEMA, description="Word-level LSTM language model (embedding, LSTM, decoder).")
def word_lm(*, checkpoint: str | Path | None = None, **args: Any) -> WordLM:
    """Build a :class:`WordLM`, from a compress checkpoint, a plain state dict plus args, or args alone.

    Args:
        checkpoint: a compress checkpoint (architecture and vocabulary inside) or a plain
            state dict (then ``ntoken`` etc. must be given).
        **args: see the registered schema.

    Returns:
        The model in eval mode, with ``vocab``/``vocab_sha256`` set when the checkpoint has them.

    Example:
        >>> word_lm(checkpoint=SHIPPED_CHECKPOINT).ntoken  # doctest: +SKIP
        8000
        >>> word_lm(ntoken=30, ninp=8, nhid=8).nlayers
        2
    """
    if checkpoint is None:
        model = _build(args)
        model.vocab_sha256 = args.get("vocab_sha256")
        return model.eval()
    path = Path(checkpoint)
    ckpt = load_checkpoint_file(path)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        model = _checked_build(args, ckpt, path)  # a plain state dict: the args describe the architecture
        model.vocab_sha256 = args.get("vocab_sha256")
        return model.eval()
    model = _checked_build(_merge_args(path, ckpt, args), ckpt.get("state_dict"), path)
    model.vocab = _vocab(ckpt, path)
    sha = ckpt.get("vocab_sha256") or None
    model.vocab_sha256 = sha if isinstance(sha, str) else None
    return model.eval()


def perplexity(nll_sum: float, count: int) -> float:
    """``exp(nll_sum / count)``, the perplexity of summed scores (inf when the mean overflows).

    Example:
        >>> round(perplexity(math.log(4) * 3, 3), 6)
        4.0
    """
    mean = nll_sum / max(count, 1)
    return math.exp(mean) if mean < 700 else math.inf
