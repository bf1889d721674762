"""The rows that point at rows a kind removes in favour of another row (merge's losers, dedupe's
duplicates): every foreign key into the table from the catalog (`dbsweep.inbound`), its own
self-reference included, plus the polymorphic pairs a policy lists. A child whose unique key would
collide once moved is merged one level down (`on_conflict = "merge"`, recursively), renamed, or
refused. The SQL that moves them, journaled, is `dbsweep.dialects.pg_merge`; merge and dedupe's
`referenced = "repoint"` share it."""

from __future__ import annotations

import sqlalchemy as sa

from .. import inbound
from ..catalog import column, primary_key, reflect_table
from ..dialects import Dialect, pg_merge
from ..errors import BadInput
from ..names import derived


def canonical(conn, table: sa.Table) -> str:
    """`schema.name`, always with the schema: one name per table however the policy spelled it."""
    schema = table.schema or sa.inspect(conn).default_schema_name
    return f"{schema}.{table.name}"


def journal_name(table: str, suffix: str = "__merge_journal") -> str:
    return derived(table.rpartition(".")[2], suffix)


def table_facts(conn, names: list[str]) -> dict[str, dict]:
    """Per table a re-point touches: its single-column key, the key's SQL type, the columns a
    restore writes back (not generated), and every column's SQL type."""
    from ..dialects import pg_rebuild

    out = {}
    for name in names:
        table = reflect_table(conn, name)
        keys = primary_key(table)
        if len(keys) != 1:
            raise BadInput(f"table '{table.fullname}' needs a single-column primary key: its changes are journaled by it")
        types = pg_rebuild.column_types(conn, table)
        out[canonical(conn, table)] = {"key": keys[0].name, "key_type": types[keys[0].name], "types": types,
                                       "insertable": pg_rebuild.copied_columns(conn, table)}
    return out


def _pointers(conn, dialect: Dialect, parent: sa.Table) -> list[dict]:
    """Every foreign key into `parent`, each one column pointing at its single-column key."""
    keys = [c.name for c in primary_key(parent)]
    out = []
    for fk in inbound.keys_into(conn, dialect, parent):
        if len(fk.columns) != 1 or list(fk.referred_columns) != keys:
            raise BadInput(f"foreign key {fk.name} on {fk.where}({', '.join(fk.columns)}) points at "
                           f"{parent.fullname}({', '.join(fk.referred_columns)}): re-pointing moves single-column "
                           "foreign keys to the primary key")
        out.append({"constraint": fk.name, "table": f"{fk.schema}.{fk.table}" if fk.schema else fk.table,
                    "column": fk.columns[0]})
    return out


def _rule_for(on_conflict: dict, child: sa.Table) -> str:
    return on_conflict.get(child.fullname) or on_conflict.get(child.name) or "fail"


def _unique(conn, child: sa.Table, pointer: str, rule: str, kept: str | None = None) -> tuple[list[str] | None, str | None]:
    """The child's first unique key over the pointer (where moving it can collide), and the text
    column a rename changes (never `kept`, a polymorphic child's type column)."""
    uniques = pg_merge.unique_sets(conn, canonical(conn, child), pointer)
    if not uniques:
        return None, None
    if rule != "rename":
        return uniques[0], None
    text = [c for c in uniques[0] if c not in (pointer, kept) and isinstance(child.c[c].type, sa.String)]
    if not text:
        raise BadInput(f"on_conflict '{child.name}' = \"rename\": its unique ({', '.join(uniques[0])}) has no "
                       "text column to rename")
    return uniques[0], text[0]


def children(conn, dialect: Dialect, root: sa.Table, on_conflict: dict, polymorphic: list) -> list[dict]:
    """Every child of the root table, and of each child merged on collision, recursively."""
    found, queue, seen = [], [root], set()
    while queue:
        parent = queue.pop(0)
        parent_name = canonical(conn, parent)
        if parent_name in seen:
            continue
        seen.add(parent_name)
        for fk in _pointers(conn, dialect, parent):
            child = reflect_table(conn, fk["table"])
            rule = _rule_for(on_conflict, child)
            unique, rename = _unique(conn, child, fk["column"], rule)
            found.append({"kind": "fk", "table": canonical(conn, child), "column": fk["column"], "parent": parent_name,
                          "constraint": fk["constraint"], "unique": unique, "on_conflict": rule, "rename_column": rename})
            if unique and rule == "merge":
                queue.append(child)
        for poly in polymorphic:
            owner = canonical(conn, reflect_table(conn, poly.parent) if poly.parent else root)
            if owner != parent_name:
                continue
            child = reflect_table(conn, poly.table)
            column(child, poly.type_column, "polymorphic.type_column")
            column(child, poly.id_column, "polymorphic.id_column")
            rule = _rule_for(on_conflict, child)
            unique, rename = _unique(conn, child, poly.id_column, rule, poly.type_column)
            found.append({"kind": "poly", "table": canonical(conn, child), "column": poly.id_column,
                          "type_column": poly.type_column, "type_value": poly.type_value, "parent": parent_name,
                          "unique": unique, "on_conflict": rule, "rename_column": rename})
            if unique and rule == "merge":
                queue.append(child)
    named = {c["table"] for c in found} | {c["table"].rpartition(".")[2] for c in found}
    unknown = [t for t in on_conflict if t not in named]
    if unknown:
        raise BadInput(f"on_conflict names '{unknown[0]}', which is no child of '{root.fullname}' "
                       f"(children: {', '.join(sorted({c['table'] for c in found})) or 'none'})")
    return found
