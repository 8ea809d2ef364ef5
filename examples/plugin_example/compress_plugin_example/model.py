"""A character-level GRU language model that trains itself briefly (seeded) when built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.registry import MODELS
from compress.utils import model_device
from compress_plugin_example.data import DEFAULT_TEXT, VOCAB, encode

SCHEMA = {
    "type": "object",
    "properties": {
        "hidden": {"type": "integer", "minimum": 4, "maximum": 1024},
        "train_steps": {"type": "integer", "minimum": 0, "maximum": 5000},
        "seed": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}


class CharGRU(nn.Module):
    """Embedding -> GRU -> Linear over :data:`VOCAB`, implementing compress's sequence-model protocol."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), hidden)
        self.rnn = nn.GRU(hidden, hidden)
        self.head = nn.Linear(hidden, len(VOCAB))
        self.compress_spec = {"model": "char_gru", "args": {"hidden": hidden}}

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out, h = self.rnn(self.embed(x), h)
        return self.head(out), h

    def forward_batch(self, batch: Any, state: Any = None) -> tuple[torch.Tensor, Any]:
        # model_device, not self.head.weight: in a quantized copy `head` may be a wrapper without `.weight`.
        return self(batch[0].to(model_device(self)), state)

    def score_batch(self, batch: Any, state: Any = None) -> tuple[dict[str, tuple[float, int]], Any]:
        logits, h = self.forward_batch(batch, None)
        y = batch[1].to(logits.device)
        nll = F.cross_entropy(logits.double().flatten(0, 1), y.flatten(), reduction="sum")
        return {"all": (float(nll), y.numel())}, h

    def sample_for_calibration(self, batch_size: int, steps: int, generator: torch.Generator) -> None:
        """Optional: only the ``generate`` statistics source calls it (greedy decoding from random characters)."""
        x = torch.randint(len(VOCAB), (1, batch_size), generator=generator)
        h = None
        for _ in range(steps):
            logits, h = self(x.to(model_device(self)), h)
            x = logits.argmax(-1).cpu()


def _train(model: CharGRU, steps: int, seed: int) -> None:
    ids = encode(DEFAULT_TEXT.read_text(encoding="utf-8"))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        starts = torch.randint(len(ids) - 33, (16,), generator=gen)
        x = torch.stack([ids[s : s + 32] for s in starts]).t()
        y = torch.stack([ids[s + 1 : s + 33] for s in starts]).t()
        loss = F.cross_entropy(model(x)[0].flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


@MODELS.register(
    "char_gru", schema=SCHEMA, description="Character GRU LM, trained briefly and deterministically at build."
)
def build_char_gru(
    *, checkpoint: Path | None = None, hidden: int = 64, train_steps: int = 100, seed: int = 0
) -> CharGRU:
    torch.manual_seed(seed)
    model = CharGRU(hidden)
    # Loading an exported .qpt artifact calls this factory again with checkpoint=None (the artifact holds the
    # weights): keep that call cheap and deterministic. Here it retrains briefly, which is seeded.
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    else:
        _train(model, train_steps, seed)
    return model.eval()
