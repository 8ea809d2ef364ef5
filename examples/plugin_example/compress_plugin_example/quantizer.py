"""A weight-only quantizer: every Linear/Embedding weight rounded to a power-of-two grid."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compress.registry import QUANTIZERS

SCHEMA = {
    "type": "object",
    "properties": {"bits": {"type": "integer", "minimum": 2, "maximum": 16}},
    "additionalProperties": False,
}


def pow2_quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, float]:
    """Round ``w`` to ``step * k`` with ``step`` a power of two covering max|w| in ``bits`` signed bits."""
    qmax = 2 ** (bits - 1) - 1
    max_abs = float(w.abs().max())
    step = 2.0 ** math.ceil(math.log2(max_abs / qmax)) if max_abs > 0 else 1.0
    return torch.clamp(torch.round(w / step), -qmax - 1, qmax) * step, step


@QUANTIZERS.register("pow2_weights", schema=SCHEMA, description="Weight-only power-of-two rounding (example plugin).")
class Pow2WeightQuantizer:
    """Weight-only rounding to a power-of-two step, per tensor; activations stay float."""

    def __init__(self, model: nn.Module, stats: Any = None, bits: int = 8) -> None:
        self.model, self.bits, self.steps = model, bits, {}

    def _targets(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]

    def resolve_plan(self) -> list[dict[str, Any]]:
        return [
            {"module": n, "type": type(m).__name__, "rule": None, "bits_weights": self.bits}
            for n, m in self._targets(self.model)
        ]

    def prepare_model(self) -> nn.Module:
        q = copy.deepcopy(self.model)
        with torch.no_grad():
            for name, m in self._targets(q):
                m.weight.copy_(pow2_quantize(m.weight, self.bits)[0])
                self.steps[name] = pow2_quantize(self.model.get_submodule(name).weight, self.bits)[1]
        return q

    def layer_records(self, run: Callable[[nn.Module], None]) -> list[dict[str, Any]]:
        return [
            {"module": n, "type": type(m).__name__, "bits": self.bits, "weight_step": self.steps.get(n)}
            for n, m in self._targets(self.model)
        ]
