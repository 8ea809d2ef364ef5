"""Register every built-in component now (the shared registries also do it on their first lookup).

Kept separate from ``compress/__init__.py`` so that ``import compress`` stays light. Importing it is the
explicit form of what :func:`compress.registry.load_builtins` does.
"""

from __future__ import annotations

from compress.registry import load_builtins

load_builtins()

__all__: list[str] = []
