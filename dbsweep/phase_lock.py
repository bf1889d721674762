"""One phase at a time per database: a session lock held on a connection of its own for the
whole run, taken again after a server restart freed it."""

from __future__ import annotations

import sqlalchemy as sa

from .errors import DbsweepError


class PhaseLock:
    def __init__(self, engine: sa.Engine, dialect, policy: str, phase: str):
        self.engine, self.dialect, self.phase = engine, dialect, phase
        self.key = f"dbsweep:{policy}:{phase}"
        self.conn: sa.Connection | None = None

    def __enter__(self) -> PhaseLock:
        self.conn = self.engine.connect()
        if not self.dialect.try_phase_lock(self.conn, self.key):
            self._drop(release=False)
            raise DbsweepError(f"phase {self.phase!r} is already running against this database")
        self.conn.commit()  # a session lock: not left idle in a transaction for the whole run
        return self

    def __exit__(self, *exc) -> None:
        self._drop(release=True)

    def hold(self) -> None:
        """A server restart ends the lock's session and frees the lock. Before a new connection is
        used, make sure the lock is still ours, taking it again after a restart; if another process
        took it meanwhile, stop."""
        if self.conn is not None:
            try:
                self.conn.execute(sa.select(sa.literal(1)))
                self.conn.rollback()
                return
            except sa.exc.DBAPIError:
                self._drop(release=False)
        conn = self.engine.connect()  # fails (and the batch is retried) while the server is down
        if not self.dialect.try_phase_lock(conn, self.key):
            conn.close()
            raise DbsweepError(f"phase {self.phase!r}: another process took its lock while the database "
                               "restarted; this run stops here (its ledger is consistent)")
        conn.commit()
        self.conn = conn

    def _drop(self, release: bool) -> None:
        if self.conn is None:
            return
        try:
            if release:
                self.dialect.release_phase_lock(self.conn, self.key)
                self.conn.commit()
            self.conn.close()
        except sa.exc.DBAPIError:
            self.conn.invalidate()  # the session is gone, and its lock with it
        self.conn = None
