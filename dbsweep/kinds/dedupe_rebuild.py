"""Dedupe's `rebuild` strategy (PostgreSQL, most rows duplicates), on the shared rebuild engine
(`dbsweep.kinds.rebuild`): the kept row of each natural key is copied into the shadow by a loose
index scan, keys with NULL parts apart, and the new table gets the unique constraint."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from ..keys import to_json
from . import rebuild
from .dedupe_in_place import Staged
from .dedupe_rule import is_duplicate, rule_order

WORD = "dedupe"  # its objects are <table>__dedupe_new, __dedupe_log, __dedupe_<stamp>, ...


def rebuild_names(conn: sa.Connection, table: sa.Table, now: datetime) -> dict:
    return rebuild.rebuild_names(conn, table, now, WORD)


def backups(conn: sa.Connection, table: sa.Table) -> list[tuple[str, datetime]]:
    return rebuild.backups(conn, table, WORD)


def removed(step):
    """Restore puts back the backup's duplicates (by the rule) that the table lacks: never a row a
    writer deleted after the swap."""
    return lambda backup, table: is_duplicate(backup, backup.alias("dbsweep_earlier"), step.spec)


class DedupeRebuildWalker(rebuild.RebuildWalker, Staged):
    stages = ("prepare", "helper", "copy", "nulls", "settle", "build", "catchup", "swap", "count")
    outside = frozenset({"helper"})

    def logged(self) -> list[str]:
        return self.step.key + self.step.spec["natural_key"]

    def skip_indexes(self) -> list[str]:
        return [self.step.spec["helper_index"]]

    def _copy(self, conn, size, exact):
        spec = self.step.spec
        _, last = self.sql.copy_kept(conn, self.table, self.names.shadow, spec["natural_key"], rule_order(spec),
                                     self.columns, self.types, self.cursor.get("after"), size)
        return 0, self.next_stage() if last is None else {**self.cursor, "stage": "copy", "after": to_json(last)}

    def _nulls(self, conn, size, exact):
        spec = self.step.spec
        if not any(self.table.c[c].nullable for c in spec["natural_key"]):
            return 0, self.next_stage()  # NOT NULL key columns: no row to look for
        self.sql.copy_null_keys(conn, self.table, self.names.shadow, spec["natural_key"], rule_order(spec),
                                self.columns, spec["nulls"] == "equal")
        return 0, self.next_stage()

    def constraints(self, conn) -> None:
        """The new unique constraint, on the shadow before the swap."""
        spec = self.step.spec
        shadow = sa.Table(self.names.shadow, sa.MetaData(), *(sa.Column(c) for c in spec["natural_key"]),
                          schema=self.table.schema)
        conn.execute(sa.schema.CreateIndex(
            self.ctx.dialect.unique_index(shadow, spec["constraint"], spec["natural_key"], spec["nulls"] == "equal")))
        self.ctx.dialect.constraint_using_index(conn, shadow, spec["constraint"], spec["natural_key"])

    def replay(self, conn, limit):
        spec = self.step.spec
        return self.sql.consume_log(conn, self.table, self.names, self.step.key, spec["natural_key"], rule_order(spec),
                                    self.columns, spec["nulls"] == "equal", limit), 0

    def rows_removed(self, conn, backup: sa.Table) -> int:
        """The backup's rows whose key the new table does not hold."""
        now = sa.Table(self.table.name, sa.MetaData(), *(sa.Column(k) for k in self.step.key), schema=self.table.schema)
        gone = conn.execute(sa.select(sa.func.count()).select_from(backup).where(~sa.exists(
            sa.select(sa.literal(1)).select_from(now).where(*(now.c[k] == backup.c[k] for k in self.step.key)))
        )).scalar()
        helper = self.step.spec.get("helper_index")
        if helper:  # dbsweep's helper went with the old table: its name is free again for a later plan
            self.sql.drop_index_here(conn, self.table.schema, helper)
        return gone
