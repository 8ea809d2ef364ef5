"""A stats file is read only if it is a regular file under a size limit, and its YAML stays within bounds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compress.errors import StatsError
from compress.stats import statsfile
from compress.stats.statsfile import load_stats

GOOD = "fc:\n  output: {min: -1.0, max: 1.0}\n"


def test_dev_zero_is_refused_without_reading_it() -> None:
    with pytest.raises(StatsError, match="'/dev/zero' is not a regular file"):
        load_stats("/dev/zero")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "stats.yaml"
    os.mkfifo(fifo)
    with pytest.raises(StatsError, match="not a regular file"):
        load_stats(fifo)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StatsError, match="not a regular file"):
        load_stats(tmp_path)


def test_a_huge_file_is_refused_by_its_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statsfile, "MAX_STATS_BYTES", 1000)
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "# padding\n" * 200)
    with pytest.raises(StatsError, match=r"big.yaml' is 2\d\d\d bytes, more than the 1000 bytes"):
        load_stats(big)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"fc:\n  output: {min: -1.0, max: 1.0}\n# caf\xe9\n", r"s.yaml:3:6: the file is not UTF-8"),
        (b"fc:\n  output: {min: -1.0, max: 1.0}\nfc:\n  output: {min: 0.0, max: 2.0}\n", r"s.yaml:3:1: fc: .*twice"),
        (b"fc: &r {output: *r}\n", r"s.yaml:1:17: fc.output: the alias \*r is used inside"),
        (b"fc: " + b"[" * 200 + b"]" * 200 + b"\n", "nested more than 64 levels"),
        (b"fc:\n  output: {min: \x00}\n", "control character"),
    ],
)
def test_bad_yaml_is_located(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(data)
    with pytest.raises(StatsError, match=message):
        load_stats(path)


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    bomb = "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{c}: &{c} [" + ",".join(["*" + p] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    path = tmp_path / "s.yaml"
    path.write_text(bomb)
    with pytest.raises(StatsError, match="alias bomb"):
        load_stats(path)
