"""From a post-training quantized model to its trainable form, and back to the same integer semantics.

:func:`thaw` builds the model that is trained: a copy of the float model in which every module that the
quantized model wraps is replaced by its straight-through stand-in (compress/finetune/ste.py), carrying
the wrapper's grids. :func:`float_weights` takes the stand-ins out again, leaving the fine-tuned float
model; :func:`freeze` reruns the experiment's own quantizer on it, with the experiment's statistics, so
the result is a post-training quantized model like any other: the same wrappers, integer kernels, fused
loops, export format and per-layer report, describing the fine-tuned weights' grids.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from compress.quant import PostTrainLinearQuantizer
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    >>> rec = {"min": -1.0, "max": 1.0}
    >>> stats = {"0": {"inputs": {0: rec}, "output": rec}, "1": {"inputs": {0: rec}, "output": rec}}
    >>> trainable = thaw(model, PostTrainLinearQuantizer(model, stats).prepare_model())
    >>> [type(m).__name__ for m in trainable]
    ['LinearSTE', 'FakeSTE']
    >>> [type(m).__name__ for m in float_weights(trainable)]
    ['Linear', 'Tanh']
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from compress.finetune.ste import STEOp, forget_weights, ste_op_for
from compress.quant.quantizer import module_paths, replace_module
from compress.quant.wrappers.factory import is_wrapper

__all__ = ["thaw", "float_weights", "freeze"]


def thaw(float_model: nn.Module, qmodel: nn.Module) -> nn.Module:
    """A copy of ``float_model`` with every module ``qmodel`` wraps replaced by its STE stand-in (example above)."""
    model = copy.deepcopy(float_model)
    modules, paths = dict(model.named_modules()), module_paths(model)
    for name, wrapper in qmodel.named_modules():
        if is_wrapper(wrapper) and name in modules:
            replace_module(paths, modules[name], ste_op_for(modules[name], wrapper))
    return model


def float_weights(trained: nn.Module) -> nn.Module:
    """A copy of ``trained`` with every stand-in replaced by its float module: the fine-tuned float model."""
    forget_weights(trained)  # the last step's fake-quantized weights belong to its graph: not copied
    model = copy.deepcopy(trained)
    paths = module_paths(model)
    for ste in [m for m in model.modules() if isinstance(m, STEOp)]:
        replace_module(paths, ste, ste.module)
    return model.eval()


def freeze(trained: nn.Module, requantize: Callable[[nn.Module], Any]) -> tuple[Any, nn.Module]:
    """The experiment's quantizer on the fine-tuned float model, and its quantized model (``prepare_model``).

    Activation grids come from the experiment's calibration statistics, as during training; weight grids
    from the fine-tuned weights' own ranges, as the training forward computed them.
    """
    quantizer = requantize(float_weights(trained))
    return quantizer, quantizer.prepare_model().eval()
