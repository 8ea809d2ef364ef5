"""The team of processes running one study, and the one-process team used without ``torchrun``.

Every exchange between ranks is :meth:`Team.exchange`: each rank gives one Python object and gets every
rank's, in rank order. A rank that fails gives its error instead, at the next exchange it reaches; a rank
that receives an error stops at once (it enters no further exchange), so the ranks never wait for a
partner that has left. The writer (rank 0) shows the error; the others exit with the same code, silently.

Example:
    >>> team = SoloTeam()
    >>> team.exchange({"a": 1}), team.writer, team.guard(lambda: 3)
    ([{'a': 1}], True, 3)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["Team", "SoloTeam", "RemoteFailure"]

T = TypeVar("T")


class RemoteFailure(Exception):
    """A rank failed; unless ``quiet`` is False its error was already shown by the rank that shows errors.

    ``exit_code`` is what this process exits with (2 when the failure was a user error).
    """

    def __init__(self, message: str, exit_code: int, quiet: bool = True) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.quiet = quiet  # True: shown by another rank already


class Team:
    """What the engine needs from a set of processes; this base class is the one-process behaviour."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = "none"
    placement: str = "auto"  # the rule of compress.distributed.placement, or 'spread'/'shard' to measure it

    @property
    def writer(self) -> bool:
        """True on the one rank that writes files, shows progress bars and shows errors (rank 0)."""
        return self.rank == 0

    def exchange(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order (see the module docstring for failures)."""
        return [obj]

    def guard(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` so that a failure on any rank ends every rank (nothing to coordinate alone)."""
        return fn()

    def close(self) -> None:
        """Leave the team (destroys the process group, if any)."""

    def __enter__(self) -> Team:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Processes, backend and this rank, for the report and the manifest.

        Example:
            >>> SoloTeam().describe()["processes"]
            1
        """
        return {"processes": self.size, "backend": self.backend, "placement": self.placement}


class SoloTeam(Team):
    """One process, no process group: exactly the behaviour of compress before it had a team."""
