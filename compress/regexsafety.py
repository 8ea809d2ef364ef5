r"""A bounded check of the regular expressions a schedule gives (``match`` of overrides and stats edits).

Python's ``re`` backtracks, so a pattern such as ``([a-z._0-9]+)+Z`` takes exponential time on a module
name that almost matches, and a ``match`` is tried against every module name: ``--plan`` would hang. A
match in C cannot be interrupted by a timer, and a linear-time engine would be a new dependency, so
compress refuses, before matching anything, the pattern shapes that backtrack without bound:

- a quantifier applied to something that itself holds a quantifier (``(a+)+``, ``(\w*\.)*``);
- a quantified alternation whose branches can start with the same character (``(a|ab)+``, ``(\w|_)*``);
- backreferences (``(a)\1``);
- more than :data:`MAX_UNBOUNDED` unbounded quantifiers in one pattern (``.*a.*b.*c.*d.*``: polynomial
  time of a high degree), or a pattern longer than :data:`MAX_PATTERN` characters.

Possessive quantifiers and atomic groups (``a++``, ``(?>...)``) never backtrack and are allowed. Every
pattern used by the shipped schedules passes; a refused one can almost always be written without the
nesting (``[a-z._0-9]+Z`` instead of ``([a-z._0-9]+)+Z``).

Example:
    >>> unsafe_regex(r"gru\.cells\.\d+\.act_[ifgoh]") is None
    True
    >>> unsafe_regex(r"([a-z._0-9]+)+Z")[:60]
    'a quantifier applies to a group that holds another quantifie'
"""

from __future__ import annotations

import re
from typing import Any

try:  # Python >= 3.11
    from re import _constants as _c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _parser  # type: ignore[no-redef]

__all__ = ["unsafe_regex", "MAX_PATTERN", "MAX_UNBOUNDED"]

MAX_PATTERN = 1000
MAX_UNBOUNDED = 6

_REPEATS = {_c.MAX_REPEAT: "greedy", _c.MIN_REPEAT: "lazy"}
_MAXREPEAT = _c.MAXREPEAT


class _Unsafe(Exception):
    pass


def unsafe_regex(pattern: str) -> str | None:
    r"""Why matching ``pattern`` could take unbounded time, or None when it cannot (or does not compile).

    Example:
        >>> unsafe_regex(r"(a|ab)+c") is not None, unsafe_regex(r"(lstm|gru)\.cells") is None
        (True, True)
    """
    if len(pattern) > MAX_PATTERN:
        return f"the pattern is {len(pattern)} characters long (at most {MAX_PATTERN})"
    try:
        tree = _parser.parse(pattern)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None  # not a valid pattern: re.compile says why
    counter = [0]
    try:
        _walk(tree, None, counter)
    except _Unsafe as exc:
        return str(exc)
    if counter[0] > MAX_UNBOUNDED:
        return (
            f"it has {counter[0]} unbounded quantifiers ('*', '+', '{{n,}}'; at most {MAX_UNBOUNDED}), "
            "which can make a failed match take very long"
        )
    return None


def _symbol(lo: int, hi: int) -> str:
    if hi == _MAXREPEAT:
        return {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
    return "?" if (lo, hi) == (0, 1) else f"{{{lo},{hi}}}"


def _walk(items: Any, outer: str | None, counter: list[int]) -> None:
    """Raise _Unsafe for the first refused shape in ``items`` (``outer``: the enclosing quantifier, if any)."""
    for op, av in items:
        if op in _REPEATS:
            lo, hi, body = av
            if hi == _MAXREPEAT:
                counter[0] += 1
            if hi > 1:
                if outer is not None:
                    raise _Unsafe(
                        f"a quantifier applies to a group that holds another quantifier ('{_symbol(lo, hi)}' "
                        f"inside '{outer}'), which can make matching take exponential time"
                    )
                _walk(body, _symbol(lo, hi), counter)
            else:
                _walk(body, outer, counter)
        elif op is _c.SUBPATTERN:
            _walk(av[-1], outer, counter)
        elif op is _c.BRANCH:
            if outer is not None and not _distinct_starts(av[1]):
                raise _Unsafe(
                    f"a quantified alternation ('|' inside '{outer}') has branches that can start with the same "
                    "character, which can make matching take exponential time"
                )
            for branch in av[1]:
                _walk(branch, outer, counter)
        elif op in (_c.GROUPREF, _c.GROUPREF_EXISTS):
            raise _Unsafe("backreferences are not supported in match patterns")
        elif op in (_c.ASSERT, _c.ASSERT_NOT):
            _walk(av[1], None, counter)  # a lookaround is matched once per position, as a whole
        # POSSESSIVE_REPEAT and ATOMIC_GROUP never backtrack into their body: nothing to check inside


def _distinct_starts(branches: list[Any]) -> bool:
    starts = [_first_literal(b) for b in branches]
    return None not in starts and len(set(starts)) == len(starts)


def _first_literal(items: Any) -> int | None:
    for op, av in items:
        if op is _c.LITERAL:
            return int(av)
        if op is _c.SUBPATTERN:
            return _first_literal(av[-1])
        return None
    return None
