"""Free-text `where` predicates: parsed with sqlglot, refused unless they are one boolean
expression over the table's own columns, then re-rendered with every identifier quoted.

The same check runs again whenever a selection is rebuilt from a frozen plan (`where_clause`):
a plan file or ledger row edited by hand never reaches the database as SQL."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal
import sqlglot
from sqlglot import exp

from .errors import BadInput

_BOOLEAN_ROOTS = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Is,
    exp.In, exp.Between, exp.Like, exp.ILike, exp.Boolean, exp.NullSafeEQ, exp.NullSafeNEQ,
)
_ALLOWED_FUNCTIONS = (
    exp.Lower, exp.Upper, exp.Trim, exp.Length, exp.Coalesce, exp.Substring, exp.Abs, exp.Cast,
    exp.TryCast, exp.Left, exp.Right, exp.Concat, exp.DPipe, exp.Round, exp.Floor, exp.Ceil,
)
_FORBIDDEN = (exp.Select, exp.Subquery, exp.Exists, exp.Command, exp.Anonymous, exp.Placeholder, exp.Parameter)
# literals whose value is read at execution time: a frozen plan would select more each time it runs
_MOVING_LITERALS = {"now", "today", "tomorrow", "yesterday"}
SQLGLOT_DIALECTS = {"postgresql": "postgres", "mssql": "tsql", "sqlite": "sqlite"}


def _root(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def _parse(text: str, read: str) -> exp.Expression:
    if not text.strip():
        raise BadInput("where is empty; leave the key out for no filter")
    try:
        statements = [s for s in sqlglot.parse(text, read=read) if s is not None]
    except sqlglot.errors.SqlglotError as exc:  # ParseError, and TokenError for an unterminated quote or comment
        raise BadInput(f"where {text!r} is not valid SQL: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise BadInput(f"where {text!r} must be one boolean expression, not {len(statements)} statements")
    return statements[0]


def check_where(text: str, columns: list[str], dialect: str, booleans: set[str] = frozenset()) -> str:
    """Return the predicate rendered for `dialect` with quoted identifiers, or raise BadInput.
    `booleans`: the boolean columns, each a predicate on its own (`where = "archived"`)."""
    if dialect not in SQLGLOT_DIALECTS:
        raise BadInput(f"where {text!r}: unknown SQL dialect {dialect!r}")
    read = SQLGLOT_DIALECTS[dialect]
    tree = _parse(text, read)
    by_lower = {c.lower(): c for c in columns}

    def real_name(node: exp.Column) -> str | None:
        name = node.name
        return name if name in columns else (None if node.this.quoted else by_lower.get(name.lower()))

    root = _root(tree)
    while isinstance(root, exp.Not):
        root = _root(root.this)
    bare_boolean = isinstance(root, exp.Column) and real_name(root) in booleans
    if not (isinstance(_root(tree), _BOOLEAN_ROOTS) or bare_boolean):
        raise BadInput(f"where {text!r} is not a boolean expression")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise BadInput(f"where {text!r}: {node.key} is not allowed (only the table's own columns)")
        if isinstance(node, exp.Func) and not isinstance(node, _ALLOWED_FUNCTIONS + _BOOLEAN_ROOTS):
            raise BadInput(f"where {text!r}: function {node.sql(dialect=read)!r} is not allowed")
        if isinstance(node, exp.Literal) and node.is_string and node.this.strip().lower() in _MOVING_LITERALS:
            raise BadInput(f"where {text!r}: '{node.this}' changes with the time it is read; a frozen plan needs "
                           "a fixed moment (use older_than or inactive_for for a moving cutoff)")
        if isinstance(node, exp.Column):
            if node.table:
                raise BadInput(f"where {text!r}: qualified column {node.sql(dialect=read)!r}; use bare column names")
            real = real_name(node)
            if real is None:
                raise BadInput(f"where {text!r}: unknown column '{node.name}' (columns: {', '.join(columns)})")
            node.set("this", exp.to_identifier(real, quoted=True))
    return tree.sql(dialect=read, identify=True)


def boolean_columns(table: sa.Table) -> set[str]:
    return {c.name for c in table.c if isinstance(c.type, sa.Boolean)}


def checked_where(text: str, table: sa.Table, dialect: str) -> dict:
    """What a plan's spec keeps of a `where`: the checked text and the dialect it is written in."""
    return {"where": check_where(text, list(table.c.keys()), dialect, boolean_columns(table)), "where_dialect": dialect}


def where_clause(spec: dict, table: sa.Table) -> sa.ColumnElement:
    """The stored `where` of a frozen plan as SQL, checked again against `table`'s columns first."""
    dialect = spec.get("where_dialect")
    if dialect not in SQLGLOT_DIALECTS:
        raise BadInput(f"the plan's where has no known SQL dialect ({dialect!r}); make a new plan")
    text = check_where(spec["where"], list(table.c.keys()), dialect, boolean_columns(table))
    return Condition(text)


class Condition(sa.sql.expression.ColumnElement):
    """A checked `where` as the text it was checked as: a condition in its own right wherever it
    goes. (A boolean literal_column is taken for a bit value on SQL Server, which has no boolean
    type, and compared with 1: `([Status] <> 'hold') = 1`, which SQL Server refuses.)"""

    type = sa.Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True
    _traverse_internals = [("text", InternalTraversal.dp_string)]

    def __init__(self, text: str):
        self.text = text


@compiles(Condition)
def _condition_sql(element: Condition, compiler, **kw) -> str:
    return f"({compiler.escape_literal_column(element.text)})"  # "%" doubled where the driver wants it
