"""Kind `dedupe` (seed 003) on the embedded PostgreSQL: exact survivors for both strategies, NULLs
in keys, the constraint afterwards, restore row for row, bad input."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import checksums, count, run_cli, write_policy
from helpers import plan_and_gate

from dbsweep import service
from dbsweep.errors import BadInput
from dbsweep.policy import load_policy
from dbsweep.restore import restore_run
from dbsweep.target import connect

TABLE = '"Task Requirements"'


def load(engine: sa.Engine, keys: int = 300, copies: int = 20, singles: int = 200, table: str = TABLE) -> None:
    """`keys` natural keys with up to `copies` rows each (created_at shuffled, so the oldest is not
    the lowest id; ties on created_at for some keys), `singles` rows with no duplicate, and rows
    with a NULL key part (3 of the same NULL key, and 2 more)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"""
            CREATE TABLE {table} (id bigserial PRIMARY KEY, "Task PK" int, requirement_id text,
                                  payload text DEFAULT 'x', created_at timestamptz NOT NULL,
                                  CHECK (payload <> 'forbidden'))""")
        conn.exec_driver_sql(f"""
            INSERT INTO {table} ("Task PK", requirement_id, payload, created_at)
            SELECT k, 'r' || mod(k, 7), 'copy ' || c,
                   timestamptz '2025-01-01' + make_interval(hours => CASE WHEN mod(k, 10) = 0 THEN 5
                                                               ELSE (hashtext(k::text || '-' || c) & 1023) END)
            FROM generate_series(1, {keys}) k, generate_series(1, {copies}) c
            WHERE c <= 1 + mod(k, {copies})
            ORDER BY random()""")
        conn.exec_driver_sql(f"""
            INSERT INTO {table} ("Task PK", requirement_id, created_at)
            SELECT 100000 + g, 'single', now() FROM generate_series(1, {singles}) g""")
        conn.exec_driver_sql(f"""
            INSERT INTO {table} ("Task PK", requirement_id, created_at) VALUES
            (NULL, 'n', '2025-01-01'), (NULL, 'n', '2025-01-02'), (NULL, 'n', '2025-01-03'),
            (7, NULL, '2025-01-01'), (7, NULL, '2025-01-02')""")


def policy_for(tmp_path, dbname, strategy="auto", extra="", table=TABLE, keep='keep = "oldest"\ntime_column = "created_at"',
               batch_size=500):
    quoted = table.replace('"', '\\"')
    return write_policy(tmp_path, f"""
        [[phase]]
        name = "dedupe"
        kind = "dedupe"
        batch_size = {batch_size}
        {extra}

        [[phase.tables]]
        table = "{quoted}"
        natural_key = ["Task PK", "requirement_id"]
        {keep}
        strategy = "{strategy}"
    """, dbname)


def expected_survivors(engine: sa.Engine, table: str = TABLE, nulls_equal: bool = False) -> set[int]:
    """The rule computed independently: per key the earliest created_at, then the lowest id; rows
    with a NULL key part all stay (NULLs distinct)."""
    with engine.connect() as conn:
        kept = set(conn.execute(sa.text(f"""
            SELECT DISTINCT ON ("Task PK", requirement_id) id FROM {table}
            WHERE "Task PK" IS NOT NULL AND requirement_id IS NOT NULL
            ORDER BY "Task PK", requirement_id, created_at, id""")).scalars())
        if nulls_equal:
            kept |= set(conn.execute(sa.text(f"""
                SELECT DISTINCT ON ("Task PK", requirement_id) id FROM {table}
                WHERE "Task PK" IS NULL OR requirement_id IS NULL
                ORDER BY "Task PK", requirement_id, created_at, id""")).scalars())
        else:
            kept |= set(conn.execute(sa.text(
                f'SELECT id FROM {table} WHERE "Task PK" IS NULL OR requirement_id IS NULL')).scalars())
    return kept


def rows_by_id(engine: sa.Engine, table: str = TABLE) -> dict[int, tuple]:
    with engine.connect() as conn:
        return {r[0]: tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))}


def run_phase(path, phase="dedupe"):
    policy, target, plan = plan_and_gate(path, phase)
    assert plan.gate.passed, plan.gate.summary
    report = service.apply(policy, target, plan, dry_run=False)
    return policy, target, plan, report


@pytest.mark.parametrize("strategy", ["in_place", "rebuild"])
def test_exact_survivors_constraint_and_restore(tmp_path, dbname, pg, strategy):
    from expectations.runner import verification

    load(pg)
    with pg.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE snapshot AS SELECT * FROM {TABLE}")
    before = rows_by_id(pg)
    survivors = expected_survivors(pg)
    policy, target, plan, report = run_phase(policy_for(tmp_path, dbname, strategy))
    assert plan.steps[0].walk == strategy
    removed = len(before) - len(survivors)
    assert plan.rows_selected == removed and report.rows == removed
    after = rows_by_id(pg)
    assert set(after) == survivors  # by primary key: the rule's row of every key, nothing else
    assert all(after[i] == before[i] for i in survivors)  # and each kept row unchanged, column for column
    verdict = verification(plan, service.verify(target, plan))
    assert verdict.passed, verdict.summary
    with pg.begin() as conn:  # a new duplicate fails at the database
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql(f"""INSERT INTO {TABLE} ("Task PK", requirement_id, created_at) VALUES (1, 'r1', now())""")
    with pg.connect() as conn:  # dbsweep's helper index is gone again; for in_place nothing else changed
        names = set(conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'Task Requirements'"))
                    .scalars())
    assert not any(n.endswith("__dedupe_ix") for n in names)
    result = restore_run(target.engine, report.run_id, policy.archive_dir)
    assert "dropped constraint" in result.detail
    assert rows_by_id(pg) == before  # row for row, the duplicates back
    with pg.connect() as conn:
        both_ways = conn.execute(sa.text(f"""
            SELECT count(*) FROM ((SELECT * FROM {TABLE} EXCEPT ALL SELECT * FROM snapshot)
            UNION ALL (SELECT * FROM snapshot EXCEPT ALL SELECT * FROM {TABLE})) d""")).scalar()
    assert both_ways == 0
    again = restore_run(target.engine, report.run_id, policy.archive_dir)
    assert again.already_restored and rows_by_id(pg) == before


def test_nulls_equal_keeps_one_row_per_null_key(tmp_path, dbname, pg):
    load(pg, keys=50)
    survivors = expected_survivors(pg, nulls_equal=True)
    path = policy_for(tmp_path, dbname, "in_place", keep='keep = "oldest"\ntime_column = "created_at"\nnulls = "equal"')
    run_phase(path)
    assert set(rows_by_id(pg)) == survivors
    with pg.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.exec_driver_sql(f"""INSERT INTO {TABLE} ("Task PK", requirement_id, created_at) VALUES (NULL, 'n', now())""")


def test_keep_newest_and_lowest_key(tmp_path, dbname, pg):
    load(pg, keys=60)
    with pg.connect() as conn:
        newest = set(conn.execute(sa.text(f"""
            SELECT DISTINCT ON ("Task PK", requirement_id) id FROM {TABLE}
            WHERE "Task PK" IS NOT NULL AND requirement_id IS NOT NULL
            ORDER BY "Task PK", requirement_id, created_at DESC, id""")).scalars())
        nulls = set(conn.execute(sa.text(f'SELECT id FROM {TABLE} WHERE "Task PK" IS NULL OR requirement_id IS NULL'))
                    .scalars())
    run_phase(policy_for(tmp_path, dbname, "rebuild", keep='keep = "newest"\ntime_column = "created_at"'))
    assert set(rows_by_id(pg)) == newest | nulls


def test_auto_picks_by_duplicate_share_and_says_why(tmp_path, dbname, pg):
    load(pg, keys=200, copies=20, singles=10)
    load(pg, keys=20, copies=2, singles=2000, table='"few dups"')
    path = write_policy(tmp_path, """
        [[phase]]
        name = "dedupe"
        kind = "dedupe"

        [[phase.tables]]
        table = "Task Requirements"
        natural_key = ["Task PK", "requirement_id"]
        time_column = "created_at"

        [[phase.tables]]
        table = "few dups"
        natural_key = ["Task PK", "requirement_id"]
        time_column = "created_at"
    """, dbname)
    _, _, plan = plan_and_gate(path, "dedupe")
    walks = {row["table"]: (row["strategy"], row["why"]) for row in plan.profile}
    assert walks["Task Requirements"][0] == "rebuild" and "copying what stays" in walks["Task Requirements"][1]
    assert walks["few dups"][0] == "in_place" and "rebuild above 50%" in walks["few dups"][1]


def test_auto_falls_back_to_in_place_for_an_inbound_foreign_key(tmp_path, dbname, pg):
    load(pg, keys=100)
    with pg.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE notes (id int PRIMARY KEY, req bigint REFERENCES {TABLE} (id))')
        conn.exec_driver_sql(f"INSERT INTO notes SELECT 1, min(id) FROM {TABLE}")
    _, _, plan = plan_and_gate(policy_for(tmp_path, dbname, "auto"), "dedupe")
    assert plan.steps[0].walk == "in_place"
    assert "foreign key notes_req_fkey" in plan.profile[0]["why"]
    with pytest.raises(BadInput, match="cannot carry over foreign key notes_req_fkey"):
        plan_and_gate(policy_for(tmp_path, dbname, "rebuild"), "dedupe")


def test_gate_refuses_a_key_already_unique_and_ambiguous_times(tmp_path, dbname, pg):
    load(pg, keys=30)
    with pg.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE {TABLE} ALTER COLUMN created_at DROP NOT NULL')
        conn.exec_driver_sql(f'UPDATE {TABLE} SET created_at = NULL WHERE id IN (SELECT min(id) FROM {TABLE} '
                             'GROUP BY "Task PK", requirement_id HAVING count(*) > 1 LIMIT 3)')
    path = policy_for(tmp_path, dbname)
    before = checksums(pg)
    result = run_cli("run", path, "--phase", "dedupe")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "ambiguous_rows" in result.stdout + result.stderr
    assert checksums(pg) == before


BAD = [
    ('natural_key = ["Task PK", "nope"]\nkeep = "lowest_key"', "nope"),
    ('natural_key = ["Task PK", "Task PK"]\nkeep = "lowest_key"', "names a column twice"),
    ('natural_key = ["Task PK"]\ntime_column = "payload"', "payload"),
    ('natural_key = ["id"]\nkeep = "lowest_key"', "already_unique: unexpected ['primary key Task Requirements_pkey']"),
    ('natural_key = ["Task PK"]\nkeep = "oldest"', "needs time_column"),
    ('natural_key = ["Task PK"]\nkeep = "lowest_key"\ntime_column = "created_at"', "leave time_column out"),
    ('natural_key = ["Task PK"]\nkeep = "biggest"', "keep"),
    ('natural_key = ["Task PK"]\nkeep = "lowest_key"\nstrategy = "fast"', "strategy"),
]


@pytest.mark.parametrize("table_keys, message", BAD)
def test_bad_input_exits_2_and_changes_nothing(tmp_path, dbname, pg, table_keys, message):
    load(pg, keys=20)
    path = write_policy(tmp_path, f"""
        [[phase]]
        name = "dedupe"
        kind = "dedupe"

        [[phase.tables]]
        table = "Task Requirements"
        {table_keys}
    """, dbname)
    before = checksums(pg)
    result = run_cli("run", path, "--phase", "dedupe")
    line = result.stderr.strip().splitlines()[-1]
    if "already_unique" in message:  # well-formed, but nothing to do: the gate refuses it
        assert result.returncode == 3 and message in line, line
    else:
        assert result.returncode == 2, result.stdout + result.stderr
        assert message in line and "testpol.toml" in line, line
    assert checksums(pg) == before


def test_unknown_table_and_archive_none_are_refused(tmp_path, dbname, pg):
    load(pg, keys=5)
    path = write_policy(tmp_path, """
        [[phase]]
        name = "dedupe"
        kind = "dedupe"
        archive = "none"

        [[phase.tables]]
        table = "Task Requirements"
        natural_key = ["Task PK"]
        keep = "lowest_key"
    """, dbname)
    result = run_cli("plan", path)
    assert result.returncode == 2 and "archive must be 'table'" in result.stderr
    before = checksums(pg)
    path = policy_for(tmp_path, dbname, table='"no such table"')
    policy = load_policy(path)
    with pytest.raises(BadInput, match="no such table"):
        service.make_plan(policy, "dedupe", connect(policy))
    assert checksums(pg) == before and count(pg, TABLE) > 0  # nothing changed, the real table untouched


def schema_dump(engine: sa.Engine, table: str) -> list[str]:
    """`pg_dump --schema-only -t <table>`, without its version and session lines."""
    import subprocess
    from pathlib import Path

    import pgserver

    pg_dump = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump"
    url = engine.url
    out = subprocess.run([str(pg_dump), "--schema-only", "-h", url.query["host"], "-U", "postgres", "-d", url.database,
                          "-t", table], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict", "SET ", "SELECT pg_catalog"))]


def test_rebuild_keeps_every_schema_object(tmp_path, dbname, pg):
    """Columns, defaults, the serial's sequence, indexes (partial, expression, unique), check and
    foreign-key constraints, triggers (one disabled), grants, owner, comments and storage options:
    pg_dump shows the same table afterwards, apart from the new unique constraint."""
    load(pg, keys=80)
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE tasks (pk int PRIMARY KEY)")
        conn.exec_driver_sql(f'INSERT INTO tasks SELECT DISTINCT "Task PK" FROM {TABLE} WHERE "Task PK" IS NOT NULL')
        conn.exec_driver_sql(f'ALTER TABLE {TABLE} ADD CONSTRAINT "Task FK" FOREIGN KEY ("Task PK") REFERENCES tasks (pk)')
        conn.exec_driver_sql(f'ALTER TABLE {TABLE} ADD COLUMN "total" int GENERATED ALWAYS AS (length(payload)) STORED')
        conn.exec_driver_sql(f'CREATE INDEX "by payload" ON {TABLE} (lower(payload)) WHERE payload IS NOT NULL')
        conn.exec_driver_sql(f'CREATE INDEX ON {TABLE} (created_at DESC)')
        conn.exec_driver_sql(f"COMMENT ON TABLE {TABLE} IS 'requirements per task; note: colons'")
        conn.exec_driver_sql(f"COMMENT ON COLUMN {TABLE}.payload IS 'what the ETL wrote'")
        conn.exec_driver_sql("COMMENT ON INDEX \"by payload\" IS 'for search'")
        conn.exec_driver_sql(f'COMMENT ON CONSTRAINT "Task Requirements_pkey" ON {TABLE} IS \'the key\'')
        conn.exec_driver_sql(f"ALTER TABLE {TABLE} SET (fillfactor = 90)")
        conn.exec_driver_sql("DO $$ BEGIN CREATE ROLE etl_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        conn.exec_driver_sql(f"GRANT SELECT, INSERT ON {TABLE} TO etl_reader WITH GRANT OPTION")
        conn.exec_driver_sql("CREATE TABLE audit (n int)")
        conn.exec_driver_sql("CREATE FUNCTION count_it() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN INSERT INTO audit VALUES (1); RETURN NULL; END $$")
        conn.exec_driver_sql(f"CREATE TRIGGER audit_it AFTER INSERT ON {TABLE} FOR EACH ROW EXECUTE FUNCTION count_it()")
        conn.exec_driver_sql(f"CREATE TRIGGER audit_off AFTER DELETE ON {TABLE} FOR EACH ROW EXECUTE FUNCTION count_it()")
        conn.exec_driver_sql(f"ALTER TABLE {TABLE} DISABLE TRIGGER audit_off")
        conn.exec_driver_sql("TRUNCATE audit")
    before = schema_dump(pg, TABLE)
    survivors = expected_survivors(pg)
    _, _, plan, report = run_phase(policy_for(tmp_path, dbname, "rebuild"))
    assert plan.steps[0].walk == "rebuild"
    after = schema_dump(pg, TABLE)
    constraint = plan.steps[0].spec["constraint"]
    from collections import Counter

    added, lost = Counter(after) - Counter(before), Counter(before) - Counter(after)
    assert lost == Counter(), lost
    assert added == Counter({'ALTER TABLE ONLY public."Task Requirements"': 1,
                             f'    ADD CONSTRAINT "{constraint}" UNIQUE ("Task PK", requirement_id);': 1}), added
    assert set(rows_by_id(pg)) == survivors
    with pg.begin() as conn:  # the copied trigger fires on the new table; the sequence goes on where it was
        next_id = conn.execute(sa.text(f"""INSERT INTO {TABLE} ("Task PK", requirement_id, created_at)
                                          VALUES (1, 'new one', now()) RETURNING id""")).scalar()
        assert conn.execute(sa.text("SELECT count(*) FROM audit")).scalar() == 1
        assert next_id > max(survivors)
        assert conn.execute(sa.text(f"SELECT total FROM {TABLE} WHERE id = :i"), {"i": next_id}).scalar() == 1


def test_backup_dropped_only_by_a_later_run_after_keep_backup(tmp_path, dbname, pg):
    from datetime import timedelta

    from expectations.runner import gate

    load(pg, keys=40)
    policy, target, plan, report = run_phase(policy_for(tmp_path, dbname, "rebuild"))
    backup = plan.steps[0].spec["names"]["backup"]
    with pg.connect() as conn:
        assert sa.inspect(conn).has_table(backup)
    soon = service.make_plan(policy, "dedupe", target)  # deduplicated already: only the backup is looked after
    service.record_gate(target, soon, gate(soon))
    assert soon.gate.passed and soon.steps == []
    assert soon.profile[0]["strategy"] == "keep backup" and "dropped by a run after" in soon.profile[0]["why"]
    later = service.make_plan(policy, "dedupe", target, now=plan.created_at + timedelta(days=7, minutes=2))
    service.record_gate(target, later, gate(later))
    assert later.gate.passed and [s.walk for s in later.steps] == ["drop_backup"]
    assert later.profile[0]["strategy"] == "drop backup" and "keep_backup 7 days has passed" in later.profile[0]["why"]
    service.apply(policy, target, later, dry_run=False)
    with pg.connect() as conn:
        assert not sa.inspect(conn).has_table(backup)
    kept = checksums(pg)
    with pytest.raises(BadInput, match="dropped after keep_backup"):
        restore_run(target.engine, report.run_id, policy.archive_dir)
    assert checksums(pg) == kept  # refused before anything changed: the constraint is still there
    with pg.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.exec_driver_sql(f"""INSERT INTO {TABLE} ("Task PK", requirement_id, created_at) VALUES (1, 'r1', now())""")


def test_sqlite_in_place_dedupe_and_restore(tmp_path):
    """The portable path: no CONCURRENTLY, no guard trigger, a plain unique index; auto never
    rebuilds there and says why."""
    from expectations.runner import verification

    db = tmp_path / "local.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE photos (id INTEGER PRIMARY KEY, task_pk INTEGER, photo_id TEXT, "
                             "created_at DATETIME NOT NULL)")
        for i in range(1, 601):
            conn.exec_driver_sql(f"INSERT INTO photos VALUES ({i}, {i % 40}, 'p{i % 3}', "
                                 f"datetime('2025-01-01', '+{(i * 7919) % 1000} minutes'))")
        conn.exec_driver_sql("INSERT INTO photos VALUES (601, NULL, 'p0', '2025-01-01'), (602, NULL, 'p0', '2025-01-02')")
        # SQLite keeps datetimes as text: compared as the instants they are
        before = {r[0]: tuple(r) for r in conn.exec_driver_sql("SELECT id, task_pk, photo_id, datetime(created_at) FROM photos")}
        wanted = {r[0] for r in conn.exec_driver_sql(
            "SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY task_pk, photo_id ORDER BY created_at, id) n "
            "FROM photos WHERE task_pk IS NOT NULL) WHERE n = 1")} | {601, 602}
    path = write_policy(tmp_path, """
        [[phase]]
        name = "dedupe"
        kind = "dedupe"
        batch_size = 100

        [[phase.tables]]
        table = "photos"
        natural_key = ["task_pk", "photo_id"]
        time_column = "created_at"
    """, "unused", env_block=f'env.dev = {{ url = "sqlite:///{db}" }}')
    policy, target, plan, report = run_phase(path)
    assert plan.steps[0].walk == "in_place" and "needs PostgreSQL" in plan.profile[0]["why"]
    with engine.connect() as conn:
        assert {r[0] for r in conn.exec_driver_sql("SELECT id FROM photos")} == wanted
    assert verification(plan, service.verify(target, plan)).passed
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.exec_driver_sql("INSERT INTO photos VALUES (9999, 1, 'p1', '2030-01-01')")
    restore_run(target.engine, report.run_id, policy.archive_dir)
    with engine.connect() as conn:
        assert {r[0]: tuple(r) for r in conn.exec_driver_sql(
            "SELECT id, task_pk, photo_id, datetime(created_at) FROM photos")} == before


def test_sql_server_statements_compile_without_row_values():
    """SQL Server cannot run here: its text is compiled and read. The kept-row test is expanded
    (no row-value comparison), and NULLs counted distinct are a filtered unique index."""
    from sqlalchemy.dialects import mssql

    from dbsweep.dialects.mssql import MssqlDialect
    from dbsweep.kinds.dedupe import is_duplicate

    table = sa.Table("task_photos", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True),
                     sa.Column("task_pk", sa.Integer), sa.Column("photo_id", sa.Text),
                     sa.Column("created_at", sa.DateTime), schema="dbo")
    spec = {"natural_key": ["task_pk", "photo_id"], "key": ["id"], "keep": "oldest", "time_column": "created_at",
            "nulls": "distinct"}
    text = str(sa.delete(table).where(is_duplicate(table, table.alias("dbsweep_k"), spec))
               .compile(dialect=mssql.dialect()))
    assert "EXISTS (SELECT" in text and "FROM dbo.task_photos AS dbsweep_k" in text
    assert "dbsweep_k.task_pk = dbo.task_photos.task_pk" in text
    assert "dbsweep_k.created_at < dbo.task_photos.created_at OR dbsweep_k.created_at = dbo.task_photos.created_at " \
           "AND dbsweep_k.id < dbo.task_photos.id" in text
    index = MssqlDialect().unique_index(table, "task_photos_key", ["task_pk", "photo_id"], nulls_equal=False)
    assert str(sa.schema.CreateIndex(index).compile(dialect=mssql.dialect())) == (
        "CREATE UNIQUE INDEX task_photos_key ON dbo.task_photos (task_pk, photo_id) "
        "WHERE task_pk IS NOT NULL AND photo_id IS NOT NULL")
    index = MssqlDialect().unique_index(table, "task_photos_key", ["task_pk", "photo_id"], nulls_equal=True)
    assert "WHERE" not in str(sa.schema.CreateIndex(index).compile(dialect=mssql.dialect()))
