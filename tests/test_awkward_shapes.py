"""Reset, retire, cascade, health and verify on tables unlike the demo's: quoted mixed-case names
with spaces, composite and text keys, 63-character names, self-references."""

import re
import time

import sqlalchemy as sa

from dbsweep.health import WARN, health_report
from dbsweep.ledger import Ledger
from dbsweep.policy import load_policy
from dbsweep.target import connect
from tests.conftest import checksums, count, run_cli, write_policy
from tests.helpers import purge

LONG = "Long Table Name " + "x" * 47  # 63 characters, PostgreSQL's limit
assert len(LONG) == 63


def _differences(engine, table: str, copy: str) -> int:
    """Rows in one and not the other, both ways, duplicates counted (EXCEPT ALL)."""
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT (SELECT count(*) FROM (TABLE {table} EXCEPT ALL TABLE {copy}) a) + "
                                    f"(SELECT count(*) FROM (TABLE {copy} EXCEPT ALL TABLE {table}) b)")).scalar()


RESET = """
[[phase]]
name = "sync"
kind = "reset"
table = "{table}"
batch_size = 2000
[[phase.rules]]
match = {{ column = "Kind", equals = "keep" }}
set = {{ "Sync State" = "PENDING" }}
[[phase.rules]]
match = "otherwise"
set = {{ "Sync State" = "DONE", "Action" = "NONE" }}
"""


def _reset_table(engine, schema: str, name: str, rows: int) -> str:
    qualified = f'"{schema}"."{name}"'
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.exec_driver_sql(f'CREATE TABLE {qualified} ("Region Id" int, "Order Key" text, "Kind" text, '
                             f'"Sync State" text, "Action" text, PRIMARY KEY ("Region Id", "Order Key"))')
        conn.exec_driver_sql(f"""INSERT INTO {qualified} SELECT mod(g, 7), 'K-' || g,
            CASE WHEN mod(g, 10) = 0 THEN 'keep' ELSE 'other' END,
            CASE WHEN mod(g, 3) = 0 THEN NULL ELSE 'X' || mod(g, 5) END, 'A' || mod(g, 4)
            FROM generate_series(1, {rows}) g""")
        conn.exec_driver_sql(f'CREATE TABLE "{schema}".original AS TABLE {qualified}')
    return qualified


def test_undoing_a_reset_is_row_for_row(tmp_path, pg, dbname):
    table = _reset_table(pg, "Ops", "Sync Table", 20_000)
    path = write_policy(tmp_path, RESET.format(table="Ops.Sync Table"), dbname, name="shapes")
    _, report, _ = purge(path, phase="sync")
    assert report.rows > 15_000 and _differences(pg, table, '"Ops".original') > 0
    undo = run_cli("restore", report.run_id, "--policy", path)  # its speed: bench/reset_restore.py
    assert undo.returncode == 0, undo.stderr
    assert _differences(pg, table, '"Ops".original') == 0


def test_retire_counts_its_grace_from_the_rename_itself(tmp_path, pg, dbname):
    """The grace runs from the moment of the rename (the ledger's batch), never from the time of a
    plan; time is the test's own: each later plan is made at a moment the test chooses."""
    from datetime import timedelta

    from dbsweep import service
    from dbsweep.plan import utcnow
    from expectations.runner import gate

    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "Old Mixed Delta" (id int PRIMARY KEY)')
    path = write_policy(tmp_path, '[[phase]]\nname = "retire"\nkind = "retire"\ntables = ["Old Mixed Delta"]\n'
                                  'grace = "1 hour"\n', dbname, name="shapes")
    renamed = run_cli("run", path)
    assert renamed.returncode == 0, renamed.stderr
    renamed_at = utcnow()
    before = checksums(pg)
    for args in (("run", path, "--dry-run"), ("run", path)):  # inside the grace: nothing, and when it is due
        waiting = run_cli(*args)
        assert waiting.returncode == 0, waiting.stderr
        assert re.search(r"drop due at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", waiting.stdout), waiting.stdout
    assert checksums(pg) == before  # the retired copy is still there
    policy = load_policy(path)
    target = connect(policy)
    for moment, dropped in ((renamed_at + timedelta(minutes=59), False), (renamed_at + timedelta(minutes=61), True)):
        plan = service.make_plan(policy, "retire", target, now=moment)
        service.record_gate(target, plan, gate(plan))
        service.apply(policy, target, plan, dry_run=False)
        assert bool([t for t in checksums(pg) if "Old Mixed Delta" in t]) is not dropped, moment


def test_a_63_character_table_through_retire_reset_and_a_table_archive(tmp_path, pg, dbname):
    table = _reset_table(pg, "public", LONG, 3_000)
    reset_path = write_policy(tmp_path, RESET.format(table=LONG), dbname, name="shapes")
    _, report, _ = purge(reset_path, phase="sync")
    assert report.rows > 0
    assert run_cli("restore", report.run_id, "--policy", reset_path).returncode == 0
    assert _differences(pg, table, "public.original") == 0

    archived = write_policy(tmp_path, f'[[phase]]\nname = "purge"\nkind = "retention"\ntable = "{LONG}"\n'
                                      'time_column = "At"\nolder_than = "1 day"\narchive = "table"\n',
                            dbname, name="shapes")
    with pg.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE {table} ADD COLUMN "At" timestamptz')
        conn.exec_driver_sql(f"""UPDATE {table} SET "At" = now() - mod("Region Id", 3) * interval '2 days'""")
        conn.exec_driver_sql("DROP TABLE public.original")
        conn.exec_driver_sql(f"CREATE TABLE public.original AS TABLE {table}")
    shown = run_cli("plan", archived)
    derived = shown.stdout.split("saves what it changes in ")[1].splitlines()[0].strip()  # shown before it is written
    assert shown.returncode == 0 and derived.endswith("__archive") and len(derived) <= 63, shown.stdout
    _, report, _ = purge(archived)
    assert report.rows > 0 and count(pg, table) < 3_000
    assert [t for t in checksums(pg) if derived in t]
    assert run_cli("restore", report.run_id, "--policy", archived).returncode == 0
    assert _differences(pg, table, "public.original") == 0

    retire = write_policy(tmp_path, f'[[phase]]\nname = "retire"\nkind = "retire"\ntables = ["{LONG}"]\n'
                                    "archive = true\n", dbname, name="shapes")
    first = run_cli("run", retire)
    assert first.returncode == 0, first.stderr
    names = [t for t in checksums(pg) if t.startswith('public."Long Table Name')]
    retired = [t for t in names if "__retired_" in t]
    assert len(retired) == 1 and len(retired[0]) - len('public.""') <= 63 and f'public."{LONG}"' not in names
    status = run_cli("status", retire)
    run_id = Ledger(pg).list_runs("shapes")[0].run_id
    assert "undo: dbsweep restore" in status.stdout
    assert run_cli("restore", run_id, "--policy", retire).returncode == 0
    assert _differences(pg, table, "public.original") == 0


def test_a_self_referencing_parent_is_refused_before_any_child_goes(tmp_path, pg, dbname):
    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "Accounts" (id bigint PRIMARY KEY, "Parent Account" bigint '
                             'REFERENCES "Accounts", status text)')
        conn.exec_driver_sql('CREATE TABLE notes (id bigint PRIMARY KEY, account_id bigint REFERENCES "Accounts")')
        conn.exec_driver_sql("""INSERT INTO "Accounts" SELECT g, NULL, CASE WHEN g <= 50 THEN 'closed' ELSE 'open' END
                                FROM generate_series(1, 100) g""")
        conn.exec_driver_sql('UPDATE "Accounts" SET "Parent Account" = 7 WHERE id = 80')  # kept, pointing at a closed one
        conn.exec_driver_sql("INSERT INTO notes SELECT g, g FROM generate_series(1, 100) g")
    path = write_policy(tmp_path, """
[[phase]]
name = "closed"
kind = "cascade"
[phase.parent]
table = "Accounts"
where = "status = 'closed'"
batch_size = 10
[[phase.children]]
table = "notes"
fk_column = "account_id"
""", dbname, name="shapes")
    before = checksums(pg)
    result = run_cli("run", path)
    assert result.returncode == 3, result.stderr
    assert "Accounts_Parent Account_fkey" in result.stderr and "referenced by other rows" in result.stderr
    assert checksums(pg) == before


def test_health_shows_size_dead_tuples_and_vacuum_of_plain_and_partitioned_tables(tmp_path, pg, dbname):
    with pg.begin() as conn:
        quiet = "WITH (autovacuum_enabled = false)"  # the dead tuples stay until the report reads them
        conn.exec_driver_sql(f'CREATE TABLE "Plain Events" (id bigint PRIMARY KEY, at timestamptz NOT NULL) {quiet}')
        conn.exec_driver_sql("CREATE TABLE parted (id bigint, at timestamptz NOT NULL) PARTITION BY RANGE (at)")
        conn.exec_driver_sql("CREATE TABLE parted_old PARTITION OF parted FOR VALUES FROM ('2000-01-01') "
                             f"TO ('2020-01-01') {quiet}")
        conn.exec_driver_sql("CREATE TABLE parted_new PARTITION OF parted FOR VALUES FROM ('2020-01-01') "
                             f"TO ('2100-01-01') {quiet}")
        for name in ('"Plain Events"', "parted"):
            conn.exec_driver_sql(f"INSERT INTO {name} SELECT g, now() - g * interval '1 hour' FROM generate_series(1, 10000) g")
    with pg.connect() as conn:  # 4,000 dead tuples in each, reported to the statistics at once
        for name in ('"Plain Events"', "parted"):
            conn.exec_driver_sql(f"DELETE FROM {name} WHERE id <= 4000")
        conn.commit()
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        conn.commit()
    body = "".join(f'[[phase]]\nname = "p{i}"\nkind = "retention"\ntable = "{t}"\ntime_column = "at"\n'
                   'older_than = "100 days"\n' for i, t in enumerate(("Plain Events", "parted")))
    policy = load_policy(write_policy(tmp_path, body, dbname, name="shapes"))
    deadline = time.monotonic() + 10
    while True:
        findings = {(f.check, f.subject): f for f in health_report(policy, connect(policy))}
        if "4,000" in findings[("dead tuples", "Plain Events")].value or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for table in ("Plain Events", "parted"):
        size = findings[("table", table)].value
        assert re.fullmatch(r"6,000 rows, [\d.]+ (kB|MB)", size), size
        dead = findings[("dead tuples", table)]
        assert dead.value.startswith("4,000 (67% of live); last vacuum never") and dead.status == WARN, dead.value
    connectivity = [f for (check, _), f in findings.items() if check == "connectivity"]
    assert len(connectivity) == 1 and re.match(r"\d+ ms; PostgreSQL 16", connectivity[0].value), connectivity
    assert re.fullmatch(r"\d+ of max_connections \d+", findings[("connections", "server")].value)


def test_verify_after_a_restore_says_so_instead_of_failing(tmp_path, pg, dbname):
    table = _reset_table(pg, "public", "Sync", 2_000)
    path = write_policy(tmp_path, RESET.format(table="Sync"), dbname, name="shapes")
    assert run_cli("plan", path).returncode == 0
    unrun = run_cli("verify", path)  # a plan not applied yet is not a failed verification
    assert unrun.returncode == 0 and "no run of this phase went to the end yet" in unrun.stdout, unrun.stdout + unrun.stderr
    _, report, _ = purge(path, phase="sync")
    assert run_cli("verify", path).returncode == 0
    assert run_cli("restore", report.run_id, "--policy", path).returncode == 0
    after = run_cli("verify", path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"run {report.run_id} (plan {report.plan_id}) was restored" in after.stdout
    assert _differences(pg, table, "public.original") == 0


def test_a_table_named_as_sql_writes_it_or_with_a_schema_key(tmp_path, pg, dbname):
    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE SCHEMA "Ops"')
        conn.exec_driver_sql('CREATE TABLE "Ops"."Audit Log" (id bigint PRIMARY KEY, at timestamptz NOT NULL)')
        conn.exec_driver_sql('CREATE TABLE "Ops"."audit.v2" (id bigint PRIMARY KEY, at timestamptz NOT NULL)')
        for name in ('"Ops"."Audit Log"', '"Ops"."audit.v2"'):
            conn.exec_driver_sql(f"INSERT INTO {name} SELECT g, now() - g * interval '1 day' FROM generate_series(1, 30) g")
    forms = [  # (how the table is named, the age kept, the table, the rows it keeps: rows 1 .. days-1)
        ('table = \'"Ops"."Audit Log"\'', 20, '"Ops"."Audit Log"'),
        ('schema = "Ops"\ntable = "Audit Log"', 10, '"Ops"."Audit Log"'),
        ('schema = "Ops"\ntable = \'"audit.v2"\'', 5, '"Ops"."audit.v2"'),
    ]
    for naming, days, table in forms:
        path = write_policy(tmp_path, f'[[phase]]\nname = "purge"\nkind = "retention"\n{naming}\ntime_column = "at"\n'
                                      f'older_than = "{days} days"\n', dbname, name="shapes")
        result = run_cli("run", path)
        assert result.returncode == 0, (naming, result.stderr)
        assert count(pg, table) == days - 1, naming
    assert count(pg, '"Ops"."audit.v2"') == 4 and count(pg, '"Ops"."Audit Log"') == 9


def test_a_retention_whose_rows_other_tables_point_at_is_refused_until_it_keeps_them(tmp_path, pg, dbname):
    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "Events" (id bigint PRIMARY KEY, at timestamptz NOT NULL)')
        conn.exec_driver_sql('CREATE TABLE "Bills" (id bigint PRIMARY KEY, "Event Id" bigint REFERENCES "Events" '
                             'ON DELETE CASCADE)')
        conn.exec_driver_sql("""INSERT INTO "Events" SELECT g, now() - g * interval '1 day' FROM generate_series(1, 40) g""")
        conn.exec_driver_sql('INSERT INTO "Bills" VALUES (1, 30), (2, 35), (3, 2)')  # two old events are billed
    body = ('[[phase]]\nname = "purge"\nkind = "retention"\ntable = "Events"\ntime_column = "at"\n'
            'older_than = "10 days"\n{keep}\n')
    path = write_policy(tmp_path, body.format(keep=""), dbname, name="shapes")
    before = checksums(pg)
    refused = run_cli("run", path)
    assert refused.returncode == 3, refused.stderr
    assert "Bills_Event Id_fkey" in refused.stderr and "2 selected rows are referenced" in refused.stderr
    assert checksums(pg) == before  # ON DELETE CASCADE would have taken two bills with it
    path = write_policy(tmp_path, body.format(keep='keep_if_referenced_by = ["Bills.Event Id"]'), dbname, name="shapes")
    kept = run_cli("run", path)
    assert kept.returncode == 0, kept.stderr
    assert count(pg, '"Bills"') == 3 and count(pg, '"Events"') == 9 + 2  # rows 1-9, and the billed 30 and 35
