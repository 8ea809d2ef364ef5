"""User-facing error types.

Every error a user can cause (bad schedule, missing file, unknown component, bad
plugin, bad statistics) is a :class:`CompressError`. The CLI prints its message as
one paragraph and exits with code 2; ``--debug`` adds the traceback. ``assert`` is
kept for internal invariants only.
"""

from __future__ import annotations

__all__ = [
    "CompressError",
    "ScheduleError",
    "RegistryError",
    "PluginError",
    "ConversionError",
    "StatsError",
    "QuantizationError",
    "ModelError",
    "DataError",
    "ArtifactError",
]


class CompressError(Exception):
    """Base class of every error caused by user input; message says what to do."""


class ScheduleError(CompressError):
    """A schedule file is malformed; the message lists every problem found."""


class RegistryError(CompressError):
    """An unknown or duplicate component name."""


class PluginError(CompressError):
    """A plugin module named by an entry point or a schedule failed to import."""


class ConversionError(CompressError):
    """Converting a model (e.g. nn.LSTM -> ModularLSTM) failed or changed its outputs."""


class StatsError(CompressError):
    """Calibration statistics are missing, malformed, non-finite or for another model."""


class QuantizationError(CompressError):
    """A quantizer setting cannot be applied (unknown key, rule matching nothing, ...).

    Args:
        message: what is wrong and what to do.
        rule: index of the override rule at fault in the quantizer's ``overrides`` list, when the
            error is about one rule; the engine then reports it at that rule's line in the schedule.

    Example:
        >>> QuantizationError("Override rule '#1 enc' matches no module.", rule=1).rule
        1
    """

    def __init__(self, message: str = "", *, rule: int | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class ModelError(CompressError):
    """A model or checkpoint cannot be built or loaded."""


class DataError(CompressError):
    """A dataset cannot be found, read or split."""


class ArtifactError(QuantizationError):
    """A deployable artifact (``.qpt``) is unreadable, corrupt, truncated or inconsistent; the message names it."""
