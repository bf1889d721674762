"""Identifiers from policies are checked against the live catalog; SQLAlchemy always quotes them."""

from __future__ import annotations

import sqlalchemy as sa

from .errors import BadInput


def split_name(qualified: str) -> tuple[str | None, str]:
    schema, dot, table = qualified.rpartition(".")
    return (schema or None) if dot else None, table


def _existing(inspector, qualified: str) -> tuple[str | None, str]:
    """(schema, name) of a table that exists, else the one-line error naming it."""
    schema, name = split_name(qualified)
    if not name:
        raise BadInput(f"empty table name {qualified!r}")
    if not inspector.has_table(name, schema=schema):
        where = f"schema '{schema}'" if schema else "the default schema"
        raise BadInput(f"table '{qualified}' not found in {where} of the target database")
    return schema, name


def reflect_table(conn: sa.Connection, qualified: str) -> sa.Table:
    schema, name = _existing(sa.inspect(conn), qualified)
    # resolve_fks=False: a table with foreign keys would otherwise reflect every table they point at
    return sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn, resolve_fks=False)


def reflect_tables(conn: sa.Connection, names: list[str]) -> dict[str, sa.Table]:
    """Several tables at once: one round of catalog queries per schema instead of one per table."""
    inspector = sa.inspect(conn)
    by_schema: dict[str | None, list[str]] = {}
    for qualified in dict.fromkeys(names):
        schema, name = _existing(inspector, qualified)
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
