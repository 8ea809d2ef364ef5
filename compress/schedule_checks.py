"""Checks of a parsed schedule that need no component: non-finite numbers, output file names, regexes.

They run before the schedule's plugins are imported (with the structure check), so a schedule that is
wrong in these ways never runs plugin code.

Example:
    >>> [p.message[:27] for p in nonfinite_problems({"convert": [{"tolerance": float("nan")}]})]
    ['nan is not a finite number;']
"""

from __future__ import annotations

import math
import re
from typing import Any

from compress.fileio import PLAIN_NAME
from compress.problems import Problem
from compress.regexsafety import unsafe_regex
from compress.yamlmarks import Path_

__all__ = ["nonfinite_problems", "output_name_problems", "regex_problems", "finetune_problems", "RESERVED_OUTPUTS"]

# Files the report stage writes into the report folder; a statistics file must not take their place.
RESERVED_OUTPUTS = ("report.md", "report.json", "layers.csv", "manifest.json")


def nonfinite_problems(data: Any) -> list[Problem]:
    """Every ``.nan``/``.inf`` in the schedule: no size, tolerance or setting means anything as one.

    Example:
        >>> nonfinite_problems({"seed": 1, "a": [1.5, float("inf")]})[0].path
        ('a', 1)
    """
    problems = []
    stack: list[tuple[Path_, Any]] = [((), data)]
    seen: set[int] = set()  # values reached twice through an alias are checked once
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(path, f"{value} is not a finite number; give a number (or remove the key)."))
        elif isinstance(value, (dict, list)) and id(value) not in seen:
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((path + (k,), v) for k, v in items)
    return sorted(problems, key=lambda p: str(p.path))


def _stats_blocks(data: dict[str, Any]) -> list[tuple[Path_, dict[str, Any]]]:
    blocks = [(("stats",), data["stats"])] if isinstance(data.get("stats"), dict) else []
    experiments = data.get("experiments") if isinstance(data.get("experiments"), list) else []
    for i, exp in enumerate(experiments):
        if isinstance(exp, dict) and isinstance(exp.get("stats"), dict):
            blocks.append((("experiments", i, "stats"), exp["stats"]))
    return blocks


def output_name_problems(data: dict[str, Any]) -> list[Problem]:
    """Statistics file names (``stats.save``) that would leave the report folder or overwrite another output.

    Example:
        >>> [p.message[:22] for p in output_name_problems({"stats": {"source": "collect", "save": "../x.yaml"}})]
        ["'../x.yaml' is not a p"]
    """
    problems: list[Problem] = []
    used: dict[str, str] = {}
    for path, block in _stats_blocks(data):
        name = block.get("save")
        if not isinstance(name, str):
            continue
        at = path + ("save",)
        if not re.match(PLAIN_NAME, name):
            problems.append(
                Problem(
                    at,
                    f"{name!r} is not a plain file name. Statistics are saved inside the report folder, so give "
                    "a name such as 'stats-collect.yaml' (letters, digits, '_', '.', '-'; no folder, no leading '.').",
                )
            )
        elif name in RESERVED_OUTPUTS or name.endswith(".qpt"):
            problems.append(Problem(at, f"'{name}' is a file the report itself writes; choose another name."))
        elif name in used and used[name] != _source_key(block):
            problems.append(
                Problem(at, f"'{name}' is also where other statistics are saved; give each source its own file.")
            )
        used.setdefault(name, _source_key(block))
    return problems


def _source_key(block: dict[str, Any]) -> str:
    return repr((block.get("source"), block.get("args")))  # what the engine collects once and saves once


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def regex_problems(data: dict[str, Any]) -> list[Problem]:
    """Every ``match`` pattern of the schedule that does not compile or could match in unbounded time.

    Example:
        >>> [p.path for p in regex_problems({"quantizer": {"overrides": [{"match": "(a+)+"}]}})]
        [('quantizer', 'overrides', 0, 'match')]
    """
    problems = []
    for path, pattern in _regexes(data):
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError) as exc:
            problems.append(Problem(path, f"{pattern!r} is not a valid regular expression: {exc}."))
            continue
        why = unsafe_regex(pattern)
        if why:
            problems.append(
                Problem(path, f"{pattern!r} is refused: {why}. Write it without the nesting (see docs/bad_input.md).")
            )
    return problems


def _regexes(data: dict[str, Any]) -> list[tuple[Path_, str]]:
    found: list[tuple[Path_, str]] = []

    def rules(seq: Any, path: Path_) -> None:
        for i, rule in enumerate(seq if isinstance(seq, list) else []):
            if isinstance(rule, dict) and isinstance(rule.get("match"), str):
                found.append((path + (i, "match"), rule["match"]))

    def quantizer(block: Any, path: Path_) -> None:
        block = _as_dict(block)
        rules(block.get("overrides"), path + ("overrides",))
        rules(_as_dict(block.get("args")).get("overrides"), path + ("args", "overrides"))

    def stats(block: Any, path: Path_) -> None:
        rules(_as_dict(block).get("edits"), path + ("edits",))

    quantizer(data.get("quantizer"), ("quantizer",))
    stats(data.get("stats"), ("stats",))
    for i, exp in enumerate(_as_list(data.get("experiments"))):
        if isinstance(exp, dict):
            at: Path_ = ("experiments", i)
            rules(exp.get("overrides"), at + ("overrides",))
            rules(_as_dict(exp.get("args")).get("overrides"), at + ("args", "overrides"))
            rules(exp.get("stats_edits"), at + ("stats_edits",))
            rules(_as_dict(exp.get("search")).get("groups"), at + ("search", "groups"))
            quantizer(exp.get("quantizer"), at + ("quantizer",))
            stats(exp.get("stats"), at + ("stats",))
    return found


def finetune_problems(data: dict[str, Any]) -> list[Problem]:
    """``finetune`` blocks on experiments that quantize nothing (the float model has no grids to train against).

    Example:
        >>> [p.path for p in finetune_problems({"experiments": [{"quantizer": None, "finetune": {"steps": 1}}]})]
        [('experiments', 0, 'finetune')]
    """
    problems = []
    for i, exp in enumerate(_as_list(data.get("experiments"))):
        if (
            isinstance(exp, dict)
            and exp.get("finetune") is not None
            and "quantizer" in exp
            and exp["quantizer"] is None
        ):
            problems.append(
                Problem(
                    ("experiments", i, "finetune"),
                    "fine-tuning needs a quantized experiment, but this one has 'quantizer: null' (the float model). "
                    "Remove the finetune block or give the experiment a quantizer.",
                )
            )
    return problems


def search_problems(data: dict[str, Any]) -> list[Problem]:
    """A ``search:`` on the float model, and ladder rungs that are not valid override settings.

    Example:
        >>> exps = [{"name": "s", "quantizer": None, "search": {"target": {"max_delta_pct": 1}}}]
        >>> [p.path for p in search_problems({"experiments": exps})]
        [('experiments', 0, 'search')]
    """
    from compress.errors import ScheduleError
    from compress.search.ladder import check_ladder

    problems = []
    for i, exp in enumerate(_as_list(data.get("experiments"))):
        search = _as_dict(exp).get("search") if isinstance(exp, dict) else None
        if not isinstance(search, dict):
            continue
        at: Path_ = ("experiments", i, "search")
        if "quantizer" in exp and exp["quantizer"] is None:
            problems.append(Problem(at, "a search needs a quantizer to configure; remove 'quantizer: null'."))
        if exp.get("finetune") is not None:  # every trial would fine-tune: far past any search budget
            problems.append(
                Problem(
                    at,
                    "a search cannot fine-tune each trial; search without 'finetune', then fine-tune the "
                    "configuration it writes (<experiment>.best.yaml) as an experiment of its own.",
                )
            )
        for k, rung in enumerate(_as_list(search.get("ladder"))):
            try:
                check_ladder([{}] * k + [rung])  # each rung alone, at its own index
            except ScheduleError as err:
                text = str(err).replace(f"ladder rung #{k}: ", "").replace(f"ladder rung #{k}.", "")
                problems.append(Problem(at + ("ladder", k), text))
    return problems
