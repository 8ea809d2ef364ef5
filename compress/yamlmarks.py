r"""YAML loaded safely, with the line and column of every node, for error messages that point at the file.

Example:
    >>> data, marks = parse_yaml("a:\n  b: [1, 2]\n", "x.yaml")
    >>> marks[("a", "b", 1)], format_path(("a", "b", 1))
    ((2, 10), 'a.b[1]')
"""

from __future__ import annotations

from typing import Any

import yaml

from compress.errors import ScheduleError

__all__ = ["Path_", "Marks", "parse_yaml", "format_path", "line_col", "where", "strip_key_marker"]

Path_ = tuple[Any, ...]
Marks = dict[Path_, tuple[int, int]]


def parse_yaml(text: str, source: str) -> tuple[Any, Marks]:
    """Safe-load ``text`` and map every YAML path to its (line, column), 1-based."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = exc.problem or str(exc)
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            what += f" ({exc.context} that starts at line {exc.context_mark.line + 1})"
        todo = "Fix the syntax at that line."
        if "could not determine a constructor" in str(exc):
            what += " (only plain YAML is accepted: tags such as !!python/object are refused for safety)"
            todo = "Remove the tag and write the value as plain YAML."
        raise ScheduleError(f"{where}: the file is not valid YAML: {what}. {todo}") from None
    except yaml.YAMLError as exc:
        raise ScheduleError(f"{source}: the file is not valid YAML: {exc}.") from None
    marks: Marks = {}
    if node is not None:
        _collect_marks(node, (), marks)
    return data, marks


def _collect_marks(node: yaml.Node, path: Path_, marks: Marks) -> None:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = _scalar_key(key_node)
            marks[path + (("key", key),)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _collect_marks(value_node, path + (key,), marks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _collect_marks(item, path + (i,), marks)


def _scalar_key(node: yaml.Node) -> Any:
    value = node.value
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int"):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def format_path(path: Path_) -> str:
    """``('quantizer', 'overrides', 2, 'bits')`` -> ``quantizer.overrides[2].bits``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def where(source: str, marks: Marks, path: Path_) -> str:
    line, col = line_col(marks, path)
    return f"{source}:{line}:{col}"


def line_col(marks: Marks, path: Path_) -> tuple[int, int]:
    while path not in marks and path:
        path = path[:-1]
    return marks.get(path, (1, 1))


def strip_key_marker(path: Path_) -> Path_:
    if path and isinstance(path[-1], tuple):
        return path[:-1] + (path[-1][1],)
    return path
