"""One study over many processes started by ``torchrun``: who runs what, and how the results meet.

The engine asks :func:`join` for a :class:`~compress.distributed.team.Team` and calls a handful of its
methods (where each statistics source and experiment runs, exchanging results, which rank writes).
Without the environment ``torchrun`` sets (``WORLD_SIZE`` above 1) the team is a :class:`SoloTeam`: every
method is the one-process behaviour, no process group is created and ``compress.distributed.group`` (the
only module that calls ``torch.distributed``) is never imported.

Example:
    >>> join({}).size
    1
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from compress.distributed.placement import Placement, Work, place
from compress.distributed.team import SoloTeam, Team

__all__ = ["join", "Team", "SoloTeam", "Placement", "Work", "place", "in_distributed_env"]


def in_distributed_env(env: Mapping[str, str] | None = None) -> bool:
    """True when ``torchrun`` (or a launcher setting the same variables) started more than one process.

    Example:
        >>> in_distributed_env({"WORLD_SIZE": "2", "RANK": "0"}), in_distributed_env({"WORLD_SIZE": "1"})
        (True, False)
    """
    env = os.environ if env is None else env
    try:
        return int(env.get("WORLD_SIZE", "1")) > 1 and "RANK" in env
    except ValueError:
        return False


def join(env: Mapping[str, str] | None = None) -> Team:
    """The team of this process: a process group when started by torchrun, else a one-process team.

    Example:
        >>> join({}).writer
        True
    """
    if not in_distributed_env(env):
        return SoloTeam()
    from compress.distributed.group import GroupTeam  # only now: torch.distributed is set up only here

    return GroupTeam.from_env(os.environ if env is None else env)
