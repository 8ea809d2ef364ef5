"""Tiny models and data sources for the stats tests (hand-checkable numbers, no downloads)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from compress.modules.ops import EltwiseAdd, EltwiseMult


class Echo(nn.Module):
    """A leaf that returns its first input, so its input and output statistics are the data's."""

    def forward(self, *args: Any) -> Any:
        return next(a for a in args if isinstance(a, torch.Tensor))


class EchoModel(nn.Module):
    """``echo`` wrapped in a container (containers are not observed)."""

    def __init__(self) -> None:
        super().__init__()
        self.echo = Echo()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.echo(x)


class PairSum(nn.Module):
    """A leaf taking a tuple of tensors, an int and None: forward((a, b), 3, None) -> a + b."""

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor], n: int, nothing: None) -> torch.Tensor:
        return pair[0] + pair[1]


class TinyCell(nn.Module):
    """A minimal recurrent cell made of leaf modules that run once per time step."""

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.fc_x = nn.Linear(size, size)
        self.fc_h = nn.Linear(size, size)
        self.add = EltwiseAdd()
        self.act = nn.Tanh()
        self.mult = EltwiseMult()
        self.skipped = nn.Identity()
        g = torch.Generator().manual_seed(0)
        for p in self.parameters():
            nn.init.uniform_(p, -0.8, 0.8, generator=g)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.mult(self.act(self.add(self.fc_x(x), self.fc_h(self.skipped(h)))), x)


class TinyRNN(nn.Module):
    """Runs ``cell`` over dim 0 of a [T, B, F] input; ``unused`` never runs."""

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.cell = TinyCell(size)
        self.unused = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(x[0])
        for t in range(x.shape[0]):
            h = self.cell(x[t], h)
        return h


class ScoringModel(nn.Module):
    """Sequence-model protocol over TinyRNN: score_batch carries a hidden state, sampling uses a generator."""

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.rnn = TinyRNN(size)
        self.head = nn.Linear(size, size)
        g = torch.Generator().manual_seed(1)
        for p in self.head.parameters():
            nn.init.uniform_(p, -0.8, 0.8, generator=g)
        self.size = size
        self.states_seen: list[Any] = []

    def score_batch(self, batch: torch.Tensor, state: Any = None) -> tuple[dict[str, tuple[float, int]], Any]:
        self.states_seen.append(state)
        out = self.head(self.rnn(batch))
        return {"all": (float(out.double().sum()), out.numel())}, (state or 0) + 1

    def sample_for_calibration(self, batch_size: int, steps: int, generator: torch.Generator) -> None:
        x = torch.randn(steps, batch_size, self.size, generator=generator)
        self.head(self.rnn(x))


class ListData:
    """A DataSource over fixed lists of batches (deterministic, as the contract requires)."""

    def __init__(self, calibration: list[torch.Tensor]) -> None:
        self.calibration = calibration

    def batches(self, split: str) -> Iterator[torch.Tensor]:
        return iter(self.calibration if split == "calibration" else [])

    def num_batches(self, split: str) -> int:
        return len(self.calibration) if split == "calibration" else 0

    def describe(self) -> str:
        return f"{len(self.calibration)} calibration batches"


def random_batches(n: int, seed: int = 0, t: int = 4, b: int = 2, f: int = 3) -> list[torch.Tensor]:
    """``n`` seeded [T, B, F] batches with unequal scales per batch."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, b, f, generator=g) * (1 + i) + i for i in range(n)]
