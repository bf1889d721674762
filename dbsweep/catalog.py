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


def time_column(table: sa.Table, name: str) -> sa.Column:
    """A column a cutoff is compared with: a date or a timestamp, never text or a number."""
    col = column(table, name)
    if not isinstance(col.type, (sa.Date, sa.DateTime)):
        raise BadInput(f"column '{name}' of table '{table.fullname}' is {col.type}, not a date or timestamp: "
                       "a cutoff cannot be compared with it")
    return col


def _python_types(col: sa.Column) -> tuple[type, ...] | None:
    """The Python values a policy may give for `col`: None where the database must judge a string."""
    kind = col.type
    if isinstance(kind, sa.Boolean):
        return (bool,)
    if isinstance(kind, sa.Integer):
        return (int,)
    if isinstance(kind, (sa.Numeric, sa.Float)):
        return (int, float)
    if isinstance(kind, (sa.String, sa.Enum)) and not isinstance(kind, sa.Uuid):
        return (str,)
    return None


def check_value(conn: sa.Connection, col: sa.Column, value, what: str) -> None:
    """Refuse, at plan time, a policy value that does not fit its column (type, range, format,
    NOT NULL): one line naming it, instead of an SQL error in the middle of a run."""
    where = f"{what}: {value!r} for column '{col.name}' ({col.type})"
    if value is None:
        if not col.nullable:
            raise BadInput(f"{where}: the column is NOT NULL")
        return
    allowed = _python_types(col)
    if isinstance(value, bool) and allowed is not None and bool not in allowed:
        raise BadInput(f"{where}: a boolean does not fit this column")
    if allowed is not None and not isinstance(value, allowed):
        raise BadInput(f"{where}: expected {' or '.join(t.__name__ for t in allowed)}, not {type(value).__name__}")
    if allowed is None and not isinstance(value, str):
        raise BadInput(f"{where}: give this column's value as a string, as SQL would read it")
    savepoint = conn.begin_nested()  # the server itself says whether the value fits (range, format, enum)
    try:
        conn.execute(sa.select(sa.cast(sa.literal(value), col.type)))
    except sa.exc.DBAPIError as exc:
        savepoint.rollback()
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise BadInput(f"{where}: the database refuses it ({detail})") from None
    savepoint.commit()
