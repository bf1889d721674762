"""The rows a rebuilt table had at its swap, without counting its backup afterwards.

Once the capture trigger is in place, a connection of its own counts the table under one snapshot
while the copy runs. Every write the snapshot did not see is in the log with its transaction and
what it did to the row count (+1, -1, 0), and every one is taken from the log by a replay before
the swap commits (the last under the swap's lock): the rows at the swap are the count plus the
signs of the changes taken whose transaction the snapshot did not see. The cursor carries the sum,
committed with each replay, so a rerun resumes it; a rerun that finds no census (the process that
copied was killed before the count came back) counts the backup instead."""

from __future__ import annotations

import re
import threading

import sqlalchemy as sa

from ..errors import BadInput

SNAPSHOT = re.compile(r"(\d+):(\d+):(\d+(,\d+)*)?")


class Census:
    """The table counted under a snapshot, on a thread and connection of its own."""

    def __init__(self, ctx, table: sa.Table):
        from ..dialects import pg_rebuild

        self.sql, self.found, self.conn = pg_rebuild, None, None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._count, args=(ctx, table), name="dbsweep-census", daemon=True)
        self.thread.start()

    def _count(self, ctx, table) -> None:
        try:
            with ctx.engine.connect() as conn:
                with self.lock:
                    self.conn = conn
                try:
                    ctx.dialect.set_session_timeouts(conn, ctx.options.lock_timeout_s, ctx.options.statement_timeout_s)
                    conn.commit()
                    self.found = self.sql.snapshot_count(conn, table)
                    conn.rollback()
                finally:
                    with self.lock:
                        self.conn = None
        except Exception:  # noqa: BLE001 - cancelled or failed: the count stage counts the backup instead
            self.found = None

    def result(self) -> dict | None:
        """Wait for the count: the cursor's census entry, or None when there is none."""
        self.thread.join()
        if self.found is None:
            return None
        snapshot, rows = self.found
        return {"snapshot": snapshot, "rows": rows, "delta": 0}

    def cancel(self) -> None:
        """Stop the count (the run is leaving the step before its replays): cancelled until the
        thread ends, since a cancel that lands between two statements cancels nothing."""
        while self.thread.is_alive():
            with self.lock:
                if self.conn is not None:
                    self.sql.cancel(self.conn)
            self.thread.join(0.2)


def is_count(value) -> bool:
    """An int read back from JSON (not a bool, which JSON's true would give)."""
    return isinstance(value, int) and not isinstance(value, bool)


def checked(census, table: str) -> dict | None:
    """A census read back from the ledger's cursor, refused unless it has the shape one is written in."""
    if census is None:
        return None
    shape = (isinstance(census, dict) and set(census) == {"snapshot", "rows", "delta"}
             and isinstance(census["snapshot"], str) and SNAPSHOT.fullmatch(census["snapshot"])
             and is_count(census["rows"]) and is_count(census["delta"])
             and census["rows"] >= 0)
    if not shape:
        raise BadInput(f"ledger cursor of '{table}' has a census that is not a snapshot, a row count and a "
                       f"change count: {str(census)[:80]!r}")
    xmin, xmax = (int(n) for n in SNAPSHOT.fullmatch(census["snapshot"]).group(1, 2))
    if xmin > xmax:
        raise BadInput(f"ledger cursor of '{table}' has a census snapshot whose xmin passes its xmax")
    return census
