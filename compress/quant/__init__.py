"""Range-linear post-training quantization: pure math, clip modes, wrappers, plan, quantizers.

Importing this package registers the quantizers ``post_train_linear`` and ``cast``.
"""

from compress.quant import primitives
from compress.quant.cast import CastQuantizer
from compress.quant.clipping import ClipMode, aciq_alpha, clip_range
from compress.quant.export import load_quantized, save_quantized
from compress.quant.plan import LayerPlan, resolve_plan
from compress.quant.primitives import QuantMode
from compress.quant.quantizer import PostTrainLinearQuantizer
from compress.quant.records import FloatReference
from compress.quant.wrappers import is_wrapper

__all__ = [
    "primitives",
    "CastQuantizer",
    "ClipMode",
    "FloatReference",
    "LayerPlan",
    "PostTrainLinearQuantizer",
    "QuantMode",
    "aciq_alpha",
    "clip_range",
    "is_wrapper",
    "load_quantized",
    "resolve_plan",
    "save_quantized",
]
