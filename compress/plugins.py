"""Plugins: modules imported because an entry point or a schedule names them, and nothing else.

Example:
    >>> load_plugins(["json"])  # any importable module name
    ['json']
"""

from __future__ import annotations

import importlib
import importlib.metadata
import traceback

from compress.errors import PluginError

__all__ = ["ENTRY_POINT_GROUP", "load_entry_point_plugins", "load_plugins"]

ENTRY_POINT_GROUP = "compress.plugins"
_loaded_entry_points = False


def load_plugins(modules: list[str], *, origin: str = "the schedule's plugins list") -> list[str]:
    """Import each named module; a failure is a :class:`PluginError` naming it."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import-time failure of user code
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            raise PluginError(
                f"Plugin module '{name}' (from {origin}) failed to import: {last}. "
                "Check that it is installed in this environment (pip install -e <its folder>) and imports cleanly."
            ) from exc
    return list(modules)


def load_entry_point_plugins() -> list[str]:
    """Import every module registered in the ``compress.plugins`` entry-point group, once."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return []
    names = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:
            raise PluginError(
                f"Plugin '{ep.name}' (entry point {ep.value} in group {ENTRY_POINT_GROUP}) failed to import: "
                f"{type(exc).__name__}: {exc}. Reinstall or uninstall the package that provides it."
            ) from exc
        names.append(ep.value)
    _loaded_entry_points = True
    return names
