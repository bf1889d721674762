"""How a table's batches are walked, apart from what a batch does (the step's `Change`): key-set
pagination on the primary key, integer key ranges, or PostgreSQL heap-block ranges. The executor
only calls the `Walker` interface; a kind with steps of its own (cascade, retire, a partition)
brings its own walker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from .archive import Change
from .dialects import Dialect
from .errors import BadInput
from .keys import from_json, to_json
from .kinds.common import key_columns
from .plan import Step


@dataclass
class WalkContext:
    """What a kind needs to build a step's walker and change."""

    engine: sa.Engine
    dialect: Dialect
    options: object  # RunOptions

    @property
    def archive_dir(self) -> Path | None:
        return self.options.archive_dir


class Walker:
    """One step's batches. `batch` runs inside the batch's transaction and returns the rows it
    changed and the cursor to commit with them (None: the step is done); `advance` is called once
    that transaction has committed."""

    done: bool = False
    sink: Change
    step: Step
    _table_name: str | None = None
    # the next batch is DDL no transaction may hold (PostgreSQL's CREATE INDEX CONCURRENTLY): the
    # walker runs it on a connection of its own, idempotently, and the ledger row commits after it
    outside_transaction: bool = False

    @property
    def table_name(self) -> str:
        """The table(s) the last batch changed, as the ledger records them."""
        return self._table_name or self.step.table

    @table_name.setter
    def table_name(self, value: str) -> None:
        self._table_name = value

    def units(self, rows: int) -> int:
        """What the batch size counts, for sizing the next batch from the last one's speed: rows,
        unless the walker's batches are made of something else (a merge: groups)."""
        return rows

    def can_stop_within(self, rows_left: int | None) -> bool:
        """Whether a row cap of `rows_left` can be kept: walkers that change a step whole say no
        when the step holds more."""
        return True

    def close(self) -> None:
        """The run leaves the step (done, stopped or failed): stop whatever the walker runs beside
        its batches."""

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        raise NotImplementedError

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        raise NotImplementedError


def table_walker(ctx: WalkContext, table: sa.Table, step: Step, selection, change: Change, cursor: dict) -> Walker:
    """The walk the plan chose for a table: heap blocks, integer key ranges, or key-set pages."""
    if step.walk == "block":
        with ctx.engine.connect() as conn:
            blocks_now = ctx.dialect.table_blocks(conn, table)
        return BlockWalker(ctx.dialect, table, selection, step, change, cursor.get("block", 0), blocks_now)
    if ctx.dialect.range_walk and KeyRangeWalker.fits(step, key_columns(table, step)):
        return KeyRangeWalker(ctx.dialect, table, selection, step, change, cursor.get("after"))
    return KeyWalker(ctx.dialect, table, selection, step, change, cursor.get("after"))


class KeyWalker(Walker):
    def __init__(self, dialect, table: sa.Table, selection, step: Step, sink, after_json):
        self.dialect, self.table, self.selection, self.step, self.sink = dialect, table, selection, step, sink
        self.keys = key_columns(table, step)
        self.last = from_json(self.keys, step.last_key)
        self.after = from_json(self.keys, after_json)
        self.done = step.last_key is None

    def batch(self, conn: sa.Connection, size: int, exact: bool = True) -> tuple[int, dict | None]:
        outcome = self.dialect.delete_batch(conn, self.table, self.keys, self.selection, self.after, self.last, size,
                                            self.sink)
        return outcome.rows, None if outcome.last_key is None else {"after": to_json(outcome.last_key)}

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if cursor.get("after") is None:
            self.done = True
        else:
            self.after = from_json(self.keys, cursor["after"])


class KeyRangeWalker(Walker):
    """One integer key: each batch deletes the selected rows in (after, after + step], the step
    adapting to the observed density of selected keys so batches stay near the batch size."""

    def __init__(self, dialect, table: sa.Table, selection, step: Step, sink, after_json):
        self.dialect, self.table, self.selection, self.step, self.sink = dialect, table, selection, step, sink
        self.key = key_columns(table, step)[0]
        self.first, self.last = int(step.first_key[0]), int(step.last_key[0])
        self.after = int(after_json[0]) if after_json else self.first - 1
        self.done = self.after >= self.last
        span = self.last - self.first + 1
        self.density = max(step.rows_selected / span, 1e-6)  # selected rows per key value
        self.width = 1

    @staticmethod
    def fits(step: Step, keys) -> bool:
        return (step.walk == "key" and len(keys) == 1 and step.last_key is not None
                and isinstance(step.first_key[0], int) and isinstance(step.last_key[0], int))

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        if exact:  # at most `size` rows: the LIMIT-based key-set batch, same cursor format
            outcome = self.dialect.delete_batch(conn, self.table, [self.key], self.selection,
                                                [self.after], [self.last], size, self.sink)
            self.width = max(1, (outcome.last_key[0] if outcome.last_key else self.last) - self.after)
            return outcome.rows, None if outcome.last_key is None else {"after": [int(outcome.last_key[0])]}
        self.width = max(1, int(size / self.density))
        upto = min(self.last, self.after + self.width)
        rows = self.dialect.delete_key_range(conn, self.table, self.key, self.selection, self.after, upto, self.sink)
        return rows, None if upto >= self.last else {"after": [upto]}

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if cursor.get("after") is None:
            self.done = True
            return
        self.after = cursor["after"][0]
        observed = rows / self.width
        # a dense stretch shrinks the next range at once; a sparse one widens it at most 2x
        self.density = max(observed, self.density / 2, 1e-6) if observed else self.density / 2


class BlockWalker(Walker):
    """PostgreSQL heap-block ranges (TID range scans), sized from the observed density of selected
    rows per block: tables without a key, and `walk = "blocks"`. The walk ends at the plan's block
    count or the table's size when the walk starts, whichever is larger, so rows moved past the
    plan's extent by updates since the plan are still visited."""

    def __init__(self, dialect, table: sa.Table, selection, step: Step, sink, first_block: int, blocks_now: int = 0):
        self.dialect, self.table, self.selection, self.step, self.sink = dialect, table, selection, step, sink
        self.block = first_block or 0
        self.end = max(step.blocks or 0, blocks_now)
        self.density = max(step.rows_selected / self.end, 1.0) if self.end else 1.0
        self.done = self.block >= self.end
        self.pages = 1

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        self.pages = max(1, int(size / self.density))
        stop = min(self.end, self.block + self.pages)
        if exact:  # near a row cap: at most `size` rows, the cursor at the block of the last one
            rows, last_block = self.dialect.delete_block_prefix(conn, self.table, self.selection, self.block, stop,
                                                                size, self.sink)
            if last_block is not None:
                self.pages = max(1, last_block - self.block)
                return rows, {"block": last_block}
            return rows, None if stop >= self.end else {"block": stop}
        rows = self.dialect.delete_block_range(conn, self.table, self.selection, self.block, stop, self.sink)
        return rows, None if stop >= self.end else {"block": stop}

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if "block" not in cursor:
            self.done = True
            return
        self.block = cursor["block"]
        if rows:
            observed = rows / self.pages
            self.density = max(0.5 * self.density + 0.5 * observed, 0.01)


class StagedWalker(Walker):
    """A step walked as named stages, the cursor saying which one and how far: a rerun resumes
    inside the stage it stopped in."""

    stages: tuple[str, ...] = ()
    outside: frozenset[str] = frozenset()  # stages of DDL no transaction may hold

    def __init__(self, ctx, table: sa.Table, step: Step, sink: Change, cursor: dict):
        self.ctx, self.table, self.step, self.sink = ctx, table, step, sink
        self.cursor = {k: v for k, v in cursor.items() if k != "step"}
        self.cursor.setdefault("stage", self.stages[0])
        if self.stage not in self.stages:  # the cursor is read back from the ledger: never trusted
            raise BadInput(f"ledger cursor of '{step.table}' names stage {self.stage!r}, not one of "
                           f"{', '.join(self.stages)}")

    @property
    def stage(self) -> str:
        return self.cursor["stage"]

    @property
    def outside_transaction(self) -> bool:
        return self.stage in self.outside

    def next_stage(self, **extra) -> dict | None:
        later = self.stages.index(self.stage) + 1
        return None if later >= len(self.stages) else {"stage": self.stages[later], **extra}

    def batch(self, conn: sa.Connection, size: int, exact: bool = False) -> tuple[int, dict | None]:
        return getattr(self, f"_{self.stage}")(conn, size, exact)  # each stage is a method `_<stage>`

    def advance(self, cursor: dict, rows: int, size: int) -> None:
        if "stage" not in cursor:
            self.done = True
        else:
            self.cursor = {k: v for k, v in cursor.items() if k != "step"}
