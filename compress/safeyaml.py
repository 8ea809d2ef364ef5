r"""YAML read safely and within bounds: plain data only, every node located, no surprise in size or depth.

``yaml.safe_load`` refuses tags that run code, but it still accepts inputs that make a reader hang or
exhaust memory: a value nested hundreds of levels deep, an anchor used inside itself (a recursive
structure that every later walk follows forever) and "alias bombs" (nine aliases of nine aliases of ...:
1 KB of text that expands to hundreds of millions of nodes). :func:`load_yaml` composes the document
once, with a depth limit, a budget of nodes that aliases may add, a refusal of recursive anchors and of
duplicate keys (YAML keeps the last one silently), and records the (line, column) of every path on the
way, without expanding aliases (a path inside an alias is located at the alias).

Example:
    >>> data, marks = load_yaml("a:\n  b: [1, 2]\n", "x.yaml")
    >>> data, marks[("a", "b", 1)]
    ({'a': {'b': [1, 2]}}, (2, 10))
    >>> try:
    ...     load_yaml("a: 1\na: 2\n", "x.yaml")
    ... except CompressError as e:
    ...     print(e)
    x.yaml:2:1: a: the key 'a' is given twice (lines 1 and 2); YAML would keep only the last one. Remove one of them.
"""

from __future__ import annotations

from typing import Any

import yaml

from compress.errors import CompressError

__all__ = ["Path_", "Marks", "MAX_DEPTH", "MAX_ALIAS_NODES", "decode_text", "load_yaml", "format_path"]

Path_ = tuple[Any, ...]
Marks = dict[Path_, tuple[int, int]]

# Schedules and statistics files are at most ~8 levels deep; 64 leaves room without letting a deep value
# reach Python's recursion limit in the walks that follow (the schema validator, deepcopy, json).
MAX_DEPTH = 64
# Nodes that aliases may add to a document (the expansion a reader following every alias sees).
MAX_ALIAS_NODES = 10_000


class _Refused(Exception):
    """A limit hit while composing: where and what (turned into the caller's error with the file name)."""

    def __init__(self, mark: Any, path: Path_, message: str) -> None:
        super().__init__(message)
        self.mark, self.path, self.message = mark, path, message


def _key_of(node: yaml.Node) -> Any:
    """The path part of a mapping key: an int for integer keys, else the scalar text."""
    if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":int"):
        try:
            return int(node.value)
        except ValueError:
            return node.value
    return node.value if isinstance(node, yaml.ScalarNode) else "<complex key>"


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer enforces the limits and collects the marks."""

    def __init__(self, text: str, alias_budget: int) -> None:
        super().__init__(text)
        self.node_marks: Marks = {}
        self._stack: list[Path_] = []
        self._open: set[str] = set()  # anchors whose node is being composed: an alias to one is recursive
        self._alias_nodes = 0
        self._budget = alias_budget

    def _mark(self, mark: Any) -> tuple[int, int]:
        return (mark.line + 1, mark.column + 1)

    def compose_node(self, parent: Any, index: Any) -> Any:
        is_key = isinstance(parent, yaml.MappingNode) and index is None
        base = self._stack[-1] if self._stack else ()
        if parent is None or is_key:
            path = base
        else:
            path = base + (_key_of(index) if isinstance(index, yaml.Node) else index,)
        self._stack.append(path)
        try:
            return self._compose_at(parent, index, path, is_key)
        finally:
            self._stack.pop()

    def _compose_at(self, parent: Any, index: Any, path: Path_, is_key: bool) -> Any:
        event = self.peek_event()
        if len(self._stack) > MAX_DEPTH:
            raise _Refused(  # the path is cut short: the message stays one line
                event.start_mark, path[:6], f"the value is nested more than {MAX_DEPTH} levels deep; flatten it."
            )
        if not is_key:
            self.node_marks[path] = self._mark(event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            return self._compose_alias(event, path, parent, index)
        if event.anchor is not None:
            self._open.add(event.anchor)
        node = super().compose_node(parent, index)
        self._open.discard(event.anchor)
        node.expanded = 1 + sum(_expanded(child) for child in _children(node))
        if isinstance(node, yaml.MappingNode):
            self._check_keys(node, path)
        return node

    def _compose_alias(self, event: Any, path: Path_, parent: Any, index: Any) -> Any:
        if event.anchor in self._open:
            raise _Refused(
                event.start_mark,
                path,
                f"the alias *{event.anchor} is used inside the value of its own anchor &{event.anchor}, "
                "which makes an endless structure; write the value out instead.",
            )
        node = super().compose_node(parent, index)  # an undefined alias raises PyYAML's own located error
        self._alias_nodes += _expanded(node)
        if self._alias_nodes > self._budget:
            raise _Refused(
                event.start_mark,
                path,
                f"aliases expand the document by more than {self._budget} nodes (an 'alias bomb'); "
                "write the values out or use fewer aliases.",
            )
        return node

    def _check_keys(self, node: yaml.MappingNode, path: Path_) -> None:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            self.node_marks[path + (("key", _key_of(key_node)),)] = self._mark(key_node.start_mark)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise _Refused(
                    key_node.start_mark,
                    path + (_key_of(key_node),),
                    f"the key '{key_node.value}' is given twice (lines {first} and {key_node.start_mark.line + 1}); "
                    "YAML would keep only the last one. Remove one of them.",
                )
            seen[key] = key_node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded(node: yaml.Node) -> int:
    return int(getattr(node, "expanded", 1))


def decode_text(raw: bytes, source: str, error: type[CompressError] = CompressError) -> str:
    """``raw`` as UTF-8 text (a BOM allowed); other encodings are refused at the line of the first bad byte.

    Example:
        >>> decode_text("é".encode("latin-1"), "x.yaml")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.CompressError: x.yaml:1:1: ...
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line, col = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
        raise error(
            f"{source}:{line}:{col}: the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at this line cannot "
            "be decoded). Save the file as UTF-8."
        ) from None


def load_yaml(
    text: str, source: str, error: type[CompressError] = CompressError, *, alias_budget: int = MAX_ALIAS_NODES
) -> tuple[Any, Marks]:
    """Safe-load one YAML document within the limits; returns the data and the (line, column) of every path.

    Raises:
        error: with ``source:line:col:`` and what is wrong, for invalid YAML, a refused tag, a control
            character, a duplicate key, a recursive anchor, too deep a value or too many alias nodes.
    """
    loader = _BoundedLoader(_checked(text, source, error), alias_budget)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except _Refused as exc:
        where = f"{source}:{exc.mark.line + 1}:{exc.mark.column + 1}"
        raise error(f"{where}: {format_path(exc.path)}: {exc.message}") from None
    except yaml.MarkedYAMLError as exc:
        raise error(_yaml_message(exc, source)) from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: the file is not valid YAML: {exc}.") from None
    finally:
        loader.dispose()
    return data, loader.node_marks


def _checked(text: str, source: str, error: type[CompressError]) -> str:
    """``text``, or an error at the line of its first character that YAML does not allow (NUL, other controls)."""
    bad = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if bad is None:
        return text
    before = text[: bad.start()]
    line, col = before.count("\n") + 1, bad.start() - (before.rfind("\n") + 1) + 1
    raise error(
        f"{source}:{line}:{col}: the file holds the control character #x{ord(bad.group()):04x}, which YAML "
        "does not allow. Remove it (is this a text file?)."
    )


def _yaml_message(exc: yaml.MarkedYAMLError, source: str) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    what = exc.problem or str(exc)
    if exc.context and exc.context_mark and exc.context_mark is not mark:
        what += f" ({exc.context} that starts at line {exc.context_mark.line + 1})"
    todo = "Fix the syntax at that line."
    if "could not determine a constructor" in str(exc):
        what += " (only plain YAML is accepted: tags such as !!python/object are refused for safety)"
        todo = "Remove the tag and write the value as plain YAML."
    return f"{where}: the file is not valid YAML: {what}. {todo}"


def format_path(path: Path_) -> str:
    """``('quantizer', 'overrides', 2, 'bits')`` -> ``quantizer.overrides[2].bits``.

    Example:
        >>> format_path(("a", 0, "b")), format_path(())
        ('a[0].b', '(top level)')
    """
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
