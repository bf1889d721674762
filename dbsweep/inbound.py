"""Foreign keys into a table that a kind deletes rows from, one mechanism for every kind.

At plan time every inbound foreign key (self-references included) is read from the catalog and
the rows it would block (NO ACTION, RESTRICT) or take with it (CASCADE, SET NULL, SET DEFAULT) are
counted; each key with such rows is a blocker the gate refuses, naming the constraint, its ON DELETE
action and the count, unless the policy says what happens to those rows (the kind leaves such keys
out). At run time every key the plan found is a guard in the frozen selection: a batch never
deletes a row that became referenced after the plan, so no cascade the gate did not see can run."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from .dialects import Dialect


@dataclass(frozen=True)
class InboundKey:
    name: str
    schema: str | None
    table: str
    columns: tuple[str, ...]
    referred_columns: tuple[str, ...]
    on_delete: str
    self_reference: bool

    @property
    def where(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def spec(self) -> dict:
        """The key as a frozen plan keeps it (selection rebuilds its guard from this alone)."""
        return {"name": self.name, "schema": self.schema, "table": self.table, "columns": list(self.columns),
                "referred_columns": list(self.referred_columns), "on_delete": self.on_delete,
                "self_reference": self.self_reference}

    @classmethod
    def from_spec(cls, spec: dict) -> InboundKey:
        return cls(spec["name"], spec["schema"], spec["table"], tuple(spec["columns"]),
                   tuple(spec["referred_columns"]), spec["on_delete"], bool(spec["self_reference"]))

    def describe(self, rows: int, what: str, remedy: str) -> str:
        return (f"foreign key {self.name} on {self.where}({', '.join(self.columns)}) ON DELETE {self.on_delete}: "
                f"{rows:,} {what} are referenced; {remedy}")


def keys_into(conn: sa.Connection, dialect: Dialect, table: sa.Table) -> list[InboundKey]:
    """Every foreign key into `table`, from the catalog."""
    default = dialect.default_schema(conn) if dialect.name != "sqlite" else None
    mine = table.schema or default
    found = []
    for fk in dialect.referencing_keys(conn, table):
        same = fk["table"] == table.name and (fk["schema"] or default) == mine
        found.append(InboundKey(fk["name"] or "(unnamed)", fk["schema"], fk["table"], tuple(fk["columns"]),
                                tuple(fk["referred_columns"]), fk["on_delete"], same))
    return found


def referenced(table: sa.FromClause, key: InboundKey) -> sa.ColumnElement:
    """EXISTS a row of the key's table pointing at the row of `table` (another row, for a
    self-reference: a row pointing at itself goes with itself)."""
    names = dict.fromkeys([*key.columns, *(key.referred_columns if key.self_reference else ())])
    referrer = sa.table(key.table, *(sa.column(c) for c in names), schema=key.schema).alias("dbsweep_ref")
    points = [referrer.c[c] == table.c[r] for c, r in zip(key.columns, key.referred_columns)]
    if key.self_reference:
        points.append(sa.or_(*(referrer.c[r] != table.c[r] for r in key.referred_columns)))
    return sa.exists(sa.select(sa.literal(1)).select_from(referrer).where(*points))


def unreferenced(table: sa.FromClause, keys: list[dict]) -> list[sa.ColumnElement]:
    """The run-time guard: one NOT EXISTS per key of the frozen plan."""
    return [~referenced(table, InboundKey.from_spec(k)) for k in keys]


def blockers(conn: sa.Connection, table: sa.Table, chosen: sa.ColumnElement, keys: list[InboundKey],
             what: str, remedy) -> list[str]:
    """One line per key some chosen row is the target of; `remedy(key)` says how the policy can
    say what happens to those rows."""
    found = []
    for key in keys:
        hits = conn.execute(sa.select(sa.func.count()).select_from(table).where(chosen, referenced(table, key))).scalar()
        if hits:
            found.append(key.describe(int(hits), what, remedy(key)))
    return found
