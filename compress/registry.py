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
import importlib
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
    "load_builtins",
]

EMPTY_ARGS_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Entry:
    """A registered component: its name, callable, args schema and one-line description."""

    name: str
    obj: Any
    schema: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_ARGS_SCHEMA))
    description: str = ""


# The packages whose import registers the built-in components. The shared registries import them on
# their first lookup, so no stage has to import the spine (or know this list) to find a built-in.
BUILTIN_PACKAGES = (
    "compress.data",
    "compress.evaluate",
    "compress.models",
    "compress.modules",
    "compress.quant",
    "compress.stats",
)
_builtins = {"loaded": False}


def load_builtins() -> None:
    """Import the built-in component packages once (their imports register them).

    Example:
        >>> load_builtins(); "performance_rnn" in MODELS
        True
    """
    if _builtins["loaded"]:
        return
    _builtins["loaded"] = True  # set first: the imports below register, and registering looks nothing up
    for name in BUILTIN_PACKAGES:
        importlib.import_module(name)


class Registry:
    """Names -> components for one kind (models, datasets, quantizers, ...).

    ``builtins=True`` (the six shared registries) loads the built-in components on the first lookup.
    """

    def __init__(self, kind: str, *, builtins: bool = False) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._builtins = builtins

    def _lookup(self) -> dict[str, Entry]:
        if self._builtins:
            load_builtins()
        return self._entries

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
        if name not in self._lookup():
            raise RegistryError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        """The error text for an unknown ``name``, with a suggestion when one is close."""
        hint = suggest(name, self.names())
        known = ", ".join(self.names()) or "(none)"
        return f"Unknown {self.kind} '{name}'.{hint} Registered {self.kind}s: {known}."

    def names(self) -> list[str]:
        return sorted(self._lookup())

    def __contains__(self, name: object) -> bool:
        # A schedule may give any YAML value as a name ([] or {} from a typo): not a name, so not here.
        return isinstance(name, str) and name in self._lookup()

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._lookup())


def suggest(name: str, candidates: list[str]) -> str:
    """A ' Did you mean ...?' sentence for a misspelt name, or ''."""
    close = difflib.get_close_matches(str(name), candidates, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _first_doc_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


MODELS = Registry("model", builtins=True)
DATASETS = Registry("dataset", builtins=True)
CONVERTERS = Registry("converter", builtins=True)
STATS_SOURCES = Registry("stats source", builtins=True)
QUANTIZERS = Registry("quantizer", builtins=True)
EVALUATORS = Registry("evaluator", builtins=True)

REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "converters": CONVERTERS,
    "stats_sources": STATS_SOURCES,
    "quantizers": QUANTIZERS,
    "evaluators": EVALUATORS,
}
