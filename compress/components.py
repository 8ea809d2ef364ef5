"""Import every built-in component package so that their registrations run.

A stage package that is not there yet (during development) is simply not registered; an
import error inside one that is there is a real bug and propagates.
"""

from __future__ import annotations

import importlib
import importlib.util

__all__ = ["BUILTIN_PACKAGES"]

BUILTIN_PACKAGES = (
    "compress.modules",
    "compress.stats",
    "compress.quant",
    "compress.models",
    "compress.data",
    "compress.evaluate",
)

for _name in BUILTIN_PACKAGES:
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)
