"""The team of a ``torchrun`` launch: a ``torch.distributed`` process group (gloo, or nccl on CUDA).

Only imported when the environment names more than one process. Every wait is bounded:
``COMPRESS_DIST_TIMEOUT`` seconds (default 3600) for the rendezvous and for each exchange, so a rank
that hangs ends the run with an error instead of holding every other rank forever. The timeout must
exceed the longest time one rank works alone between two exchanges (one experiment, or a rank's share of
the experiments when they are spread).

Example:
    >>> _timeout({"COMPRESS_DIST_TIMEOUT": "60"}).total_seconds()
    60.0
"""

from __future__ import annotations

import datetime
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from compress import errors
from compress.distributed.team import RemoteFailure, Team
from compress.errors import CompressError

__all__ = ["GroupTeam"]

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 3600
EXIT_USER_ERROR, EXIT_FAILURE = 2, 1


def _timeout(env: Mapping[str, str]) -> datetime.timedelta:
    raw = env.get("COMPRESS_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 7 * 86400:
        raise CompressError(f"COMPRESS_DIST_TIMEOUT must be a number of seconds between 0 and one week, got {raw!r}.")
    return datetime.timedelta(seconds=seconds)


def _placement(env: Mapping[str, str]) -> str:
    mode = env.get("COMPRESS_DIST_PLACEMENT", "auto")
    if mode not in ("auto", "spread", "shard"):
        raise CompressError(f"COMPRESS_DIST_PLACEMENT must be auto, spread or shard, got {mode!r}.")
    return mode


class _Failure:
    """What a failing rank gives the others at its next exchange."""

    def __init__(self, rank: int, exc: BaseException) -> None:
        self.rank = rank
        self.user = isinstance(exc, CompressError)
        self.kind = type(exc).__name__
        self.message = str(exc) if self.user else f"{self.kind}: {exc}"

    def error(self) -> CompressError:
        """The user error again, of its own type where that is one of compress's."""
        cls = getattr(errors, self.kind, CompressError)
        cls = cls if isinstance(cls, type) and issubclass(cls, CompressError) else CompressError
        return cls(self.message)


class GroupTeam(Team):
    """Ranks of one ``torch.distributed`` process group; see the module docstring."""

    def __init__(self, rank: int, size: int, local_rank: int, backend: str) -> None:
        self.rank, self.size, self.local_rank, self.backend = rank, size, local_rank, backend
        self._stopped = False  # set once an error was exchanged: no further exchange may be entered

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GroupTeam:
        """Join the process group described by torchrun's variables (``RANK``, ``WORLD_SIZE``, ...)."""
        try:
            rank, size, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
        except (KeyError, ValueError) as exc:
            raise CompressError(f"torchrun's environment is incomplete or not numbers ({exc}).") from None
        backend = env.get("COMPRESS_DIST_BACKEND") or ("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():  # device 'auto'/'cuda' then means this local rank's GPU
            torch.cuda.set_device(local % torch.cuda.device_count())
        try:
            if not dist.is_initialized():
                dist.init_process_group(backend, timeout=_timeout(env), rank=rank, world_size=size)
        except (RuntimeError, ValueError) as exc:
            raise CompressError(
                f"rank {rank} could not join the other {size - 1} process(es) ({exc}). Check MASTER_ADDR/"
                "MASTER_PORT (or torchrun's --rdzv-endpoint) and that every node runs the same command."
            ) from None
        team = cls(rank, size, local, backend)
        team.placement = _placement(env)
        return team

    def exchange(self, obj: T) -> list[T]:
        """Every rank's ``obj``; raises at once (on every rank) when any rank gave a failure."""
        got = self._all_gather(obj)
        failures = [g for g in got if isinstance(g, _Failure)]
        if failures:
            self._stopped = True
            raise self._failure_here(failures[0])
        return got

    def _all_gather(self, obj: Any) -> list[Any]:
        if self._stopped:
            raise RemoteFailure("the run already stopped", EXIT_FAILURE)
        out: list[Any] = [None] * self.size
        try:
            dist.all_gather_object(out, obj)
        except (RuntimeError, ValueError) as exc:  # a peer died (connection closed) or timed out
            self._stopped = True  # not a user error (exit 1), but said here: the rank that stopped cannot
            raise RemoteFailure(
                f"rank {self.rank}: another process of this run stopped or stopped answering ({exc}). "
                "Look at the other ranks' output (torchrun prints which one exited and how).",
                EXIT_FAILURE,
                quiet=False,
            ) from None
        return out

    def _failure_here(self, failure: _Failure) -> BaseException:
        code = EXIT_USER_ERROR if failure.user else EXIT_FAILURE
        if not self.writer:
            return RemoteFailure(failure.message, code)
        if failure.user:
            return failure.error()
        return RemoteFailure(f"rank {failure.rank} failed: {failure.message}", code, quiet=False)

    def guard(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; a failure here is given to the other ranks at one last exchange, then raised."""
        try:
            return fn()
        except RemoteFailure:
            raise
        except CompressError as exc:
            if self._stopped:  # the exchange itself failed: nobody is left to tell
                raise
            self._announce(exc)
            if self.writer:
                raise
            raise RemoteFailure(str(exc), EXIT_USER_ERROR) from exc
        except Exception as exc:
            if not self._stopped:
                traceback.print_exc()  # a bug, not a user error: this rank shows its own traceback
                self._announce(exc)
            raise RemoteFailure(f"rank {self.rank} failed: {type(exc).__name__}: {exc}", EXIT_FAILURE) from exc

    def _announce(self, exc: BaseException) -> None:
        try:
            self._all_gather(_Failure(self.rank, exc))
        except RemoteFailure:
            pass  # the others are gone already
        self._stopped = True

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
