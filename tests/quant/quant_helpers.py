"""Small models and a tiny stats collector for the quantizer tests (no dependency on compress.stats)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compress.modules import convert_rnns


class TinyLM(nn.Module):
    """Embedding -> 2-layer LSTM (or GRU) -> Linear decoder, optionally tied (the word LM's shape)."""

    def __init__(self, vocab: int = 40, width: int = 12, tied: bool = False, rnn: str = "lstm") -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, width)
        self.rnn = (nn.LSTM if rnn == "lstm" else nn.GRU)(width, width, num_layers=2)
        self.drop = nn.Dropout(0.1)
        self.decoder = nn.Linear(width, vocab)
        if tied:
            self.decoder.weight = self.encoder.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(self.drop(self.encoder(x)))
        return self.decoder(self.drop(y))


def converted_lm(seed: int = 0, **kwargs: Any) -> nn.Module:
    """A seeded :class:`TinyLM` with its RNN converted to the modular form, in eval mode."""
    torch.manual_seed(seed)
    model, _ = convert_rnns(TinyLM(**kwargs))
    return model.eval()


def tokens(seed: int = 1, steps: int = 9, batch: int = 4, vocab: int = 40) -> torch.Tensor:
    return torch.randint(0, vocab, (steps, batch), generator=torch.Generator().manual_seed(seed))


def tensor_record(values: list[torch.Tensor]) -> dict[str, float]:
    """The old tool's record over a list of observed tensors (per-sample extremes along dim 0)."""
    flat = torch.cat([v.detach().to(torch.float64).reshape(-1) for v in values])
    per_sample = [v.detach().to(torch.float64).reshape(v.shape[0] if v.dim() > 1 else 1, -1) for v in values]
    mins = torch.cat([p.min(1).values for p in per_sample])
    maxs = torch.cat([p.max(1).values for p in per_sample])
    mean = flat.mean()
    return {
        "min": float(flat.min()),
        "max": float(flat.max()),
        "avg_min": float(mins.mean()),
        "avg_max": float(maxs.mean()),
        "mean": float(mean),
        "std": float(flat.std(unbiased=False)),
        "b": float((flat - mean).abs().mean()),
    }


def collect_stats(model: nn.Module, run: Callable[[nn.Module], Any]) -> dict[str, Any]:
    """Stats of every leaf's float inputs and output during ``run(model)``."""
    seen: dict[str, dict[str, Any]] = {}

    def hook(name: str, inputs: tuple, output: Any) -> None:
        entry = seen.setdefault(name, {"inputs": {}, "output": []})
        for i, x in enumerate(inputs):
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                entry["inputs"].setdefault(i, []).append(x)
        if isinstance(output, torch.Tensor):
            entry["output"].append(output)

    handles = [
        m.register_forward_hook(lambda _m, i, o, n=n: hook(n, i, o))
        for n, m in model.named_modules()
        if n and not list(m.children())
    ]
    with torch.no_grad():
        run(model)
    for h in handles:
        h.remove()
    return {
        n: {"inputs": {i: tensor_record(v) for i, v in e["inputs"].items()}, "output": tensor_record(e["output"])}
        for n, e in seen.items()
        if e["output"]
    }
