"""Files in and out: atomic writes inside a folder, bounded reads of regular files, nothing executed.

Writes go to a temporary file beside the target (``.NAME.<pid>.<random>.tmp``) that is renamed over it, so
an interrupted write leaves the previous file untouched; a write also removes the temporary files of the
same target that a killed process left behind (their process is gone). Only a regular file is ever
replaced: a rename onto a device node, a FIFO or a folder would replace *that*. Reads of user files
(schedules, statistics, checkpoints, MIDI) accept only regular files below a size limit, so ``/dev/zero``,
a FIFO or a huge file is refused with a reason instead of hanging or filling the memory.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write_text(p, "hello")
    >>> read_regular_file(p, 100, "the test file")
    b'hello'
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

from compress.errors import CompressError

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_with",
    "atomic_torch_save",
    "open_regular_file",
    "read_regular_file",
    "output_file",
    "prepare_output_dir",
    "PLAIN_NAME",
]

# Names a schedule may give an output file: no folder part, no leading dot (no '.', '..', hidden files).
PLAIN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_PLAIN = re.compile(PLAIN_NAME)
# Temporary files of ours: .NAME.<pid>.<mkstemp random>.tmp (before the pid was added: .NAME.<random>.tmp).
_TMP = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?[A-Za-z0-9_]{8}\.tmp$")
_OLD_TMP_SECONDS = 3600  # a pid-less temporary file this old belongs to no running write


def _fmt(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def open_regular_file(path: str | os.PathLike[str], limit: int, what: str) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file of at most ``limit`` bytes.

    The file is opened without blocking and checked through its descriptor, so a FIFO never blocks the
    open and the checked file is the one read.

    Raises:
        CompressError: the file is missing, unreadable, not a regular file or too large.

    Example:
        >>> open_regular_file("/dev/zero", 10, "the stats file")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.CompressError: ...
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise CompressError(f"Cannot read {what} '{path}': {exc.strerror or exc}. Check the path.") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CompressError(
            f"{what.capitalize()} '{path}' is not a regular file (a folder, device or pipe); "
            "compress reads only regular files. Give the path of a file."
        )
    if st.st_size > limit:
        os.close(fd)
        raise CompressError(
            f"{what.capitalize()} '{path}' is {_fmt(st.st_size)}, more than the {_fmt(limit)} compress reads "
            "for such a file. Is it the right file?"
        )
    return os.fdopen(fd, "rb")


def read_regular_file(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes (see :func:`open_regular_file`).

    Example:
        >>> read_regular_file("/nonexistent", 10, "the schedule")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.CompressError: ...
    """
    with open_regular_file(path, limit, what) as f:
        data = f.read(limit + 1)  # the file may have grown since the check
    if len(data) > limit:
        raise CompressError(f"{what.capitalize()} '{path}' grew beyond {_fmt(limit)} while being read.")
    return data


def output_file(folder: str | os.PathLike[str], name: str, what: str = "an output file") -> Path:
    """``folder / name`` when ``name`` is a plain file name (so the file stays inside ``folder``).

    Example:
        >>> output_file("runs/x", "stats.yaml").as_posix()
        'runs/x/stats.yaml'
        >>> output_file("runs/x", "../y.yaml")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        compress.errors.CompressError: ...
    """
    if not isinstance(name, str) or not _PLAIN.match(name):
        raise CompressError(
            f"{name!r} cannot be the name of {what}: outputs are written only inside the report folder, so the "
            "name must be a plain file name (letters, digits, '_', '.', '-'; no folder, not starting with '.')."
        )
    return Path(folder) / name


def prepare_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the report folder ``path`` (and its parents) or say why it cannot be one.

    Example:
        >>> import tempfile
        >>> prepare_output_dir(tempfile.mkdtemp() + "/r").is_dir()
        True
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CompressError(f"The report folder '{p}' exists and is not a folder; give --out a folder path.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompressError(f"Cannot create the report folder '{p}': {exc.strerror or exc}.") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise CompressError(f"The report folder '{p}' is not writable; give --out a folder you can write to.")
    return p


def _check_replaceable(target: Path) -> None:
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise CompressError(
            f"Cannot write '{target}': something that is not a regular file (a folder, link, device or pipe) "
            "is there, and compress replaces only regular files. Move it away or choose another report folder."
        )


def _remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files for ``target`` left by writes whose process is gone (a killed run)."""
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        m = _TMP.match(entry.name)
        if not m or m.group("name") != target.name or not entry.is_file(follow_symlinks=False):
            continue
        pid = m.group("pid")
        stale = _process_gone(int(pid)) if pid else _older_than(entry, _OLD_TMP_SECONDS)
        if stale:
            Path(entry.path).unlink(missing_ok=True)


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours: a write in progress in this process (another thread)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError, OSError):
        return False
    return False


def _older_than(entry: os.DirEntry[str], seconds: float) -> bool:
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime > seconds
    except OSError:
        return False


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

    An interrupted write leaves the previous file (if any) untouched.

    Raises:
        CompressError: ``path`` exists and is not a regular file.

    Example:
        >>> import tempfile
        >>> atomic_write_with(tempfile.mkdtemp() + "/b.bin", lambda f: f.write(b"x"))
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_replaceable(target)
    _remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        _check_replaceable(target)  # again: something may have appeared there while we wrote
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> atomic_write_bytes(tempfile.mkdtemp() + "/c.bin", b"x")
    """
    atomic_write_with(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> atomic_write_text(tempfile.mkdtemp() + "/d.txt", "x")
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> atomic_write_json(tempfile.mkdtemp() + "/e.json", {"a": 1})
    """
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` atomically.

    Example:
        >>> import tempfile
        >>> atomic_torch_save({"a": 1}, tempfile.mkdtemp() + "/f.pt")
    """
    import torch

    atomic_write_with(path, lambda f: torch.save(obj, f))
