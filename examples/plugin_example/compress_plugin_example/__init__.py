"""Example compress plugin: a model, a dataset, a quantizer and an evaluator, registered by name.

Installing this package (``pip install -e examples/plugin_example``) adds it to the
``compress.plugins`` entry-point group, so ``python -m compress --list`` shows
``char_gru``, ``char_text``, ``pow2_weights`` and ``char_accuracy`` and a schedule can name them.
Without installing it, a schedule's ``plugins: [compress_plugin_example]`` imports it from the path.
"""

from compress_plugin_example.data import CharText
from compress_plugin_example.evaluate import char_accuracy
from compress_plugin_example.model import CharGRU
from compress_plugin_example.quantizer import Pow2WeightQuantizer, Pow2Weights

__all__ = ["CharGRU", "CharText", "Pow2WeightQuantizer", "Pow2Weights", "char_accuracy"]
