"""Sensitivity analysis and an accuracy-target search over per-group quantizer settings (docs/search.md).

An experiment with a ``search:`` block is handed by the engine to :func:`run_search`, with two
functions of the engine's own experiment path; this package decides which configurations to try and
records every trial, but never quantizes or evaluates by itself.

Example:
    >>> parse_search({"target": {"max_delta_pct": 0.5}}).ladder_name
    'default'
"""

from __future__ import annotations

from compress.search.ladder import LADDERS
from compress.search.report import search_md
from compress.search.search import run_search
from compress.search.spec import SEARCH_SCHEMA, SearchSpec, Target, parse_search

__all__ = ["LADDERS", "SEARCH_SCHEMA", "SearchSpec", "Target", "parse_search", "run_search", "search_md"]
