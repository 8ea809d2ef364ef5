"""Range-linear post-training quantization: pure math, clip modes, wrappers, plan, quantizers."""

from compress.quant import primitives

__all__ = ["primitives"]
