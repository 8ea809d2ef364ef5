"""Import every built-in component package so that their registrations run.

Kept separate from ``compress/__init__.py`` so that ``import compress`` stays light; the CLI, the
Python API and the tests import this module before looking anything up in a registry.
"""

from __future__ import annotations

import compress.data  # noqa: F401
import compress.evaluate  # noqa: F401
import compress.models  # noqa: F401
import compress.modules  # noqa: F401
import compress.quant  # noqa: F401
import compress.stats  # noqa: F401

__all__: list[str] = []
