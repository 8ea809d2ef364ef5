"""jsonschema errors turned into one readable sentence each, located by YAML path.

Example:
    >>> [p.message for p in schema_problems({"bits": 99}, {"properties": {"bits": {"maximum": 16}}}, ())]
    ['99 is out of range (allowed: <= 16).']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema

from compress.registry import suggest
from compress.yamlmarks import Path_

__all__ = ["Problem", "schema_problems", "StrictValidator"]


@dataclass
class Problem:
    """One validation problem: where (YAML path) and what."""

    path: Path_
    message: str


def _is_integer(checker: Any, instance: Any) -> bool:
    # JSON Schema calls 5.0 an integer; Python code then gets a float where it needs an int (range(5.0)).
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker: Any, instance: Any) -> bool:
    return isinstance(instance, (int, float)) and not isinstance(instance, bool)


_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_CHECKER)


def schema_problems(instance: Any, schema: dict[str, Any], prefix: Path_) -> list[Problem]:
    """Every way ``instance`` breaks ``schema`` (integers must be ints, not 5.0), located under ``prefix``.

    Example:
        >>> [p.message for p in schema_problems({"n": 5.0}, {"properties": {"n": {"type": "integer"}}}, ())]
        ['5.0 has the wrong type; expected an integer.']
    """
    validator = StrictValidator(schema)
    problems = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        problems.extend(_explain(err, prefix))
    return problems


def _explain(err: jsonschema.ValidationError, prefix: Path_) -> list[Problem]:
    path = prefix + tuple(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return [
            Problem(
                path + (("key", k),),
                f"unknown key '{k}'.{suggest(str(k), allowed)} Allowed keys: {', '.join(allowed)}.",
            )
            for k in extra
        ]
    if err.validator in ("anyOf", "oneOf") and err.context:
        best = _best_branch_error(err)
        return _explain(best, prefix) if best is not None else [Problem(path, err.message + ".")]
    return [Problem(path, _message(err))]


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


def _best_branch_error(err: jsonschema.ValidationError) -> jsonschema.ValidationError | None:
    """The error of the alternative meant for this kind of value (a string -> the string branch)."""
    kind = _JSON_TYPES.get(type(err.instance))
    branches = err.schema.get(err.validator, [])
    same_kind = [
        e for e in err.context if e.relative_schema_path and _branch_accepts(branches[e.relative_schema_path[0]], kind)
    ]
    return jsonschema.exceptions.best_match(same_kind or err.context)


def _branch_accepts(branch: dict[str, Any], kind: str | None) -> bool:
    t = branch.get("type")
    types = t if isinstance(t, list) else [t]
    return kind in types or (kind == "integer" and "number" in types)


def _message(err: jsonschema.ValidationError) -> str:
    v, s = err.validator, err.schema
    if v == "required":
        missing = str(err.message).split("'")[1] if "'" in err.message else err.message
        return f"the required key '{missing}' is missing."
    if v == "enum":
        return f"{err.instance!r} is not allowed. Allowed: {', '.join(map(repr, s['enum']))}.{_sugg(err)}"
    if v == "const":
        return f"{err.instance!r} is not supported; this version of compress reads version {s['const']!r} schedules."
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{err.instance!r} is out of range ({_range_text(s)})."
    if v == "type":
        return f"{err.instance!r} has the wrong type; expected {_type_text(s['type'])}."
    if v == "pattern":
        return f"{err.instance!r} does not match the allowed form {s['pattern']}."
    return err.message + "."


def _sugg(err: jsonschema.ValidationError) -> str:
    return suggest(str(err.instance), [str(x) for x in err.schema.get("enum", [])])


def _range_text(s: dict[str, Any]) -> str:
    parts = []
    if "minimum" in s:
        parts.append(f">= {s['minimum']}")
    if "exclusiveMinimum" in s:
        parts.append(f"> {s['exclusiveMinimum']}")
    if "maximum" in s:
        parts.append(f"<= {s['maximum']}")
    if "exclusiveMaximum" in s:
        parts.append(f"< {s['exclusiveMaximum']}")
    return "allowed: " + " and ".join(parts)


def _type_text(t: Any) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer"}
    names.update({"number": "a number", "boolean": "true or false", "null": "null"})
    ts = t if isinstance(t, list) else [t]
    return " or ".join(names.get(x, x) for x in ts)
