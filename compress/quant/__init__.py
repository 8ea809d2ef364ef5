"""Range-linear post-training quantization: pure math, clip modes, wrappers, plan, quantizers.

Importing this package registers the quantizers ``post_train_linear`` and ``cast``.
"""

from compress.quant.artifact.export import load_quantized, save_quantized
from compress.quant.cast import CastQuantizer
from compress.quant.config.plan import LayerPlan, resolve_plan
from compress.quant.numerics import primitives
from compress.quant.numerics.clipping import ClipMode, aciq_alpha, clip_range
from compress.quant.numerics.primitives import QuantMode
from compress.quant.quantizer import PostTrainLinearQuantizer
from compress.quant.records import FloatReference
from compress.quant.wrappers.factory import is_wrapper

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
