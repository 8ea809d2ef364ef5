"""compress: declarative post-training quantization studies for recurrent models.

Run a study from a schedule file (``python -m compress schedules/perf_rnn.yaml``) or use
the same components from Python::

    import compress
    model = compress.build_model("performance_rnn", checkpoint=compress.checkpoint_path("perf_rnn_lstm.pt"))
    model, replaced = compress.convert_rnns(model)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it; imported on first use so `import compress` stays light.
_LAZY = {
    "run": "compress.api",
    "build_model": "compress.api",
    "build_dataset": "compress.api",
    "checkpoint_path": "compress.api",
    "load_schedule": "compress.schedule",
    "convert_rnns": "compress.modules",
    "ModularLSTM": "compress.modules",
    "ModularGRU": "compress.modules",
    "collect_stats": "compress.stats",
    "load_stats": "compress.stats",
    "apply_edits": "compress.stats",
    "PostTrainLinearQuantizer": "compress.quant",
    "evaluate_perplexity": "compress.evaluate",
    "evaluate_rollout": "compress.evaluate",
    "generate": "compress.api",
    "save_quantized": "compress.quant",
    "load_quantized": "compress.quant",
    "model_device": "compress.utils",
    "model_dtype": "compress.utils",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import compress.components  # noqa: F401  (register built-ins before anything is used)

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compress' has no attribute '{name}'")
