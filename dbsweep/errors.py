"""Errors that carry the CLI exit code they map to (README: exit codes)."""


class DbsweepError(Exception):
    exit_code = 1


class BadInput(DbsweepError):
    """A policy, argument or catalog mismatch: nothing was changed."""

    exit_code = 2


class GateRefused(DbsweepError):
    """The plan's gate did not pass (or is missing or stale): nothing was changed."""

    exit_code = 3


class StoppedEarly(DbsweepError):
    """The run stopped before finishing but can be resumed."""

    exit_code = 4


class WaitedTooLong(StoppedEarly):
    """A lock or statement timeout outlasted the retries: nothing of the last step committed; run again."""


def timed_out(exc: BaseException) -> bool:
    """A lock or statement timeout ran out, on whichever database."""
    from .dialects.errors import TIMEOUT, meaning

    return meaning(exc) == TIMEOUT
