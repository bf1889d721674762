"""Errors that carry the CLI exit code they map to (DESIGN.md: exit codes)."""


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
