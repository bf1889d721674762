"""Archived purges and restore on the embedded PostgreSQL: archive then restore gives back a table
equal row by row to the original; a second restore changes nothing."""

import pytest
import sqlalchemy as sa

from dbsweep.archive import BATCH, RUN_ID
from dbsweep.errors import BadInput
from dbsweep.ledger import RESTORED, Ledger
from dbsweep.restore import restore_run
from tests.conftest import count, load_events, retention_policy
from tests.helpers import purge

NEW = "created_at >= now() - interval '7 days'"


def snapshot(engine, table="events") -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))]


@pytest.mark.parametrize("mode", ["table", "parquet"])
@pytest.mark.parametrize("key", ["bigint", "uuid", "none"])
def test_archive_then_restore_gives_back_the_table(tmp_path, pg, dbname, mode, key):
    load_events(pg, old=3000, new=2000, key=key)
    original, survivors = snapshot(pg), count(pg, "events", NEW)
    extra = f'archive = "{mode}"'
    path = retention_policy(tmp_path, dbname, batch_size=400, extra=extra, archive_dir="arch")
    plan, report, target = purge(path)
    assert count(pg, "events") == survivors and report.rows == 5000 - survivors
    if mode == "table":  # archive ∪ survivors = original, no row twice
        assert count(pg, "events__archive") == report.rows
        assert count(pg, "events__archive", "created_at >= now() - interval '7 days'") == 0
        # one stamp per batch, each named once in the batch table with this run
        assert count(pg, f"(SELECT DISTINCT {BATCH} FROM events__archive) b") == report.batches
        assert count(pg, "events__archive_batches", f"{RUN_ID} = '{report.run_id}'") == report.batches
    else:
        files = sorted((tmp_path / "arch" / report.run_id).glob("*.parquet"))
        assert len(files) == len([b for b in Ledger(pg).archived_batches(report.run_id)])
        assert not list((tmp_path / "arch").rglob("*.partial"))

    result = restore_run(target.engine, report.run_id, tmp_path / "arch")
    assert (result.rows_restored, result.rows_skipped) == (report.rows, 0)
    assert snapshot(pg) == original
    assert Ledger(pg).run(report.run_id).state == RESTORED

    again = restore_run(target.engine, report.run_id, tmp_path / "arch")
    assert again.already_restored and again.rows_restored == 0
    assert snapshot(pg) == original


def make_archive_of_an_earlier_dbsweep(engine, archive="events__archive") -> None:
    """Turn the archive back into the form earlier releases wrote: run, batch and time on every
    row (NOT NULL, a BRIN on run and batch), no batch table."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"""
            ALTER TABLE {archive} ADD dbsweep_run_id varchar(32), ADD dbsweep_batch_no int,
                                  ADD dbsweep_archived_at timestamptz;
            UPDATE {archive} a SET dbsweep_run_id = b.dbsweep_run_id, dbsweep_batch_no = b.dbsweep_batch_no,
                                   dbsweep_archived_at = b.dbsweep_archived_at
            FROM {archive}_batches b WHERE b.dbsweep_batch = a.dbsweep_batch;
            ALTER TABLE {archive} ALTER dbsweep_run_id SET NOT NULL, ALTER dbsweep_batch_no SET NOT NULL,
                                  ALTER dbsweep_archived_at SET NOT NULL, DROP COLUMN dbsweep_batch;
            DROP TABLE {archive}_batches;
            CREATE INDEX ix_events__archive_run ON {archive} USING brin (dbsweep_run_id, dbsweep_batch_no)""")


def test_an_archive_from_an_earlier_dbsweep_is_upgraded_and_both_runs_restore(tmp_path, pg, dbname):
    load_events(pg, old=1500, new=1000)
    original = snapshot(pg)
    path = retention_policy(tmp_path, dbname, batch_size=300, extra='archive = "table"')
    _, first, target = purge(path)
    make_archive_of_an_earlier_dbsweep(pg)
    with pg.begin() as conn:  # more rows expire before the next run
        shifted = conn.exec_driver_sql("UPDATE events SET created_at = created_at - interval '30 days' "
                                       "WHERE mod(id, 5) = 0 RETURNING id").scalars().all()
    expired = snapshot(pg, "events")
    _, second, _ = purge(path)
    assert second.rows == len([r for r in expired if r[0] % 5 == 0])

    with pg.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("events__archive")}
    assert columns == {"id", "payload", "created_at", BATCH}  # the old stamp moved to the batch table
    assert count(pg, "events__archive_batches", f"{RUN_ID} = '{first.run_id}'") == first.batches
    assert count(pg, "events__archive_batches", f"{RUN_ID} = '{second.run_id}'") == second.batches
    assert count(pg, "events__archive") == first.rows + second.rows
    assert count(pg, "events__archive", f"{BATCH} IS NULL") == 0

    restore_run(target.engine, second.run_id, tmp_path)
    assert snapshot(pg) == expired
    restore_run(target.engine, first.run_id, tmp_path)
    with pg.begin() as conn:
        conn.execute(sa.text("UPDATE events SET created_at = created_at + interval '30 days' WHERE id = ANY(:ids)"),
                     {"ids": shifted})
    assert snapshot(pg) == original


def test_restore_skips_keys_that_exist_again(tmp_path, pg, dbname):
    load_events(pg, old=1000, new=500)
    original = snapshot(pg)
    plan, report, target = purge(retention_policy(tmp_path, dbname, batch_size=300, extra='archive = "table"'))
    with pg.begin() as conn:  # two archived keys come back by other means before the restore
        conn.exec_driver_sql("""INSERT INTO events SELECT id, 'reused', now() FROM events__archive
                                ORDER BY id LIMIT 2""")
    result = restore_run(target.engine, report.run_id, tmp_path)
    assert (result.rows_restored, result.rows_skipped) == (report.rows - 2, 2)
    assert count(pg, "events") == len(original)
    assert count(pg, "events", "payload = 'reused'") == 2  # left as they are


def test_restore_without_archive_is_refused(tmp_path, pg, dbname):
    load_events(pg, old=500, new=500)
    plan, report, target = purge(retention_policy(tmp_path, dbname, batch_size=300))
    before = count(pg, "events")
    with pytest.raises(BadInput, match="recorded no archive"):
        restore_run(target.engine, report.run_id, tmp_path)
    with pytest.raises(BadInput, match="not in this database's ledger"):
        restore_run(target.engine, "nosuchrun", tmp_path)
    assert count(pg, "events") == before


def _purge_restore_differences(tmp_path, pg, dbname, mode: str) -> int:
    """Keep a copy of `events`, purge 4 of its 5 rows (2 batches) into the archive, restore them:
    the rows that differ between the copy and the restored table (SQL EXCEPT ALL, both ways)."""
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE original AS SELECT * FROM events")
    path = retention_policy(tmp_path, dbname, batch_size=2, extra=f'archive = "{mode}"', archive_dir="arch")
    plan, report, target = purge(path)
    assert report.rows == 4 and count(pg, "events") == 1
    restore_run(target.engine, report.run_id, tmp_path / "arch")
    with pg.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM ((SELECT * FROM original EXCEPT ALL SELECT * FROM events) "
                                    "UNION ALL (SELECT * FROM events EXCEPT ALL SELECT * FROM original)) d")).scalar()


@pytest.mark.parametrize("mode", ["table", "parquet"])
def test_archive_keeps_awkward_values_exactly(tmp_path, pg, dbname, mode):
    """Texts that look like NULL, empty strings, NaN and infinities, exact numerics, newlines,
    quotes and commas, booleans, dates, json: archived and restored exactly (compared by SQL)."""
    with pg.begin() as conn:
        conn.exec_driver_sql("""CREATE TABLE events (id bigint PRIMARY KEY, payload text, note varchar(40),
            amount numeric(20, 6), ratio double precision, flag boolean, day date, doc jsonb,
            created_at timestamptz NOT NULL)""")
        conn.exec_driver_sql("""INSERT INTO events VALUES
            (1, 'NULL', '', 12345678901234.123456, 'NaN', true, '2020-02-29', '{"a": [1, 2]}', now() - interval '30 days'),
            (2, 'N/A', NULL, -0.000001, 'Infinity', false, NULL, NULL, now() - interval '20 days'),
            (3, 'nan', 'a,b "quoted"', NULL, '-Infinity', NULL, '1999-12-31', '"s"', now() - interval '10 days'),
            (4, E'two\\nlines', E'tab\\there', 0, 1.5e-300, true, '2024-01-01', '{}', now() - interval '9 days'),
            (5, '', 'kept', 1, 2, false, '2024-01-02', '[]', now())""")
    assert _purge_restore_differences(tmp_path, pg, dbname, mode) == 0


@pytest.mark.parametrize("mode", ["table", "parquet"])
def test_archive_keeps_values_arrow_has_no_type_for(tmp_path, pg, dbname, mode):
    """Infinite timestamps and dates (Arrow cannot hold them: the run goes on with every column as
    PostgreSQL text), arrays, intervals with months, inet, bytea, JSON null against SQL NULL, and an
    identity column: archived and restored exactly."""
    with pg.begin() as conn:
        conn.exec_driver_sql("""CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            until timestamptz, day date, tags text[], span interval, addr inet, raw bytea, meta jsonb,
            created_at timestamptz NOT NULL)""")
        conn.exec_driver_sql("""INSERT INTO events (until, day, tags, span, addr, raw, meta, created_at) VALUES
            ('infinity', '-infinity', '{a,"b c",NULL}', '1 mon 2 days 03:04:05.123456', '10.0.0.1/8', '\\x00ff', 'null',
             now() - interval '30 days'),
            ('-infinity', 'infinity', '{}', '-1 year', '::1', '', NULL, now() - interval '20 days'),
            ('2020-01-01 12:00:00.000001+00', '2020-02-29', NULL, NULL, NULL, NULL, '{"k": null}', now() - interval '10 days'),
            (NULL, NULL, '{"\\"q\\""}', '0', '192.168.1.1', '\\x5c', '[]', now() - interval '9 days'),
            ('infinity', NULL, '{x}', '1 day', NULL, NULL, '1', now())""")
    assert _purge_restore_differences(tmp_path, pg, dbname, mode) == 0 and count(pg, "events") == 5
    if mode == "parquet":  # the first batch met 'infinity', rolled back, and the run went on as text
        import pyarrow.parquet as pq

        files = sorted((tmp_path / "arch").rglob("*.parquet"))
        assert len(files) == 2 and all(str(pq.read_schema(f).field("until").type) == "string" for f in files)


def test_parquet_batches_larger_than_a_piece_are_whole_and_exact(tmp_path, pg, dbname):
    """A batch's rows reach Arrow a megabyte at a time (parsed on a worker while the DELETE still
    sends): batches of several pieces, rows with newlines and quotes anywhere, and an 'infinity'
    deep in the second batch (a piece after the first fails: the batch rolls back, the run goes on
    as text) come back exactly, and each file holds exactly its batch's rows."""
    import pyarrow.parquet as pq

    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (id bigint PRIMARY KEY, payload text, until timestamptz, "
                             "created_at timestamptz NOT NULL)")
        conn.exec_driver_sql("""INSERT INTO events SELECT g, repeat(md5(g::text), 3) || CASE WHEN mod(g, 7) = 0
                                THEN E'\\nline "two", ' || g ELSE '' END, now() - make_interval(days => mod(g, 50)),
                                now() - interval '30 days' FROM generate_series(1, 60000) g""")
        conn.exec_driver_sql("UPDATE events SET until = 'infinity' WHERE id = 47000")
        conn.exec_driver_sql("INSERT INTO events VALUES (60001, 'new', NULL, now())")
        conn.exec_driver_sql("CREATE TABLE original AS SELECT * FROM events")
    path = retention_policy(tmp_path, dbname, batch_size=30000, extra='archive = "parquet"', archive_dir="arch")
    plan, report, target = purge(path)
    assert report.rows == 60000 and count(pg, "events") == 1
    batches = Ledger(pg).archived_batches(report.run_id)
    files = [tmp_path / "arch" / b.archive for b in batches]
    assert [pq.read_metadata(f).num_rows for f in files] == [b.rows for b in batches] == [30000, 30000]
    assert all(pq.read_metadata(f).num_row_groups > 1 for f in files)  # more than one piece each
    assert str(pq.read_schema(files[1]).field("until").type) == "string"
    restore_run(target.engine, report.run_id, tmp_path / "arch")
    with pg.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ((SELECT * FROM original EXCEPT ALL SELECT * FROM events) "
                                    "UNION ALL (SELECT * FROM events EXCEPT ALL SELECT * FROM original)) d")).scalar() == 0
