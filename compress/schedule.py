"""Read, validate and resolve a schedule file.

Every problem in a file is reported at once, each as one sentence that names the file, the
line and column, the YAML path, what is wrong and what is allowed.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
    >>> _ = p.write_text("version: 1\\nmodel: {name: nope}\\n")
    >>> try:
    ...     load_schedule(p)
    ... except ScheduleError as e:
    ...     print(str(e).splitlines()[0].rsplit("/", 1)[-1])
    s.yaml: 4 problems.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import CompressError, PluginError, ScheduleError
from compress.fileio import read_regular_file
from compress.legacy import rewrite_mapping_overrides
from compress.plugins import load_entry_point_plugins, load_plugins
from compress.problems import Problem, schema_problems
from compress.registry import REGISTRIES, suggest
from compress.safeyaml import decode_text
from compress.schedule_checks import (
    finetune_problems,
    nonfinite_problems,
    output_name_problems,
    regex_problems,
    search_problems,
)
from compress.schema import SCHEDULE_VERSION, skeleton_schema
from compress.yamlmarks import Marks, Path_, format_path, line_col, parse_yaml, strip_key_marker, where

# A schedule is a few KB; a larger file is not one (and would only cost memory and time to parse).
MAX_SCHEDULE_BYTES = 1 << 20

__all__ = ["Schedule", "load_schedule", "overrides_path", "parse_yaml", "Problem"]


@dataclass
class Schedule:
    """A validated schedule: the raw mapping plus where it came from."""

    data: dict[str, Any]
    path: Path
    marks: Marks = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def where(self, path: Path_) -> str:
        """``file:line:col: yaml.path`` for a path inside this schedule."""
        return f"{where(str(self.path), self.marks, path)}: {format_path(path)}"

    @property
    def name(self) -> str:
        return str(self.data.get("name") or self.path.stem)

    def resolve_path(self, value: str) -> Path:
        """A path from the schedule, relative to the schedule's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def overrides_path(schedule: Schedule, i: int) -> Path_ | None:
    """Where the override rules that experiment ``i``'s quantizer gets are written (None: it gets none).

    Mirrors how the engine gives an experiment its quantizer (``compress.engine.experiment_quantizer``
    and ``make_quantizer``), so an error about rule ``k`` can point at ``<path>[k]``.

    Example:
        >>> s = Schedule({"quantizer": {"name": "q", "overrides": [{"match": "x"}]}, "experiments": [{}]}, Path("s"))
        >>> overrides_path(s, 0)
        ('quantizer', 'overrides')
    """
    exp = schedule.data["experiments"][i]
    if "quantizer" in exp:
        own = [(("experiments", i, "quantizer"), exp["quantizer"] or {})]
        return _rules_path(own, own)
    base = schedule.data["quantizer"]
    # An experiment's own list replaces the base list; its args win over the base args.
    lists = [(("experiments", i), exp)] if "overrides" in exp else [(("quantizer",), base)]
    return _rules_path(lists, [(("experiments", i), exp), (("quantizer",), base)])


def _rules_path(lists: list[tuple[Path_, dict[str, Any]]], args: list[tuple[Path_, dict[str, Any]]]) -> Path_ | None:
    """The first non-empty ``overrides`` list in ``lists``, else the first ``args.overrides`` in ``args``."""
    for at, block in lists:
        if block.get("overrides"):  # an empty list passes nothing: make_quantizer falls back to the args
            return at + ("overrides",)
    for at, block in args:
        if "overrides" in (block.get("args") or {}):
            return at + ("args", "overrides")
    return None


# ----------------------------------------------------------------------------- validation


def _as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else []: a wrong type is the structure check's to report, not a crash here."""
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _component_blocks(data: dict[str, Any]) -> list[tuple[Path_, str, str, dict[str, Any]]]:
    """(path, registry kind, name key, block) for every component block present in ``data``."""
    out: list[tuple[Path_, str, str, dict[str, Any]]] = []
    for key, kind, name_key in [
        ("model", "models", "name"),
        ("data", "datasets", "name"),
        ("stats", "stats_sources", "source"),
        ("quantizer", "quantizers", "name"),
        ("evaluate", "evaluators", "name"),
    ]:
        if isinstance(data.get(key), dict):
            out.append(((key,), kind, name_key, data[key]))
    for i, item in enumerate(_as_list(data.get("convert"))):
        if isinstance(item, dict):
            out.append((("convert", i), "converters", "name", item))
    for i, item in enumerate(_as_list(data.get("also_evaluate"))):
        if isinstance(item, dict):
            out.append((("also_evaluate", i), "evaluators", "name", item))
    for i, exp in enumerate(_as_list(data.get("experiments"))):
        if not isinstance(exp, dict):
            continue
        if isinstance(exp.get("quantizer"), dict):
            out.append((("experiments", i, "quantizer"), "quantizers", "name", exp["quantizer"]))
        if isinstance(exp.get("stats"), dict):
            out.append((("experiments", i, "stats"), "stats_sources", "source", exp["stats"]))
    return out


def _args_problems(path: Path_, kind: str, name_key: str, block: dict[str, Any]) -> list[Problem]:
    registry = REGISTRIES[kind]
    name = block.get(name_key)
    if not isinstance(name, str):
        return []
    if name not in registry:
        return [Problem(path + (name_key,), registry.unknown_message(name))]
    args = block.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return []  # the structure check says 'args' must be a mapping
    schema = registry.get(name).schema
    problems = schema_problems(args, schema, path + ("args",))
    return problems + _overrides_problems(block.get("overrides"), schema, path + ("overrides",))


def _overrides_problems(overrides: Any, schema: dict[str, Any], path: Path_) -> list[Problem]:
    """Override rules are checked against the quantizer's own ``overrides`` schema when it declares one."""
    sub = schema.get("properties", {}).get("overrides")
    if not isinstance(overrides, list) or not isinstance(sub, dict):
        return []
    return schema_problems(overrides, sub, path)


def _experiment_overrides_problems(data: dict[str, Any]) -> list[Problem]:
    base = data.get("quantizer")
    if not isinstance(base, dict) or base.get("name") not in REGISTRIES["quantizers"]:
        return []
    schema = REGISTRIES["quantizers"].get(base["name"]).schema
    problems = []
    for i, exp in enumerate(_as_list(data.get("experiments"))):
        if isinstance(exp, dict) and "quantizer" not in exp:
            problems += _overrides_problems(exp.get("overrides"), schema, ("experiments", i, "overrides"))
            merged = {**_as_dict(base.get("args")), **_as_dict(exp.get("args"))}
            if isinstance(exp.get("args"), dict):
                problems += [
                    Problem(("experiments", i, "args") + pr.path[2:], pr.message)
                    for pr in schema_problems(merged, schema, ("quantizer", "args"))
                    if pr.path[2:3] and _key_of(pr.path[2]) in exp["args"]
                ]
    return problems


def _key_of(part: Any) -> Any:
    return part[1] if isinstance(part, tuple) else part


def _convert_name_problems(data: dict[str, Any]) -> list[Problem]:
    registry = REGISTRIES["converters"]
    return [
        Problem(("convert", i), registry.unknown_message(item))
        for i, item in enumerate(_as_list(data.get("convert")))
        if isinstance(item, str) and item not in registry
    ]


def _semantic_problems(data: dict[str, Any]) -> list[Problem]:
    problems = []
    names = [e.get("name") for e in _as_list(data.get("experiments")) if isinstance(e, dict)]
    seen: set[str] = set()
    for i, n in enumerate(names):
        if n in seen:
            problems.append(Problem(("experiments", i, "name"), f"the experiment name '{n}' is used twice."))
        seen.add(n)
    for i, exp in enumerate(_as_list(data.get("experiments"))):
        if not isinstance(exp, dict):
            continue
        if "quantizer" not in exp and not isinstance(data.get("quantizer"), dict):
            problems.append(
                Problem(
                    ("experiments", i),
                    "this experiment uses the base quantizer, but the schedule has no "
                    "'quantizer' block; add one, or give the experiment 'quantizer: null' for the float model.",
                )
            )
        if exp.get("quantizer", 0) is None and ("args" in exp or "overrides" in exp):
            problems.append(
                Problem(
                    ("experiments", i),
                    "'args'/'overrides' cannot change a float experiment ('quantizer: null'); remove them.",
                )
            )
    layers_for = (data.get("report") or {}).get("layers_for") if isinstance(data.get("report"), dict) else None
    if layers_for is not None and layers_for not in seen:
        problems.append(
            Problem(
                ("report", "layers_for"),
                f"no experiment is named '{layers_for}'.{suggest(str(layers_for), [str(s) for s in seen])}",
            )
        )
    from compress.render import render_problems  # the render module owns its block's checks

    problems += render_problems(data)
    needs_stats = any(
        isinstance(e, dict) and e.get("quantizer", 0) is not None and "stats" not in e
        for e in _as_list(data.get("experiments"))
    )
    if needs_stats and "stats" not in data and _base_quantizer_is_linear(data):
        problems.append(
            Problem(
                (),
                "quantized experiments need calibration statistics: add a 'stats' block "
                "(source: collect, generate or file).",
            )
        )
    return problems


def _base_quantizer_is_linear(data: dict[str, Any]) -> bool:
    q = data.get("quantizer")
    return isinstance(q, dict) and q.get("name") == "post_train_linear"


def structure_problems(data: Any) -> list[Problem]:
    """The problems found without any component: version, structure, numbers, output names, regexes.

    Example:
        >>> [p.message[:30] for p in structure_problems({"version": 1, "seed": 1.5})][:1]
        ["the required key 'model' is mi"]
    """
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        return [Problem((), f"the schedule is {kind}; it must be a mapping starting with 'version: 1'.")]
    if data.get("version") != SCHEDULE_VERSION:
        got = data.get("version", "missing")
        return [
            Problem(
                ("version",),
                f"version {got!r} is not supported; this compress reads 'version: "
                f"{SCHEDULE_VERSION}' schedules (see the README's schedule reference).",
            )
        ]
    nonfinite = nonfinite_problems(data)
    located = {p.path for p in nonfinite}
    # A non-finite number also breaks the schema's bounds: say it once, as not finite.
    problems = nonfinite + [p for p in schema_problems(data, skeleton_schema(), ()) if p.path not in located]
    problems += finetune_problems(data) + search_problems(data)
    return problems + output_name_problems(data) + regex_problems(data)


def validate(data: Any) -> list[Problem]:
    """Every problem of a parsed schedule (structure, component names and args, regexes).

    Example:
        >>> validate([1])[0].message
        "the schedule is a list, not a mapping; it must be a mapping starting with 'version: 1'."
    """
    problems = structure_problems(data)
    if not isinstance(data, dict) or data.get("version") != SCHEDULE_VERSION:
        return problems
    located = {p.path for p in problems}
    for path, kind, name_key, block in _component_blocks(data):
        problems.extend(p for p in _args_problems(path, kind, name_key, block) if p.path not in located)
    problems.extend(p for p in _experiment_overrides_problems(data) if p.path not in located)
    problems.extend(_convert_name_problems(data))
    if not problems:
        problems.extend(_semantic_problems(data))
    return problems


# ----------------------------------------------------------------------------- entry point


def report_problems(source: str, marks: Marks, problems: list[Problem]) -> ScheduleError:
    """One ScheduleError whose message lists every problem with file:line:col and YAML path."""
    # The skeleton schema and a quantizer's own schema can both see one mistake: say it once.
    problems = list({(pr.path, pr.message): pr for pr in problems}.values())
    lines = [f"{source}: {len(problems)} problem{'s' if len(problems) != 1 else ''}."]
    located = sorted(problems, key=lambda pr: line_col(marks, pr.path))
    for pr in located:
        lines.append(f"{where(source, marks, pr.path)}: {format_path(strip_key_marker(pr.path))}: {pr.message}")
    return ScheduleError("\n".join(lines))


def _import_plugins(data: Any, source: str, marks: Marks) -> None:
    load_entry_point_plugins()
    plugins = data.get("plugins") if isinstance(data, dict) else None
    if not isinstance(plugins, list):
        return
    for i, name in enumerate(plugins):
        if not isinstance(name, str):
            continue
        try:
            load_plugins([name])
        except PluginError as exc:
            raise PluginError(f"{where(source, marks, ('plugins', i))}: plugins[{i}]: {exc}") from None


def _read(p: Path, source: str) -> tuple[Any, Marks]:
    if not p.exists():
        raise ScheduleError(f"{source}: no such schedule file. Check the path (relative to the current folder).")
    try:
        raw = read_regular_file(p, MAX_SCHEDULE_BYTES, "schedule file")
    except CompressError as exc:
        raise ScheduleError(str(exc)) from None
    return parse_yaml(decode_text(raw, source, ScheduleError), source)


def load_schedule(path: str | Path) -> Schedule:
    """Read ``path``, validate it, import its plugins, validate their components and return a :class:`Schedule`.

    What can be checked without plugins (structure, numbers, names, regexes) is checked first: a schedule
    with such problems never runs the code of its plugins.

    Raises:
        ScheduleError: with every problem of the file, each with line, column and YAML path.
        PluginError: a plugin named by the schedule or an entry point failed to import.

    Example:
        >>> load_schedule("no/such.yaml")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.ScheduleError: no/such.yaml: no such schedule file. ...
    """
    p = Path(path)
    source = str(path)
    data, marks = _read(p, source)
    legacy = rewrite_mapping_overrides(data, marks)  # the old tool's {regex: settings} overrides, first

    def with_legacy(found: list[Problem]) -> list[Problem]:  # a rewritten mapping's problem is reported once
        return legacy + [pr for pr in found if not any(pr.path[: len(q.path)] == q.path for q in legacy)]

    early = with_legacy(structure_problems(data))
    if early and isinstance(data, dict) and data.get("plugins"):
        raise report_problems(source, marks, early)  # before any plugin code runs
    _import_plugins(data, source, marks)
    problems = with_legacy(validate(data))
    if problems:
        raise report_problems(source, marks, problems)
    return Schedule(copy.deepcopy(data), p.resolve(), marks)
