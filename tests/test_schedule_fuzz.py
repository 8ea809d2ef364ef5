"""Property-based fuzzing of schedule mutations: every outcome is a valid schedule or a clean, located error.

Mutations are made on the parsed tiny schedules (a value replaced by a hostile one: huge or non-finite
numbers, wrong container types, deep nesting, bad regexes, path-like names) and on the text (bytes
flipped, inserted or cut). The fast test loads each mutant as ``python -m compress --plan`` does up to the
model build (``load_schedule``); the slow one runs the full ``--plan`` in-process. Each example must end
within a generous time bound, and the process's peak memory must stay within a budget.
"""

from __future__ import annotations

import resource
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compress.cli import EXIT_USER_ERROR, main
from compress.errors import CompressError
from compress.schedule import load_schedule
from tests.conftest import ROOT

TINY = ROOT / "tests" / "schedules_tiny"
SOURCES = {p.name: p.read_text() for p in sorted(TINY.glob("*.yaml"))}
HANG_GUARD_S = 20  # generous: a valid example takes milliseconds
MEMORY_BUDGET_MB = 1024  # growth of the peak RSS over the whole test


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


HOSTILE = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e30, 1.0e308, -0.0, 5.0]),
    st.sampled_from(["..", ".", "../../x.yaml", "/etc/passwd", "([a-z._0-9]+)+Z", "(a|a)*b", "[", "cuda:99", ""]),
    st.text(max_size=20),
    st.none(),
    st.booleans(),
    st.just([]),
    st.just({}),
    st.just(_deep(80)),  # deeper than the YAML limit
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, prefix + (i,))
    return out


def _replace(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {**data, head: _replace(data[head], rest, value)}
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(data)]


@st.composite
def mutants(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(SOURCES)))
    text = SOURCES[name]
    if draw(st.booleans()):  # a structural mutation, written back as YAML
        data = yaml.safe_load(text)
        for _ in range(draw(st.integers(1, 3))):
            paths = _paths(data)
            path = draw(st.sampled_from(paths))
            data = _replace(data, path, draw(HOSTILE))
        return yaml.safe_dump(data, sort_keys=False).encode()
    raw = bytearray(text.encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "cut"]))
        if kind == "flip":
            raw[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            raw[at:at] = draw(st.sampled_from([b"\x00", b"\xe9", b"&a ", b"*a", b"[", b"{", b": ", b"\n  - ", b"!!"]))
        else:
            del raw[at : at + draw(st.integers(1, 40))]
    return bytes(raw)


@contextmanager
def hang_guard(seconds: int) -> Iterator[None]:
    def fail(*_: Any) -> None:
        raise TimeoutError(f"a schedule took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_load(path: Path) -> None:
    start = time.perf_counter()
    with hang_guard(HANG_GUARD_S):
        try:
            load_schedule(path)
        except CompressError as exc:
            message = str(exc)
            assert message.startswith(str(path)) or f"'{path}'" in message or str(path) in message, message
            assert "Traceback" not in message
    assert time.perf_counter() - start < HANG_GUARD_S


@pytest.fixture(scope="module")
def memory_baseline() -> Iterator[float]:
    before = _peak_mb()
    yield before
    assert _peak_mb() - before < MEMORY_BUDGET_MB


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutant=mutants())
def test_mutated_schedules_load_or_fail_cleanly(mutant: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "mutant.yaml"
    path.write_bytes(mutant)
    _check_load(path)


def test_memory_budget_of_the_fuzz_run(memory_baseline: float) -> None:
    assert _peak_mb() - memory_baseline < MEMORY_BUDGET_MB


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutant=mutants())
def test_mutated_schedules_plan_or_exit_2(mutant: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("fuzzplan")
    (folder / "fixtures").mkdir()
    for fixture in (ROOT / "tests" / "fixtures").glob("*.pt"):
        (folder / "fixtures" / fixture.name).symlink_to(fixture)
    (folder / "tiny").mkdir()
    path = folder / "tiny" / "mutant.yaml"
    path.write_bytes(mutant)
    with hang_guard(120):
        rc = main([str(path), "--plan", "--quiet"])
    assert rc in (0, EXIT_USER_ERROR)
