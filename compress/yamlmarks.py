r"""Schedules read as YAML (safely, within bounds), with the line and column of every path for error messages.

Reading itself is :func:`compress.safeyaml.load_yaml` (limits on depth and aliases, no duplicate keys);
this module adds what error messages need: paths as text, and the location of a path (or of the nearest
enclosing path that has one, e.g. the alias a value came through).

Example:
    >>> data, marks = parse_yaml("a:\n  b: [1, 2]\n", "x.yaml")
    >>> marks[("a", "b", 1)], format_path(("a", "b", 1))
    ((2, 10), 'a.b[1]')
"""

from __future__ import annotations

from typing import Any

from compress.errors import ScheduleError
from compress.safeyaml import Marks, Path_, format_path, load_yaml

__all__ = ["Path_", "Marks", "parse_yaml", "format_path", "line_col", "where", "strip_key_marker"]


def parse_yaml(text: str, source: str) -> tuple[Any, Marks]:
    """Safe-load ``text`` and map every YAML path to its (line, column), 1-based.

    Raises:
        ScheduleError: invalid YAML, a refused tag or character, a duplicate key, too deep or too many aliases.
    """
    return load_yaml(text, source, ScheduleError)


def where(source: str, marks: Marks, path: Path_) -> str:
    """``file:line:col`` of ``path`` (or of its nearest located parent)."""
    line, col = line_col(marks, path)
    return f"{source}:{line}:{col}"


def line_col(marks: Marks, path: Path_) -> tuple[int, int]:
    """The (line, column) of ``path``, or of its nearest parent that has one."""
    while path not in marks and path:
        path = path[:-1]
    return marks.get(path, (1, 1))


def strip_key_marker(path: Path_) -> Path_:
    """A key's path (``(..., ("key", k))``) as the plain path of that key."""
    if path and isinstance(path[-1], tuple):
        return path[:-1] + (path[-1][1],)
    return path
