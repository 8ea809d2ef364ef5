"""Tensor operations as modules, so hooks can observe them and quantizers can replace them.

Example:
    >>> import torch
    >>> EltwiseAdd()(torch.ones(2), torch.ones(2))
    tensor([2., 2.])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EltwiseAdd", "EltwiseMult", "Concat", "OneMinus"]


class EltwiseAdd(nn.Module):
    """Element-wise sum of any number of same-shaped (or broadcastable) inputs."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


class EltwiseMult(nn.Module):
    """Element-wise product of any number of inputs."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x
        return out


class Concat(nn.Module):
    """Concatenation of the inputs along ``dim``."""

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class OneMinus(nn.Module):
    """``1 - x``, the complement of a gate (the GRU's ``1 - z``), as a module so it can be observed.

    Example:
        >>> OneMinus()(torch.tensor([0.25, 1.0]))
        tensor([0.7500, 0.0000])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1 - x
