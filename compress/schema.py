"""The schedule's JSON schema: a static skeleton composed with every registered component's args schema.

The skeleton checks structure (phase 1); each component block (``{name, args}``) is then
checked against the args schema its registry entry declares (phase 2), so plugins get their
parameters validated without editing this file. :func:`composed_schema` merges both into one
schema for editors (``python -m compress --schema``).

Example:
    >>> s = composed_schema()
    >>> s["properties"]["version"]["const"]
    1
"""

from __future__ import annotations

import copy
from typing import Any

from compress.fileio import PLAIN_NAME
from compress.registry import REGISTRIES, Registry
from compress.search.spec import SEARCH_SCHEMA

__all__ = ["SCHEDULE_VERSION", "skeleton_schema", "composed_schema", "COMPONENT_BLOCKS"]

SCHEDULE_VERSION = 1

# Names become file and folder names (runs/<name>/, <experiment>.qpt): plain names only, never '.' or '..'.
_NAME = {"type": "string", "pattern": PLAIN_NAME, "description": "A plain name: letters, digits, '_', '.', '-'."}

_ARGS = {"type": "object", "description": "Arguments of the named component (checked against its own schema)."}


def _component(description: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"name": {"type": "string", "description": "Registered name."}, "args": _ARGS}
    props.update(extra or {})
    return {
        "type": "object",
        "description": description,
        "properties": props,
        "required": ["name"],
        "additionalProperties": False,
    }


def _edit_rule() -> dict[str, Any]:
    # The stats package owns the rule format; the schedule schema reuses it so the two never drift.
    from compress.stats import EDIT_RULE_SCHEMA

    return copy.deepcopy(EDIT_RULE_SCHEMA)


def _render_schema() -> dict[str, Any]:
    from compress.render import RENDER_SCHEMA  # the render module owns its block's format

    return copy.deepcopy(RENDER_SCHEMA)


def _finetune_block() -> dict[str, Any]:
    from compress.finetune.config import FINETUNE_SCHEMA  # the finetune package owns its block format

    return copy.deepcopy(FINETUNE_SCHEMA)


_OVERRIDE = {
    "type": "object",
    "description": "A per-layer rule: {match: <regex>, ...settings}; the first matching rule wins.",
    "properties": {"match": {"type": "string"}},
    "required": ["match"],
}

_QUANTIZER_EXTRA = {"overrides": {"type": "array", "items": _OVERRIDE}}

_STATS = {
    "type": "object",
    "description": "Where calibration statistics come from, where they are saved and how they are edited.",
    "properties": {
        "source": {"type": "string", "description": "Registered stats source: collect, generate, file."},
        "args": _ARGS,
        "save": {
            "type": "string",
            "pattern": PLAIN_NAME,
            "description": "File name (in the report folder) of the stats written: a plain name, no folder.",
        },
        "edits": {"type": "array", "items": _edit_rule()},
    },
    "required": ["source"],
    "additionalProperties": False,
}

_EXPERIMENT = {
    "type": "object",
    "description": "A named variant; it changes the quantizer, its args or overrides, or the stats.",
    "properties": {
        "name": _NAME,
        "description": {"type": "string"},
        "quantizer": {
            "description": "Replace the base quantizer; null means the float model itself.",
            "anyOf": [{"type": "null"}, _component("A quantizer block.", _QUANTIZER_EXTRA)],
        },
        "args": {"type": "object", "description": "Merged over the base quantizer's args."},
        "overrides": {"type": "array", "items": _OVERRIDE, "description": "Replace the base overrides."},
        "stats": _STATS,
        "stats_edits": {"type": "array", "items": _edit_rule(), "description": "Appended to stats.edits."},
        "export": {"type": "boolean"},
        "finetune": _finetune_block(),
        "search": SEARCH_SCHEMA,
    },
    "required": ["name"],
    "additionalProperties": False,
}

_CONVERT_ITEM = {
    "anyOf": [
        {"type": "string"},
        _component(
            "A conversion policy.",
            {"tolerance": {"type": "number", "exclusiveMinimum": 0, "description": "Max abs output error allowed."}},
        ),
    ]
}


def skeleton_schema() -> dict[str, Any]:
    """The static structure of a version-1 schedule (component args left open)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "compress schedule",
        "type": "object",
        "properties": {
            "version": {"const": SCHEDULE_VERSION, "description": "Schedule format version."},
            "name": _NAME,
            "description": {"type": "string"},
            "plugins": {"type": "array", "items": {"type": "string"}},
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            "device": {"type": "string", "pattern": "^(auto|cpu|cuda(:[0-9]+)?)$"},
            "model": _component(
                "The model factory, its args and checkpoint.", {"checkpoint": {"type": ["string", "null"]}}
            ),
            "data": _component("The dataset with its calibration and evaluation splits."),
            "convert": {"type": "array", "items": _CONVERT_ITEM},
            "stats": _STATS,
            "quantizer": _component("The base quantizer of every experiment.", _QUANTIZER_EXTRA),
            "evaluate": _component("The evaluator."),
            "also_evaluate": {
                "type": "array",
                "items": _component("A further evaluator: its metrics join every experiment's as extras."),
                "description": "Evaluators run after `evaluate` on every experiment (e.g. rollout beside perplexity).",
            },
            "experiments": {"type": "array", "items": _EXPERIMENT, "minItems": 1},
            "render": _render_schema(),
            "report": {
                "type": "object",
                "properties": {
                    "formats": {"type": "array", "items": {"enum": ["md", "json", "csv"]}, "uniqueItems": True},
                    "layers_for": {"type": "string", "description": "Experiment whose per-layer table is shown."},
                },
                "additionalProperties": False,
            },
        },
        "required": ["version", "model", "data", "evaluate", "experiments"],
        "additionalProperties": False,
    }


# (path in the schedule, registry, key holding the registered name)
COMPONENT_BLOCKS: list[tuple[str, str, str]] = [
    ("model", "models", "name"),
    ("data", "datasets", "name"),
    ("convert[]", "converters", "name"),
    ("stats", "stats_sources", "source"),
    ("quantizer", "quantizers", "name"),
    ("evaluate", "evaluators", "name"),
    ("also_evaluate[]", "evaluators", "name"),
    ("experiments[].quantizer", "quantizers", "name"),
    ("experiments[].stats", "stats_sources", "source"),
]


def _entries(registry: Registry, builtin_only: bool) -> list[Any]:
    return [e for e in registry if not builtin_only or _is_builtin(e.obj)]


def _is_builtin(obj: Any) -> bool:
    return str(getattr(obj, "__module__", "")).startswith("compress.")


def _with_variants(block: dict[str, Any], registry: Registry, key: str, builtin_only: bool) -> None:
    entries = _entries(registry, builtin_only)
    block["properties"][key] = {
        "enum": [e.name for e in entries],
        "description": block["properties"][key].get("description"),
    }
    variants = [
        {"if": {"properties": {key: {"const": e.name}}, "required": [key]}, "then": {"properties": {"args": e.schema}}}
        for e in entries
    ]
    if variants:  # an empty allOf is not a valid schema
        block["allOf"] = variants


def composed_schema(builtin_only: bool = False) -> dict[str, Any]:
    """The full schema: the skeleton plus, per registered name, that component's args schema.

    ``builtin_only`` leaves out plugin components (the committed ``schemas/schedule.schema.json``).
    """
    s = copy.deepcopy(skeleton_schema())
    p = s["properties"]
    for block, kind, key in [
        (p["model"], "models", "name"),
        (p["data"], "datasets", "name"),
        (p["convert"]["items"]["anyOf"][1], "converters", "name"),
        (p["stats"], "stats_sources", "source"),
        (p["quantizer"], "quantizers", "name"),
        (p["evaluate"], "evaluators", "name"),
        (p["also_evaluate"]["items"], "evaluators", "name"),
    ]:
        _with_variants(block, REGISTRIES[kind], key, builtin_only)
    exp = p["experiments"]["items"]["properties"]
    exp["stats"] = p["stats"]
    exp["quantizer"]["anyOf"][1] = p["quantizer"]
    return s
