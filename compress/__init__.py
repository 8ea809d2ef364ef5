"""compress: declarative post-training quantization studies for recurrent models."""

__version__ = "0.1.0"
