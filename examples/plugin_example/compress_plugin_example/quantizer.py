"""A weight-only quantizer: every Linear/Embedding weight rounded to a power-of-two grid.

It shows the whole quantizer contract of docs/ARCHITECTURE.md: a plan, a quantized deep copy whose
wrappers report their deployed size (``deployed_weight_bytes``), and per-layer rows with SQNR measured
against the study's shared float reference.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compress.quant import FloatReference
from compress.quant.quantizer import module_paths, replace_module
from compress.quant.records import capture_outputs, sqnr_by_layer
from compress.registry import QUANTIZERS

SCHEMA = {
    "type": "object",
    "properties": {"bits": {"type": "integer", "minimum": 2, "maximum": 16, "description": "Weight bits. Default 8."}},
    "additionalProperties": False,
}


def pow2_quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, float]:
    """Round ``w`` to ``step * k`` with ``step`` a power of two covering max|w| in ``bits`` signed bits."""
    qmax = 2 ** (bits - 1) - 1
    max_abs = float(w.abs().max())
    step = 2.0 ** math.ceil(math.log2(max_abs / qmax)) if max_abs > 0 else 1.0
    return torch.clamp(torch.round(w / step), -qmax - 1, qmax) * step, step


class Pow2Weights(nn.Module):
    """Runs the wrapped Linear/Embedding with its weight rounded to the grid; reports the deployed size."""

    def __init__(self, inner: nn.Module, bits: int) -> None:
        super().__init__()
        self.inner, self.bits = inner, bits
        with torch.no_grad():
            rounded, self.step = pow2_quantize(inner.weight, bits)
            inner.weight.copy_(rounded)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)

    def deployed_weight_bytes(self, seen: set[int]) -> int:
        """``bits`` per weight plus one exponent byte; the bias is left to the engine (counted as stored)."""
        seen.add(id(self.inner.weight))
        return math.ceil(self.inner.weight.numel() * self.bits / 8) + 1


@QUANTIZERS.register("pow2_weights", schema=SCHEMA, description="Weight-only power-of-two rounding (example plugin).")
class Pow2WeightQuantizer:
    """Weight-only rounding to a power-of-two step, per tensor; activations stay float."""

    uses_stats = False  # weight-only: the engine collects no calibration statistics for it

    def __init__(self, model: nn.Module, stats: Any = None, bits: int = 8) -> None:
        self.model, self.bits = model, bits
        self.log: list[str] = []  # optional: lines copied into the report under this experiment

    def _targets(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]

    def resolve_plan(self) -> list[dict[str, Any]]:
        """One row per rounded layer (plugins may return dicts; the built-ins return LayerPlan objects)."""
        return [
            {"module": n, "type": type(m).__name__, "rule": None, "bits": f"w{self.bits}"}
            for n, m in self._targets(self.model)
        ]

    def prepare_model(self) -> nn.Module:
        """A deep copy with every target wrapped at its own path (names unchanged, so SQNR hooks pair up)."""
        q = copy.deepcopy(self.model)
        paths, targets = module_paths(q), self._targets(q)
        for _name, m in targets:
            replace_module(paths, m, Pow2Weights(m, self.bits))
        self.log = [f"weights of {len(targets)} layers rounded to {self.bits}-bit power-of-two grids"]
        return q

    def layer_records(
        self, run: Callable[[nn.Module], None], reference: FloatReference | None = None
    ) -> list[dict[str, Any]]:
        """Rows with the step and the SQNR of each layer's output against the float model on one batch."""
        names = [n for n, _ in self._targets(self.model)]
        qmodel = self.prepare_model().eval()
        outputs = reference.outputs(names) if reference is not None else capture_outputs(self.model, names, run)
        sqnr = sqnr_by_layer(outputs, qmodel, run)
        modules = dict(qmodel.named_modules())
        return [
            {
                "module": n,
                "type": type(self.model.get_submodule(n)).__name__,
                "bits": f"w{self.bits}",
                "weight_step": modules[n].step,
                "sqnr_db": sqnr[n][0],
                "calls": sqnr[n][1],
            }
            for n in names
        ]
