"""Identifiers from policies are checked against the live catalog; SQLAlchemy always quotes them."""

from __future__ import annotations

import sqlalchemy as sa

from .errors import BadInput


def split_name(qualified: str) -> tuple[str | None, str]:
    schema, dot, table = qualified.rpartition(".")
    return (schema or None) if dot else None, table


def reflect_table(conn: sa.Connection, qualified: str) -> sa.Table:
    schema, name = split_name(qualified)
    if not name:
        raise BadInput(f"empty table name {qualified!r}")
    inspector = sa.inspect(conn)
    if not inspector.has_table(name, schema=schema):
        where = f"schema '{schema}'" if schema else "the default schema"
        raise BadInput(f"table '{qualified}' not found in {where} of the target database")
    # resolve_fks=False: a table with foreign keys would otherwise reflect every table they point at
    return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn, resolve_fks=False)


def reflect_tables(conn: sa.Connection, names: list[str]) -> dict[str, sa.Table]:
    """Several tables at once: one round of catalog queries per schema instead of one per table."""
    by_schema: dict[str | None, list[str]] = {}
    inspector = sa.inspect(conn)
    for qualified in dict.fromkeys(names):
        schema, name = split_name(qualified)
        if not name or not inspector.has_table(name, schema=schema):
            reflect_table(conn, qualified)  # raises the one-line error for it
        by_schema.setdefault(schema, []).append(name)
    metadata = sa.MetaData()
    for schema, tables in by_schema.items():
        metadata.reflect(conn, schema=schema, only=tables, views=True, resolve_fks=False)
    return {qualified: metadata.tables[qualified] for qualified in names}


def column(table: sa.Table, name: str) -> sa.Column:
    if name not in table.c:
        raise BadInput(f"column '{name}' not found in table '{table.fullname}' (columns: {', '.join(table.c.keys())})")
    return table.c[name]


def primary_key(table: sa.Table) -> list[sa.Column]:
    return list(table.primary_key.columns)
