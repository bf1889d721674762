"""What a database error means, whichever server sent it: a wait that ran out (lock or statement
timeout), a conflict worth retrying (deadlock, serialization), the server gone away, or none of
these. PostgreSQL says it with SQLSTATE; SQL Server with error numbers; Babelfish maps most of
its PostgreSQL errors to SQL Server's numbers and the rest to one number of its own, with
PostgreSQL's message, so those are told apart by their message."""

from __future__ import annotations

import sqlalchemy as sa

TIMEOUT, CONFLICT, UNAVAILABLE = "timeout", "conflict", "unavailable"

SQLSTATES = {
    "55P03": TIMEOUT,  # lock_not_available
    "57014": TIMEOUT,  # query_canceled (statement timeout)
    "40001": CONFLICT,  # serialization_failure
    "40P01": CONFLICT,  # deadlock_detected
    "57P01": UNAVAILABLE, "57P02": UNAVAILABLE, "57P03": UNAVAILABLE,  # shutdown, crash, cannot connect now
}

MSSQL_NUMBERS = {
    1222: TIMEOUT,  # lock request time out period exceeded
    1205: CONFLICT,  # chosen as deadlock victim
    3960: CONFLICT,  # snapshot isolation update conflict
    6005: UNAVAILABLE,  # shutdown in progress
    # DB-Library (pymssql's client): cannot connect, read or write failed, the connection is dead
    20002: UNAVAILABLE, 20003: UNAVAILABLE, 20004: UNAVAILABLE, 20006: UNAVAILABLE, 20009: UNAVAILABLE,
    20017: UNAVAILABLE, 20047: UNAVAILABLE,
}
BABELFISH_UNMAPPED = 33557097
BABELFISH_MESSAGES = {
    "canceling statement due to lock timeout": TIMEOUT,
    "canceling statement due to statement timeout": TIMEOUT,
    "deadlock detected": CONFLICT,
    "could not serialize access": CONFLICT,
    "terminating connection due to administrator command": UNAVAILABLE,
    "the database system is shutting down": UNAVAILABLE,
    "the database system is starting up": UNAVAILABLE,
}


def mssql_number(error: BaseException) -> int | None:
    """The server's error number of a pymssql error: `number`, or the first of its args."""
    number = getattr(error, "number", None)
    if number is None and error.args:
        first = error.args[0]
        number = first[0] if isinstance(first, tuple) and first else first
    return number if isinstance(number, int) else None


def meaning(exc: BaseException) -> str | None:
    """TIMEOUT, CONFLICT, UNAVAILABLE or None for an error SQLAlchemy raised (or its driver's own)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return UNAVAILABLE
    error = getattr(exc, "orig", None) or exc
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate is not None:
        return SQLSTATES.get(sqlstate) or (UNAVAILABLE if sqlstate.startswith("08") else None)
    if type(error).__module__.startswith("pymssql"):
        number = mssql_number(error)
        if number == BABELFISH_UNMAPPED:
            text = str(error).lower()
            return next((what for message, what in BABELFISH_MESSAGES.items() if message in text), None)
        return MSSQL_NUMBERS.get(number)
    if isinstance(exc, sa.exc.OperationalError):
        return UNAVAILABLE  # no SQLSTATE (psycopg, SQLite): it could not reach the server or file at all
    return None
