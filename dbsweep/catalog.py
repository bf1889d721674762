"""Identifiers from policies are checked against the live catalog; SQLAlchemy always quotes them."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import sqlalchemy as sa

from .dialects import dialect_for
from .errors import BadInput
from .names import stem_for


def _quoted_parts(qualified: str) -> list[str] | None:
    """The parts of a name written with SQL quotes ("Ops"."Audit Log", [dbo].[t], "my.table"):
    dots inside quotes belong to the name. None when the name has no quotes at all."""
    if '"' not in qualified and "[" not in qualified:
        return None
    parts, current, quote, i = [], "", None, 0
    while i < len(qualified):
        char = qualified[i]
        if quote:
            if char == quote and qualified[i + 1:i + 2] == quote and quote == '"':
                current, i = current + char, i + 2  # "" inside quotes is one "
                continue
            if char == quote:
                quote = None
            else:
                current += char
        elif char in ('"', "["):
            quote = '"' if char == '"' else "]"
        elif char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
        i += 1
    if quote:
        raise BadInput(f"table name {qualified!r}: a quote is not closed")
    return parts + [current]


def split_name(qualified: str) -> tuple[str | None, str]:
    """(schema, table): SQL-quoted parts as written, else split at the last dot."""
    parts = _quoted_parts(qualified)
    if parts is None:
        schema, dot, table = qualified.rpartition(".")
        return (schema or None) if dot else None, table
    if len(parts) > 2 or not all(parts):
        raise BadInput(f"table name {qualified!r}: write schema.table, quoting a part that holds a dot")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _readings(qualified: str) -> list[tuple[str | None, str]]:
    """Every way an unquoted name can be read: split at its last dot first, then at the others,
    then whole (a table whose name holds a dot). A name with a quote that is no SQL quoting (a
    table named `we"ird`, as a plan stores it) is read unquoted."""
    try:
        if _quoted_parts(qualified) is not None:
            return [split_name(qualified)]
    except BadInput:
        pass
    parts = qualified.split(".")
    splits = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    return splits + [(None, qualified)]


def has_table(conn: sa.Connection, name: str, schema: str | None = None) -> bool:
    """Whether the table exists under that name now (as the server's own catalog says)."""
    return dialect_for(conn).has_table(conn, name, schema)


def _existing(conn: sa.Connection, qualified: str) -> tuple[str | None, str]:
    """(schema, name) of a table that exists, else the one-line error naming it."""
    found = [(s, n) for s, n in _readings(qualified) if n and has_table(conn, n, s)]
    if len(found) > 1:
        raise BadInput(f"table name {qualified!r} can be read {len(found)} ways; quote its parts, e.g. "
                       f'"{found[0][0]}"."{found[0][1]}"')
    if not found:
        schema, name = split_name(qualified)  # the quote error, if the name is no table as written either
        if not name:
            raise BadInput(f"empty table name {qualified!r}")
        where = f"schema '{schema}'" if schema else "the default schema"
        raise BadInput(f"table '{qualified}' not found in {where} of the target database")
    return found[0]


def resolve_name(conn: sa.Connection, qualified: str) -> tuple[str | None, str]:
    """(schema, name) of the table `qualified` names, read as `_existing` reads it when the table
    exists, else as written (a table that is gone, looked for under another name)."""
    try:
        return _existing(conn, qualified)
    except BadInput:
        return split_name(qualified)


def _metadata(conn: sa.Connection, tables: list[tuple[str | None, str]]) -> sa.MetaData:
    """A MetaData whose reflection keeps names as created where the catalog folds them."""
    metadata = sa.MetaData()
    dialect = dialect_for(conn)
    metadata.info["names_fold_case"] = dialect.names_fold_case
    spellings = {(schema, name): found for schema, name in tables
                 if (found := dialect.column_spellings(conn, schema, name))}
    if spellings:
        def as_created(inspector, table, column_info):
            default = inspector.default_schema_name
            for (schema, name), found in spellings.items():
                if name.casefold() == table.name.casefold() and (schema or default) == (table.schema or default):
                    column_info["name"] = column_info["key"] = found.get(column_info["name"], column_info["name"])

        sa.event.listen(metadata, "column_reflect", as_created)
    return metadata


def _with_primary_key(conn: sa.Connection, table: sa.Table) -> sa.Table:
    missed = dialect_for(conn).primary_key_columns(conn, table)
    if missed:
        table.append_constraint(sa.PrimaryKeyConstraint(*missed))
    return table


def reflect_table(conn: sa.Connection, qualified: str) -> sa.Table:
    schema, name = _existing(conn, qualified)
    # resolve_fks=False: a table with foreign keys would otherwise reflect every table they point at
    return _with_primary_key(conn, sa.Table(name, _metadata(conn, [(schema, name)]), schema=schema,
                                            autoload_with=conn, resolve_fks=False))


def reflect_tables(conn: sa.Connection, names: list[str]) -> dict[str, sa.Table]:
    """Several tables at once: one round of catalog queries per schema instead of one per table."""
    found = {qualified: _existing(conn, qualified) for qualified in dict.fromkeys(names)}
    by_schema: dict[str | None, list[str]] = {}
    for schema, name in found.values():
        by_schema.setdefault(schema, []).append(name)
    metadata = _metadata(conn, list(dict.fromkeys(found.values())))
    for schema, tables in by_schema.items():
        metadata.reflect(conn, schema=schema, only=tables, views=True, resolve_fks=False)
    return {qualified: _with_primary_key(conn, metadata.tables[f"{schema}.{name}" if schema else name])
            for qualified, (schema, name) in found.items()}


def column(table: sa.Table, name: str, key: str | None = None) -> sa.Column:
    """The column `name` of `table`; `key` is the policy key that named it, for the error line. On
    a database whose names match whatever their case, a name that differs only in case is that column."""
    if name not in table.c and table.metadata.info.get("names_fold_case"):
        same = [c for c in table.c if c.key.casefold() == name.casefold()]
        if len(same) == 1:
            return same[0]
    if name not in table.c:
        said = f"key '{key}': " if key else ""
        raise BadInput(f"{said}column '{name}' not found in table '{table.fullname}' "
                       f"(columns: {', '.join(table.c.keys())})")
    return table.c[name]


def primary_key(table: sa.Table) -> list[sa.Column]:
    return list(table.primary_key.columns)


def time_column(table: sa.Table, name: str, key: str = "time_column", use: str = "a cutoff is compared with it") -> sa.Column:
    """A column of moments (`use` says what for): a date or a timestamp, never text or a number."""
    col = column(table, name, key)
    if not isinstance(col.type, (sa.Date, sa.DateTime)):
        raise BadInput(f"key '{key}': column '{name}' of table '{table.fullname}' is {col.type}, not a date or "
                       f"timestamp, and {use}")
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


def dated_copies(conn: sa.Connection, schema: str | None, base: str, marker: str,
                 stamp: str) -> list[tuple[str, datetime]]:
    """The tables named `<base><marker><moment>` that dbsweep derived from `base` (a retired copy, a
    rebuild's backup), oldest first, with the moment their name gives (UTC, `stamp` its format)."""
    dialect = dialect_for(conn)
    width = len(datetime(2000, 1, 1).strftime(stamp))
    pattern = re.compile(re.escape(stem_for(base, len(marker) + width) + marker) + rf"(\d{{{width}}})$",
                         re.IGNORECASE if dialect.names_fold_case else 0)
    found = []
    for name in dialect.table_names(conn, schema):
        match = pattern.match(name)
        if match:
            found.append((name, datetime.strptime(match.group(1), stamp).replace(tzinfo=timezone.utc)))
    return sorted(found, key=lambda item: item[1])
