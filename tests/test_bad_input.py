"""Bad input beyond the schedule corpus: plugins, the command line, output folders and files, temporary files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from compress.cli import EXIT_USER_ERROR, main
from compress.errors import CompressError
from compress.fileio import atomic_write_text, output_file, prepare_output_dir
from tests.conftest import ROOT

BAD = ROOT / "tests" / "schedules_bad"


def test_a_schedule_with_errors_does_not_import_its_plugins(
    plugin_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.modules.pop("broken_plugin_for_tests", None)
    rc = main([str(BAD / "plugin_not_imported_when_invalid.yaml"), "--plan"])
    err = capsys.readouterr().err
    assert rc == EXIT_USER_ERROR and "'tpu' does not match" in err
    assert "broken on purpose" not in err and "broken_plugin_for_tests" not in sys.modules


@pytest.mark.parametrize("threads", ["0", "99999999999", "-3"])
def test_threads_out_of_range(threads: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([str(ROOT / "schedules" / "perf_rnn.yaml"), "--plan", "--threads", threads])
    err = capsys.readouterr().err
    assert rc == EXIT_USER_ERROR and "--threads must be between 1 and 1024" in err and "Traceback" not in err


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken"
    out.write_text("precious")
    rc = main([str(ROOT / "tests" / "schedules_tiny" / "perf_rnn_tiny.yaml"), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == EXIT_USER_ERROR and "exists and is not a folder" in err and out.read_text() == "precious"


def test_out_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CompressError, match="Cannot create the report folder"):
        prepare_output_dir(tmp_path / "file" / "sub")


@pytest.mark.parametrize("name", ["../x.yaml", "/etc/x.yaml", ".", "..", "a/b.yaml", ".hidden", ""])
def test_output_names_must_be_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(CompressError, match="plain file name"):
        output_file(tmp_path, name)


def test_never_renames_over_something_that_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "report.md"
    os.mkfifo(fifo)
    with pytest.raises(CompressError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert fifo.exists() and not fifo.is_file()
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(CompressError, match="not a regular file"):
        atomic_write_text(tmp_path / "folder.md", "x")
    link = tmp_path / "link.md"
    link.symlink_to("/dev/null")
    with pytest.raises(CompressError, match="not a regular file"):
        atomic_write_text(link, "x")


def test_stale_temporary_files_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = tmp_path / f".report.md.{dead}.abcdefgh.tmp"
    stale.write_text("half")
    old = tmp_path / ".report.md.ABCDEFGH.tmp"  # the format before the pid was in the name
    old.write_text("half")
    os.utime(old, (0, 0))
    live = tmp_path / f".report.md.{os.getppid()}.ijklmnop.tmp"  # a running process's write is left alone
    live.write_text("in progress")
    other = tmp_path / f".layers.csv.{dead}.abcdefgh.tmp"  # another file's: removed when that file is written
    other.write_text("half")
    atomic_write_text(tmp_path / "report.md", "done")
    assert not stale.exists() and not old.exists() and live.exists() and other.exists()
    assert (tmp_path / "report.md").read_text() == "done"


def _dead_pid() -> int:
    pid = 2**22 - 1
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_schedule_that_is_not_a_regular_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["/dev/zero", "--plan"])
    err = capsys.readouterr().err
    assert rc == EXIT_USER_ERROR and "not a regular file" in err
