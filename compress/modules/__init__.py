"""Modules whose every internal op is addressable: modular RNNs and element-wise ops."""

from compress.modules.ops import Concat, EltwiseAdd, EltwiseMult

__all__ = ["Concat", "EltwiseAdd", "EltwiseMult"]
