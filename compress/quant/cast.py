"""``cast`` quantizer: the whole model in float16 / bfloat16 / float32 (the notebook's ``model.half()``).

Example:
    >>> from torch import nn
    >>> q = CastQuantizer(nn.Sequential(nn.Linear(2, 2)), dtype="bfloat16")
    >>> next(q.prepare_model().parameters()).dtype
    torch.bfloat16
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from compress.errors import QuantizationError
from compress.quant.config.plan import LayerPlan, plan_leaves
from compress.quant.config.schema import CAST_SCHEMA
from compress.quant.quantizer import run_records
from compress.quant.records import FloatReference
from compress.registry import QUANTIZERS

__all__ = ["CastQuantizer"]

_DTYPES = {"float16": (torch.float16, "fp16"), "bfloat16": (torch.bfloat16, "bf16"), "float32": (torch.float32, "fp32")}


@QUANTIZERS.register("cast", schema=CAST_SCHEMA, description="The whole model cast to float16/bfloat16/float32.")
class CastQuantizer:
    """Deep-copies the model and casts every floating parameter and buffer to ``dtype``.

    The model's ``forward_batch``/``score_batch`` cast float inputs to the model's dtype (sequence
    model protocol), so the copy runs end to end in that precision.

    Args:
        model: the float model (never modified).
        stats: unused (accepted so every quantizer has the same constructor).
        dtype: ``float16`` (default), ``bfloat16`` or ``float32``.

    Example:
        >>> CastQuantizer(nn.Sequential(nn.Tanh())).resolve_plan()[0].kind
        'float'
    """

    uses_stats = False  # a cast needs no calibration: the engine collects none for it

    def __init__(self, model: nn.Module, stats: Mapping[str, Any] | None = None, dtype: str = "float16") -> None:
        if dtype not in _DTYPES:
            raise QuantizationError(f"cast: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}.")
        self.model, self.stats, self.dtype = model, stats, dtype
        self.log: list[str] = []

    def resolve_plan(self) -> list[LayerPlan]:
        """One row per leaf module, all of kind ``float`` in the chosen precision.

        Example:
            >>> CastQuantizer(nn.Sequential(nn.Linear(1, 1))).resolve_plan()[0].settings
            {'precision': 'fp16'}
        """
        precision = _DTYPES[self.dtype][1]
        return [
            LayerPlan(name, type(m).__name__, None, "", "float", {"precision": precision})
            for name, m in plan_leaves(self.model)
        ]

    def prepare_model(self) -> nn.Module:
        """A cast deep copy of the model.

        Example:
            >>> next(CastQuantizer(nn.Sequential(nn.Linear(1, 1))).prepare_model().parameters()).dtype
            torch.float16
        """
        return copy.deepcopy(self.model).to(_DTYPES[self.dtype][0])

    def layer_records(
        self, run: Callable[[nn.Module], None], reference: FloatReference | None = None
    ) -> list[dict[str, Any]]:
        """Per-layer rows with the SQNR of each module's output against the float model.

        Args:
            run: pushes one calibration batch through the model it is given.
            reference: the float model's outputs on that batch, shared across quantizers; None captures them.

        Example:
            >>> rows = CastQuantizer(nn.Sequential(nn.Tanh())).layer_records(lambda m: m(torch.ones(2)))
            >>> rows[0]["bits"], rows[0]["calls"]
            ('fp16', 1)
        """
        return run_records(self.model, self.prepare_model(), self.resolve_plan(), run, reference)
