"""Dedupe's `in_place` strategy: batches walk the primary key and delete each duplicate, archived to
`<table>__archive` in the batch's own transaction (with `referenced = "repoint"`, the rows pointing
at a duplicate first move to the row that stays, journaled as merge journals them); a final pass
takes rows that arrived after the plan; then the unique index is built CONCURRENTLY and attached
as the constraint."""

from __future__ import annotations

import sqlalchemy as sa

from .. import inbound
from ..archive import Change
from ..dialects import pg_merge
from ..errors import StoppedEarly
from ..keys import after_key, from_json, to_json
from ..names import derived
from ..walkers import KeyWalker, StagedWalker, Walker, table_walker
from .dedupe_rule import duplicate_map, is_duplicate, rule_order

CONSTRAINT_ATTEMPTS = 3


class StageSink(Change):
    """The archive for batches that delete; nothing recorded for the DDL stages."""

    def __init__(self, inner: Change):
        self.inner, self.recording = inner, True

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id = run_id
        self.inner.begin_batch(run_id, batch_no)

    @property
    def ref(self):
        return self.inner.ref if self.recording else None

    @ref.setter
    def ref(self, value):
        self.inner.ref = value

    def apply(self, conn, stmt, table):
        return self.inner.apply(conn, stmt, table)


class Repointing(Change):
    """Before the inner change deletes a batch's duplicates, every row pointing at one of them moves
    to the row its natural key keeps, in the same transaction, journaled in `<table>__dedupe_journal`
    exactly as merge journals its re-points (merge's own SQL, `pg_merge.move_children`)."""

    one_statement = False

    def __init__(self, inner: Change, table: sa.Table, spec: dict):
        self.inner, self.table, self.spec = inner, table, spec

    def begin_batch(self, run_id: str, batch_no: int) -> None:
        self.run_id, self.batch_no = run_id, batch_no
        self.inner.begin_batch(run_id, batch_no)

    @property
    def ref(self):
        return self.inner.ref

    @ref.setter
    def ref(self, value):
        self.inner.ref = value

    def apply(self, conn, stmt, table):
        repoint = self.spec["repoint"]
        doomed = sa.select(table.c[self.spec["key"][0]]).where(stmt.whereclause)
        journal = pg_merge.ensure_journal(conn, repoint["table"], repoint["journal"])
        batch = pg_merge.Batch(conn, repoint, journal, self.run_id, self.batch_no)
        mapping = pg_merge.filled_map(batch, repoint["tables"][repoint["table"]]["key_type"],
                                      duplicate_map(table, self.spec, doomed))
        pg_merge.move_children(batch, repoint["table"], mapping)
        pg_merge.seal_batch(batch)
        return self.inner.apply(conn, stmt, table)


class Staged(StagedWalker):
    def batch(self, conn, size, exact=False):
        self.sink.recording = self.stage not in self.outside  # DDL stages record no archive
        return super().batch(conn, size, exact)

    def _helper(self, conn, size, exact):
        """The index that makes a key's kept row one probe away, built CONCURRENTLY (writers go on)."""
        name = self.step.spec["helper_index"]
        if name is not None:
            dialect = self.ctx.dialect
            with self.ctx.engine.connect() as check:
                state = dialect.index_state(check, self.table, name)
            if state == "invalid":  # a build killed half way
                dialect.drop_index(self.ctx.engine, self.table, name)
            if state != "valid":
                spec = self.step.spec
                columns = [self.table.c[c] for c in spec["natural_key"]]
                columns += [self.table.c[c].desc() if desc else self.table.c[c] for c, desc in rule_order(spec)]
                dialect.build_index(self.ctx.engine, sa.Index(name, *columns), self.ctx.options.lock_timeout_s)
        return 0, self.next_stage()


class InPlaceWalker(Staged):
    stages = ("helper", "delete", "guard", "late", "constraint", "cleanup")
    outside = frozenset({"helper", "guard", "constraint", "cleanup"})

    def __init__(self, ctx, table, step, sink, cursor, selection):
        super().__init__(ctx, table, step, sink, cursor)
        self.selection = selection
        self.inner: Walker | None = None  # the primary-key walk of stage "delete"

    def _delete(self, conn, size, exact):
        if self.step.last_key is None:  # an empty table at plan time
            return 0, self.next_stage()
        if self.inner is None:
            keyed = self.step.model_copy(update={"walk": "key"})
            self.inner = table_walker(self.ctx, self.table, keyed, self.selection, self.sink, self.cursor)
        rows, cursor = self.inner.batch(conn, size, exact)
        return rows, self.next_stage() if cursor is None else {"stage": "delete", **cursor}

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if self.inner is not None and cursor.get("stage") == "delete":
            self.inner.advance(cursor, rows, size)
        super().advance(cursor, rows, size)

    def _guard(self, conn, size, exact):
        """From here on a new duplicate is refused (as the constraint will refuse it), so the final
        pass is final and the concurrent build is not raced by a writer that keeps duplicating."""
        with self.ctx.engine.begin() as tx:
            self.ctx.dialect.set_session_timeouts(tx, self.step.spec["lock_timeout_swap_s"], 60, local=True)
            spec = self.step.spec
            self.ctx.dialect.guard_key(tx, self.table, guard_name(self.table), spec["natural_key"], spec["key"],
                                       spec["nulls"] == "equal")
        return 0, self.next_stage()

    def _late(self, conn, size, exact):
        """Rows that arrived after the plan (or, after a failed constraint build, the whole table)."""
        keys = [self.table.c[k] for k in self.step.key]
        upto = self.cursor.get("upto")
        if upto is None:
            start = self.cursor.get("from", self.step.spec["plan_last_key"])
            later = sa.select(*keys)
            if start is not None:
                later = later.where(after_key(keys, from_json(keys, start)))
            last = conn.execute(later.order_by(*[k.desc() for k in keys]).limit(1)).first()
            if last is None:
                return 0, self._to_constraint()
            upto, self.cursor["after"] = to_json(last), start
        late = self.step.model_copy(update={"first_key": self.cursor.get("after"), "last_key": upto})
        rows, cursor = KeyWalker(self.ctx.dialect, self.table, self.selection, late, self.sink,
                                 self.cursor.get("after")).batch(conn, size, exact)
        if cursor is None:
            return rows, self._to_constraint()
        return rows, {**self.cursor, "stage": "late", "upto": upto, "after": cursor["after"]}

    def _kept_as_referenced(self, conn) -> list[str]:
        """Duplicates the run's guard kept because a foreign key came to point at them."""
        spec = self.step.spec
        duplicate = is_duplicate(self.table, self.table.alias("dbsweep_k"), spec)
        return inbound.blockers(conn, self.table, duplicate, [inbound.InboundKey.from_spec(k) for k in spec.get("guard", [])],
                                "duplicate rows", lambda key: "they became referenced")

    def _to_constraint(self) -> dict:
        return {"stage": "constraint", "attempt": self.cursor.get("attempt", 1)}

    def _constraint(self, conn, size, exact):
        """CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT … USING INDEX under a short lock.
        A duplicate written in between makes the build fail: its invalid index is dropped, the
        whole table is swept once more, and the build tried again, a bounded number of times."""
        spec, dialect, engine = self.step.spec, self.ctx.dialect, self.ctx.engine
        name = spec["constraint"]
        with engine.connect() as check:
            state = dialect.index_state(check, self.table, name)
            kept = self._kept_as_referenced(check) if state != "valid" else []
        if kept:
            raise StoppedEarly(f"table '{self.table.fullname}': {'; '.join(kept)} since the plan, so they stay and the "
                               f"unique index {name} cannot be built; abandon this run and plan again "
                               "(referenced = \"repoint\" moves such rows to the kept row)")
        if state == "invalid":
            dialect.drop_index(engine, self.table, name)
        if state != "valid":
            index = dialect.unique_index(self.table, name, spec["natural_key"], spec["nulls"] == "equal")
            try:
                dialect.build_index(engine, index, self.ctx.options.lock_timeout_s)
            except sa.exc.IntegrityError as exc:
                attempt = self.cursor.get("attempt", 1)
                if attempt >= CONSTRAINT_ATTEMPTS:
                    raise StoppedEarly(f"table '{self.table.fullname}': the unique index {name} failed {attempt} times "
                                       f"on new duplicates ({str(exc.orig).splitlines()[0]}); run again to resume") from None
                return 0, {"stage": "late", "from": None, "attempt": attempt + 1}
        with engine.begin() as tx:
            dialect.set_session_timeouts(tx, spec["lock_timeout_swap_s"], 60, local=True)
            if _constraint_named(tx, self.table, name) is None:
                dialect.constraint_using_index(tx, self.table, name, spec["natural_key"])
            dialect.drop_key_guard(tx, self.table, guard_name(self.table))
        return 0, self.next_stage()

    def _cleanup(self, conn, size, exact):
        name = self.step.spec["helper_index"]
        if name is not None:
            self.ctx.dialect.drop_index(self.ctx.engine, self.table, name)
        return 0, None


def guard_name(table: sa.Table) -> str:
    return derived(table.name, "__dedupe_guard")


def _constraint_named(conn, table: sa.Table, name: str) -> str | None:
    from ..dialects import dialect_for

    found = dialect_for(conn).index_named(conn, table, name)
    return name if found is not None and found["constraint"] else None


