"""`dbsweep discover`: read a whole database and propose cleanup phases with their evidence, before
anyone writes a policy. Read-only (one read-only transaction under the statement and lock
timeouts) and cheap: the catalog, the statistics, exact counts of small tables only, and for the
rest a block sample (`TABLESAMPLE SYSTEM`, about SAMPLE_ROWS rows), never a full scan. Every figure
says how it was found: "exact", "sample of N rows" or "statistics".

Proposals, each a phase `dbsweep plan` accepts unchanged (nothing is scheduled to apply):
- retention: a time column with some (not all) rows older than 30 days, 1 year or 2 years;
- dedupe: a key-like column set with no unique constraint over it and at least REDUCTION_MIN
  times as many rows as distinct keys (distinct keys of a sample estimated as ANALYZE does, Duj1);
- cascade: a polymorphic pair (`<x>_type`/`<x>_id`, `<x>_type_id`/`<x>_id`): rows per type, and the
  parent each type points at where the catalog or the data says so;
- merge: a self-referencing table with several root rows in one group of a foreign key column;
- retire: tables named like copies that nothing has read since the statistics were reset;
- health (evidence only): the largest tables and indexes, dead tuples, unused indexes."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from .dialects import discovery_catalog
from .dialects.discovery import NotSampled
from .kinds import kind_named

EXACT_BELOW = 100_000  # rows: counted and read whole below this, sampled above
SAMPLE_ROWS = 30_000
REDUCTION_MIN = 2.0
AGES = (("2 years", 730), ("1 year", 365), ("30 days", 30))
TIME_TYPES = ("timestamp", "date")
KEY_LIKE = re.compile(r"(_id|_pk|_key)$", re.IGNORECASE)
COPY_LIKE = re.compile(r"(_delta|_old|_bak|_backup|_copy|_tmp|_\d{8}|_\d{6}|__retired_\d{8})$", re.IGNORECASE)
DBSWEEP_BACKUP = re.compile(r"__(dedupe|retention)_\d{12}$")


@dataclass
class Proposal:
    kind: str
    table: str
    why: str
    sure: str  # "exact", "sample of N rows", "statistics"
    evidence: dict[str, Any] = field(default_factory=dict)
    phase: dict[str, Any] | None = None  # the draft phase's keys; None: evidence only


@dataclass
class Discovery:
    database: str
    stats_reset: str | None
    tables: int
    seconds: float
    per_table_s: dict[str, float]
    proposals: list[Proposal]

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class TableFacts:
    oid: int
    schema: str
    name: str
    est_rows: int
    pages: int | None  # None: the server does not say (Babelfish)
    bytes: int | None
    reads: int | None
    writes: int | None
    live: int
    dead: int
    vacuumed: Any
    columns: list[dict] = field(default_factory=list)
    constraints: list[dict] = field(default_factory=list)
    inbound: list[dict] = field(default_factory=list)
    indexes: list[dict] = field(default_factory=list)
    rows: int = 0
    sure: str = "statistics"
    sample: dict[str, list] | None = None  # column -> values, for the columns read
    home: str = "public"  # the server's default schema: a table there is named without its schema, as a policy names it

    @property
    def label(self) -> str:
        return self.name if self.schema == self.home else f"{self.schema}.{self.name}"

    @property
    def key(self) -> list[str]:
        return next((c["cols"] for c in self.constraints if c["kind"] == "p"), [])

    def column(self, name: str) -> dict | None:
        return next((c for c in self.columns if c["name"] == name), None)


def discover(engine: sa.Engine, now: datetime | None = None, statement_timeout_s: float = 30,
             lock_timeout_s: float = 1) -> Discovery:
    sql = discovery_catalog(engine)
    now = now or datetime.now(timezone.utc)
    began = time.perf_counter()
    with engine.connect() as conn:
        try:
            with sql.read_only(conn, statement_timeout_s, lock_timeout_s):
                found = _facts(conn, sql)
                reset = sql.stats_reset(conn)
                per_table, proposals = {}, []
                retire = _retire(found, reset)  # the read counters first: discovery's own sampling reads them
                for facts in found:
                    started = time.perf_counter()
                    _read(conn, sql, facts)
                    proposals += (_retention(facts, now) + _dedupe(facts) + _polymorphic(conn, sql, facts, found)
                                  + _merge(facts))
                    per_table[facts.label] = round(time.perf_counter() - started, 4)
                proposals += _cascades(found, proposals) + retire + _health(found)
        finally:
            conn.rollback()  # nothing was written, and nothing is committed either
    return Discovery(engine.url.database or "", reset.isoformat() if reset else None, len(found),
                     round(time.perf_counter() - began, 3), per_table,
                     [_runnable(p, engine.dialect.name) for p in proposals])


def _runnable(proposal: Proposal, dialect_name: str) -> Proposal:
    """A proposal whose kind cannot run on this database keeps its evidence, not a draft phase."""
    why_not = proposal.phase and kind_named(proposal.kind).cannot_run_on(dialect_name)
    if not why_not:
        return proposal
    return Proposal(proposal.kind, proposal.table, f"{proposal.why}; evidence only: {why_not}", proposal.sure,
                    proposal.evidence)


def _facts(conn, sql) -> list[TableFacts]:
    found = [TableFacts(**row, home=sql.DEFAULT_SCHEMA) for row in sql.tables(conn)]
    by_oid = {t.oid: t for t in found}
    oids = list(by_oid)
    for column in sql.columns(conn, oids):
        by_oid[column.pop("oid")].columns.append(column)
    for con in sql.constraints(conn, oids):
        if con["oid"] in by_oid:
            by_oid[con["oid"]].constraints.append(con)
        if con["kind"] == "f" and con["refers_to"] in by_oid and con["oid"] in by_oid:
            by_oid[con["refers_to"]].inbound.append({**con, "table_label": by_oid[con["oid"]].label,
                                                     "child_constraints": by_oid[con["oid"]].constraints})
    for index in sql.indexes(conn, oids):
        by_oid[index.pop("oid")].indexes.append(index)
    return found


def _read(conn, sql, facts: TableFacts) -> None:
    """Rows (exact below EXACT_BELOW, else the statistics) and the values of the columns discovery
    judges: every row of a small table, a block sample of a large one."""
    wanted = [c["name"] for c in facts.columns if _is_time(c) or KEY_LIKE.search(c["name"]) or _fk_column(facts, c["name"])
              or c["name"].endswith("_type")]
    small = facts.est_rows < EXACT_BELOW or (facts.pages is not None and facts.pages < 100)
    if facts.est_rows <= 0 and facts.pages == 0 and facts.live == 0:  # empty by the statistics: not read (a read counts as a scan)
        facts.rows, facts.sure, facts.sample = 0, "statistics", {c: [] for c in wanted}
        return
    if small:
        facts.rows, facts.sure = sql.exact_rows(conn, facts.schema, facts.name), "exact"
    else:
        facts.rows = max(facts.est_rows, 0)
    if not wanted or not facts.rows:
        facts.sample = {c: [] for c in wanted}
        return
    percent = None if small else min(100.0, 100.0 * SAMPLE_ROWS / facts.rows)
    try:
        rows = sql.sample(conn, facts.schema, facts.name, wanted, percent, facts.key)
    except NotSampled as why:
        facts.sample, facts.sure = {c: [] for c in wanted}, f"not sampled: {why}"
        return
    facts.sample = {c: [r[i] for r in rows] for i, c in enumerate(wanted)}
    if not small:
        facts.sure = f"sample of {len(rows):,} rows"


def _is_time(column: dict) -> bool:
    return column["type"].startswith(TIME_TYPES)


def _fk_column(facts: TableFacts, name: str) -> bool:
    return any(c["kind"] == "f" and c["cols"] == [name] for c in facts.constraints)


def _indexed(facts: TableFacts, name: str) -> str | None:
    return next((ix["name"] for ix in facts.indexes if ix["cols"][:1] == [name] and not ix["partial"]), None)


def _moment(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    return None


def _scale(facts: TableFacts, count: int) -> int:
    seen = len(next(iter(facts.sample.values()), []))
    return count if facts.sure == "exact" or not seen else round(count * facts.rows / seen)


# retention -----------------------------------------------------------------------------------
def _retention(facts: TableFacts, now: datetime) -> list[Proposal]:
    times = [c for c in facts.columns if _is_time(c) and c["name"] in facts.sample]
    if not times or not facts.rows or not facts.key:
        return []
    # the column an index serves first, then the one named like an event's time
    times.sort(key=lambda c: (_indexed(facts, c["name"]) is None, not re.search(r"created|occurred|date|_at$|_ts$", c["name"])))
    column = times[0]
    values = [_moment(v) for v in facts.sample[column["name"]]]
    seen = len(values)
    older = {label: sum(1 for v in values if v is not None and v < now - timedelta(days=days)) for label, days in AGES}
    evidence = {"time_column": column["name"], "rows": facts.rows, "bytes": facts.bytes,
                "index": _indexed(facts, column["name"]) or "none",
                **{f"older_than_{label.replace(' ', '_')}": _scale(facts, n) for label, n in older.items()}}
    for label, n in older.items():
        share = n / seen if seen else 0
        if 0.01 <= share <= 0.99:  # a rule that would empty the table is not a retention rule
            phase = {"kind": "retention", "table": facts.label, "time_column": column["name"], "older_than": label,
                     "archive": "table"}
            keep = [f"{_label_of(c)}.{c['cols'][0]}" for c in facts.inbound if len(c["cols"]) == 1]
            if keep:
                phase["keep_if_referenced_by"] = keep
            why = (f"{share:.0%} of its rows are older than {label} ({column['name']}"
                   + (f", indexed by {evidence['index']})" if evidence["index"] != "none" else ", not indexed)"))
            return [Proposal("retention", facts.label, why, facts.sure, evidence, phase)]
    return []


def _label_of(con: dict) -> str:
    return con.get("table_label", "")


# dedupe --------------------------------------------------------------------------------------
def _distinct(values: list[tuple], total: int, exact: bool) -> float:
    """Distinct keys: exact when every row was read, else PostgreSQL ANALYZE's Duj1 estimate from
    the sample (n d / (n - f1 + f1 n / N))."""
    counts = Counter(values)
    d = len(counts)
    if exact or not values:
        return d
    n, f1 = len(values), sum(1 for c in counts.values() if c == 1)
    return min(total, n * d / max(n - f1 + f1 * n / total, 1e-9))


def _dedupe(facts: TableFacts) -> list[Proposal]:
    if not facts.key or not facts.rows:
        return []
    # a natural key: two or more key-like columns (one alone is a parent reference, which repeats by
    # design), never a tree's parent pointer or a polymorphic pair
    skipped = {c for pair in _pairs(facts) for c in pair}
    skipped |= {c["cols"][0] for c in facts.constraints if c["kind"] == "f" and c["refers_to"] == facts.oid}
    key_like = [c["name"] for c in facts.columns if c["name"] not in facts.key and c["name"] in facts.sample
                and c["name"] not in skipped and (KEY_LIKE.search(c["name"]) or _fk_column(facts, c["name"]))]
    candidates = [key_like] if len(key_like) >= 2 else []
    best = None
    unique = [set(c["cols"]) for c in facts.constraints if c["kind"] in ("p", "u")]
    unique += [set(ix["cols"]) for ix in facts.indexes if ix["is_unique"] and not ix["partial"]]
    for cols in candidates:
        if any(u <= set(cols) for u in unique):
            continue  # unique already
        values = list(zip(*(facts.sample[c] for c in cols)))
        values = [v for v in values if None not in v]
        distinct = _distinct(values, facts.rows, facts.sure == "exact")
        reduction = (facts.rows / distinct) if distinct else 1.0
        if reduction >= REDUCTION_MIN and (best is None or reduction > best[1]):
            best = (cols, reduction, distinct)
    if best is None:
        return []
    cols, reduction, distinct = best
    time_col = next((c["name"] for c in facts.columns if _is_time(c)), None)
    phase = {"kind": "dedupe", "tables": [{"table": facts.label, "natural_key": cols,
                                             **({"keep": "oldest", "time_column": time_col} if time_col
                                                else {"keep": "lowest_key"})}]}
    evidence = {"rows": facts.rows, "unique_keys": round(distinct), "duplicates": facts.rows - round(distinct),
                "reduction": f"{reduction:,.0f}x", "natural_key": cols}
    why = (f"no unique constraint over ({', '.join(cols)}): {facts.rows:,} rows, about {round(distinct):,} keys, "
           f"{reduction:,.0f}x")
    return [Proposal("dedupe", facts.label, why, facts.sure, evidence, phase)]


# cascade -------------------------------------------------------------------------------------
def _pairs(facts: TableFacts) -> list[tuple[str, str]]:
    names = {c["name"] for c in facts.columns}
    found = []
    for name in names:
        for suffix in ("_type_id", "_type"):
            if name.endswith(suffix) and f"{name[:-len(suffix)]}_id" in names:
                found.append((name, f"{name[:-len(suffix)]}_id"))
                break
    return sorted(found)


def _polymorphic(conn, sql, facts: TableFacts, found: list[TableFacts]) -> list[Proposal]:
    out = []
    for type_column, id_column in _pairs(facts):
        if type_column not in facts.sample or id_column not in facts.sample:
            continue
        per_type = Counter(facts.sample[type_column])
        distribution = {str(t): _scale(facts, n) for t, n in per_type.most_common(20)}
        parents = {}
        for value, _ in per_type.most_common(20):
            ids = [i for t, i in zip(facts.sample[type_column], facts.sample[id_column]) if t == value][:200]
            parents[str(value)] = _parent_of(conn, sql, value, ids, type_column, found, facts)
        evidence = {"type_column": type_column, "id_column": id_column, "rows_per_type": distribution,
                    "parents": {t: p[0] if p else "unknown" for t, p in parents.items()}}
        why = f"polymorphic pair ({type_column}, {id_column}): " + ", ".join(
            f"{t}: {n:,} rows" + (f" → {parents[t][0]} ({parents[t][1]})" if parents.get(t) else "")
            for t, n in list(distribution.items())[:6])
        out.append(Proposal("cascade", facts.label, why, facts.sure, evidence))
    return out


def _parent_of(conn, sql, value, ids: list, type_column: str, found: list[TableFacts], child: TableFacts):
    """The table a type's ids point at: one that has the same type column (its rows of that type),
    or one named like a text type ('folder' → folders); confirmed by the sampled ids found in it."""
    if not ids:
        return None
    for table in found:
        if table is child or len(table.key) != 1:
            continue
        same_column = table.column(type_column) is not None and not any(type_column in pair for pair in _pairs(table))
        named = isinstance(value, str) and table.name.lower() in (value.lower(), value.lower() + "s", value.lower() + "es")
        if not (same_column or named):
            continue
        hits = sql.ids_found(conn, table.schema, table.name, table.key[0], ids, type_column if same_column else None,
                             value)
        if hits:
            return table.label, f"{hits} of {len(ids)} sampled ids found"
    return None


def _cascades(found: list[TableFacts], proposals: list[Proposal]) -> list[Proposal]:
    """After every table is read: a draft cascade per parent and type the polymorphic pairs found."""
    out: list[Proposal] = []
    for pair in [p for p in proposals if p.kind == "cascade" and "parents" in p.evidence]:
        child = next(t for t in found if t.label == pair.table)
        for value, parent in pair.evidence["parents"].items():
            if parent != "unknown":
                out += _cascade_phase(child, pair.evidence["type_column"], value, (parent,), found, out)
    return out


def _cascade_phase(child: TableFacts, type_column: str, value: str, parent: tuple, found: list[TableFacts],
                   so_far: list[Proposal]) -> list[Proposal]:
    """A draft cascade per parent and type, once (the parent's other polymorphic children find the
    same one): its rows of that type inactive 7 years by its own time columns, and every table
    pointing at them. None when the parent has no time to judge inactivity by."""
    table = next(t for t in found if t.label == parent[0])
    activity = [c["name"] for c in table.columns if _is_time(c)]
    label = f"{table.label} ({type_column} = {value})"
    if not activity or any(p.table == label for p in so_far):
        return []
    typed = {"type_column": type_column, "type_value": _typed(value, table, type_column)} if table.column(type_column) else {}
    children = [{"table": t.label, "type_column": tc, "id_column": ic, "type_value": _typed(value, t, tc)}
                for t in found for tc, ic in _pairs(t) if t is not table and value in {str(v) for v in (t.sample or {}).get(tc, [])}]
    children += [{"table": t.label, "fk_column": con["cols"][0]} for t in found for con in t.constraints
                 if con["kind"] == "f" and con["refers_to"] == table.oid and len(con["cols"]) == 1 and t is not table]
    phase = {"kind": "cascade", "archive": "table", "parent": {"table": table.label, **typed, "inactive_for": "7 years",
                                                               "activity_columns": activity}, "children": children}
    why = (f"its rows of type {value} are what {', '.join(c['table'] for c in children)} hang under; a draft: rows "
           f"inactive 7 years by {', '.join(activity)}")
    return [Proposal("cascade", label, why, child.sure, {"children": [c["table"] for c in children]}, phase)]


def _typed(value: str, table: TableFacts, column: str | None):
    kind = (table.column(column or "") or {}).get("type", "")
    return int(value) if kind in ("integer", "bigint", "smallint") else value


# merge ---------------------------------------------------------------------------------------
def _merge(facts: TableFacts) -> list[Proposal]:
    if len(facts.key) != 1:
        return []
    self_refs = [c["cols"][0] for c in facts.constraints if c["kind"] == "f" and c["refers_to"] == facts.oid
                 and len(c["cols"]) == 1]
    groups = [c["cols"][0] for c in facts.constraints if c["kind"] == "f" and c["refers_to"] != facts.oid
              and len(c["cols"]) == 1]
    out = []
    for parent in self_refs:
        for group in groups:
            if parent not in facts.sample or group not in facts.sample:
                continue
            roots = Counter(g for p, g in zip(facts.sample[parent], facts.sample[group]) if p is None)
            several = {g: n for g, n in roots.items() if n > 1}
            if not several:
                continue
            time_col = next((c["name"] for c in facts.columns if _is_time(c)), None)
            phase = {"kind": "merge", "table": facts.label, "group_by": [group], "where": f"{parent} IS NULL",
                     **({"survivor": "oldest", "time_column": time_col} if time_col else {"survivor": "lowest_key"}),
                     "on_conflict": _collisions(facts)}
            evidence = {"group_by": group, "root_column": parent, "groups_with_several_roots": _scale(facts, len(several)),
                        "extra_roots": _scale(facts, sum(n - 1 for n in several.values()))}
            why = (f"{evidence['groups_with_several_roots']:,} {group} values have several root rows ({parent} IS NULL), "
                   f"{evidence['extra_roots']:,} roots too many")
            out.append(Proposal("merge", facts.label, why, facts.sure, evidence, phase))
    return out


def _collisions(facts: TableFacts) -> dict[str, str]:
    """What a moved child does when it collides on a unique key with a survivor's child: the merged
    table's own rows merge (two same-named sub-folders become one), other tables' are renamed."""
    rules = {}
    for con in facts.inbound:
        child = con.get("table_label")
        if child and any(u["kind"] == "u" and con["cols"][0] in u["cols"] for u in con.get("child_constraints", [])):
            rules[child] = "merge" if con["oid"] == facts.oid else "rename"
    return rules


# retire and health ---------------------------------------------------------------------------
def _retire(found: list[TableFacts], reset) -> list[Proposal]:
    since = f"since the statistics were reset ({reset:%Y-%m-%d %H:%M} UTC)" if reset else "since the server started"
    out = []
    for facts in found:
        if DBSWEEP_BACKUP.search(facts.name):
            out.append(Proposal("retire", facts.label, "a dbsweep rebuild backup: its phase's keep_backup drops it",
                                "statistics", {"bytes": facts.bytes}))
            continue
        if not COPY_LIKE.search(facts.name) or facts.inbound:
            continue
        empty = facts.est_rows <= 0 and facts.live == 0
        if facts.reads is None:
            used, sure = "this server keeps no read counters: make sure nothing reads it", "name only"
        elif facts.reads == 0:
            used, sure = f"nothing has read it {since}", "statistics"
        elif empty:
            used, sure = f"read {facts.reads} times {since}, and empty", "statistics"
        else:
            continue
        out.append(Proposal("retire", facts.label, f"named like a copy; {used}", sure,
                            {"reads": facts.reads, "bytes": facts.bytes, "est_rows": max(facts.est_rows, 0)},
                            {"kind": "retire", "tables": [facts.label], "grace": "7 days"}))
    return out


def _health(found: list[TableFacts]) -> list[Proposal]:
    out = []
    for facts in sorted((t for t in found if t.bytes is not None), key=lambda t: -t.bytes)[:5]:
        out.append(Proposal("health", facts.label, f"among the largest tables: {facts.bytes / 2**20:,.1f} MB",
                            "statistics", {"bytes": facts.bytes}))
    for facts in found:
        if facts.live and facts.dead > 0.2 * facts.live:
            out.append(Proposal("health", facts.label, f"dead tuples {facts.dead:,} against {facts.live:,} live",
                                "statistics", {"dead": facts.dead, "live": facts.live}))
        for ix in facts.indexes:
            if ix["scans"] == 0 and not ix["is_unique"] and (ix["bytes"] or 0) > 8 * 2**20:
                out.append(Proposal("health", facts.label, f"index {ix['name']} ({ix['bytes'] / 2**20:,.1f} MB) "
                                    "has never been scanned", "statistics", {"index": ix["name"]}))
    return out
