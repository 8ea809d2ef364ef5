"""Atomic writes: a failed write leaves the previous file intact and no temporary file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.fileio import atomic_write_json, atomic_write_text, atomic_write_with


def test_write_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.txt"
    atomic_write_text(target, "ok")
    assert target.read_text() == "ok"


def test_interrupted_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    atomic_write_text(target, "good")

    def half_then_fail(f) -> None:  # type: ignore[no-untyped-def]
        f.write(b"half a rep")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_with(target, half_then_fail)
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_json(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "x.json", {"a": [1, 2]})
    assert (tmp_path / "x.json").read_text().startswith("{")


def test_written_files_get_umask_permissions(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.md", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "r.md").stat().st_mode & 0o777 == 0o644
