"""Example compress plugin: one model, one dataset and one quantizer, registered by name.

Installing this package (``pip install -e examples/plugin_example``) adds it to the
``compress.plugins`` entry-point group, so ``python -m compress --list`` shows
``char_gru``, ``char_text`` and ``pow2_weights`` and a schedule can name them.
"""

from compress_plugin_example.data import CharText
from compress_plugin_example.model import CharGRU
from compress_plugin_example.quantizer import Pow2WeightQuantizer

__all__ = ["CharGRU", "CharText", "Pow2WeightQuantizer"]
