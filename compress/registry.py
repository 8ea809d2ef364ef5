"""One small registry class, one instance per kind of component.

A component is a registered name, a JSON schema for its ``args`` and a callable
(function or class). Schedules can only name things, so the name is the key.

Example:
    >>> from compress.registry import Registry
    >>> colours = Registry("colour")
    >>> @colours.register("red", schema={"type": "object", "properties": {}},
    ...                   description="The colour red.")
    ... def red():
    ...     return "#f00"
    >>> colours.get("red").obj()
    '#f00'
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from compress.errors import RegistryError

__all__ = [
    "Entry",
    "Registry",
    "MODELS",
    "DATASETS",
    "CONVERTERS",
    "STATS_SOURCES",
    "QUANTIZERS",
    "EVALUATORS",
    "REGISTRIES",
]

EMPTY_ARGS_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Entry:
    """A registered component: its name, callable, args schema and one-line description."""

    name: str
    obj: Any
    schema: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_ARGS_SCHEMA))
    description: str = ""


class Registry:
    """Names -> components for one kind (models, datasets, quantizers, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, *, schema: dict[str, Any] | None = None, description: str = ""
    ) -> Callable[[Any], Any]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is an error."""

        def decorator(obj: Any) -> Any:
            self.add(name, obj, schema=schema, description=description)
            return obj

        return decorator

    def add(self, name: str, obj: Any, *, schema: dict[str, Any] | None = None, description: str = "") -> None:
        """Register ``obj`` under ``name`` (the non-decorator form)."""
        if name in self._entries:
            raise RegistryError(f"A {self.kind} named '{name}' is already registered; pick another name.")
        doc = description or _first_doc_line(obj)
        self._entries[name] = Entry(name, obj, dict(schema or EMPTY_ARGS_SCHEMA), doc)

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with the registered names."""
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        """The error text for an unknown ``name``, with a suggestion when one is close."""
        hint = suggest(name, self.names())
        known = ", ".join(self.names()) or "(none)"
        return f"Unknown {self.kind} '{name}'.{hint} Registered {self.kind}s: {known}."

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)


def suggest(name: str, candidates: list[str]) -> str:
    """A ' Did you mean ...?' sentence for a misspelt name, or ''."""
    close = difflib.get_close_matches(str(name), candidates, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _first_doc_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


MODELS = Registry("model")
DATASETS = Registry("dataset")
CONVERTERS = Registry("converter")
STATS_SOURCES = Registry("stats source")
QUANTIZERS = Registry("quantizer")
EVALUATORS = Registry("evaluator")

REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "converters": CONVERTERS,
    "stats_sources": STATS_SOURCES,
    "quantizers": QUANTIZERS,
    "evaluators": EVALUATORS,
}
