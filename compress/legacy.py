"""The old tool's spellings in a schedule, read as what they mean before validation.

Its users write overrides as an ordered mapping, ``{'.*eltwise.*': {fp16: true}, ...}`` (the notebook's
spelling). YAML keeps a mapping's order, so that is exactly the ordered rule list
``[{match: '.*eltwise.*', fp16: true}, ...]``; it is rewritten to that list (with the line numbers of
the original keys), so every later message points at what the user wrote. A mapping that cannot be
read that way (a value that is not a mapping of settings) gets one message with the list spelled out.

Example:
    >>> data = {"quantizer": {"name": "q", "overrides": {".*eltwise.*": {"fp16": True}}}}
    >>> rewrite_mapping_overrides(data, {}), data["quantizer"]["overrides"]
    ([], [{'match': '.*eltwise.*', 'fp16': True}])
"""

from __future__ import annotations

from typing import Any

from compress.problems import Problem
from compress.yamlmarks import Marks, Path_

__all__ = ["rewrite_mapping_overrides", "overrides_locations"]


def overrides_locations(data: dict[str, Any]) -> list[tuple[Path_, dict[str, Any]]]:
    """(path of the block, block) for every place a schedule may hold an ``overrides`` list.

    Example:
        >>> [p for p, _ in overrides_locations({"quantizer": {"args": {}}, "experiments": [{"args": {}}]})]
        [('quantizer',), ('quantizer', 'args'), ('experiments', 0), ('experiments', 0, 'args')]
    """
    found: list[tuple[Path_, dict[str, Any]]] = []

    def add(path: Path_, block: Any) -> None:
        if isinstance(block, dict):
            found.append((path, block))
            if isinstance(block.get("args"), dict):
                found.append((path + ("args",), block["args"]))

    add(("quantizer",), data.get("quantizer"))
    experiments = data.get("experiments")
    for i, exp in enumerate(experiments if isinstance(experiments, list) else []):  # other types: the schema says
        add(("experiments", i), exp)
        if isinstance(exp, dict):
            add(("experiments", i, "quantizer"), exp.get("quantizer"))
    return found


def rewrite_mapping_overrides(data: Any, marks: Marks) -> list[Problem]:
    """Rewrite every mapping-form ``overrides`` in ``data`` (in place) to the rule list it means.

    Returns one problem per mapping that cannot be read as rules (its message spells out the list form).
    """
    if not isinstance(data, dict):
        return []
    problems = []
    for path, block in overrides_locations(data):
        rules = block.get("overrides")
        if not isinstance(rules, dict):
            continue
        at = path + ("overrides",)
        if all(isinstance(v, dict) or v is None for v in rules.values()):
            block["overrides"] = [{"match": str(k), **(v or {})} for k, v in rules.items()]
            _move_marks(marks, at, list(rules))
        else:
            problems.append(Problem(at, _list_form_message(rules)))
    return problems


def _move_marks(marks: Marks, at: Path_, keys: list[Any]) -> None:
    """Marks of ``at.<key>...`` become ``at[i]...``; the key's own position becomes the rule's ``match``."""
    for i, key in enumerate(keys):
        key_mark = marks.get(at + (("key", key),))
        for path, mark in list(marks.items()):
            if path[: len(at) + 1] == at + (key,):
                marks[at + (i,) + path[len(at) + 1 :]] = mark
        if key_mark is not None:
            marks[at + (i,)] = key_mark
            marks[at + (i, "match")] = key_mark
            marks[at + (i, ("key", "match"))] = key_mark


def _list_form_message(rules: dict[Any, Any]) -> str:
    bad = next(str(k) for k, v in rules.items() if not isinstance(v, dict) and v is not None)
    lines = []
    for k, v in rules.items():
        settings = v if isinstance(v, dict) else {"<setting>": v}
        body = ", ".join([f"match: {str(k)!r}"] + [f"{s}: {_yaml_scalar(x)}" for s, x in settings.items()])
        lines.append(f"  - {{{body}}}")
    return (
        f"written as a mapping {{regex: settings}} (the old tool's form), but the value for {bad!r} is not a "
        "mapping of settings such as {fp16: true}. Overrides are an ordered list of rules; write them as:\n"
        + "\n".join(lines)
    )


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)
