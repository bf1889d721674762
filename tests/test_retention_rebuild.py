"""Retention by rebuild on the embedded PostgreSQL: the rows that stay are copied into a new table
and swapped in; what the rule keeps survives row for row (NULL times included), the old table is
the archive (backup, Parquet, or nothing), restore puts back exactly what went, and `auto` chooses
by the share due and by what a swap could not carry."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from dbsweep import service
from dbsweep.ledger import Ledger
from expectations.runner import verification
from tests.conftest import checksums, retention_policy, run_cli
from tests.helpers import plan_and_gate, purge

TABLE = '"Sensor Readings"'


def load(engine, rows: int = 6000, due_share: float = 0.9) -> None:
    """A reading table with what a swap must carry: an identity key, a text column with a default,
    a check, an index on the time, a trigger, a comment, a grant; rows `due_share` of them older
    than 7 days (ids correlated with time, as an insert-only table has them), and NULL times."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"""CREATE TABLE {TABLE} (
            id bigint PRIMARY KEY, "Device Id" text NOT NULL DEFAULT 'unknown', reading numeric CHECK (reading >= 0),
            created_at timestamptz)""")
        conn.exec_driver_sql(f'CREATE INDEX "readings by time" ON {TABLE} (created_at)')
        conn.exec_driver_sql(f"COMMENT ON TABLE {TABLE} IS 'meter readings'")
        conn.exec_driver_sql(f"GRANT SELECT ON {TABLE} TO PUBLIC")
        conn.exec_driver_sql("CREATE TABLE audit (n bigint)")
        conn.exec_driver_sql("CREATE FUNCTION count_insert() RETURNS trigger LANGUAGE plpgsql AS "
                             "$$ BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END $$")
        conn.exec_driver_sql(f"CREATE TRIGGER audit_insert AFTER INSERT ON {TABLE} FOR EACH ROW EXECUTE FUNCTION count_insert()")
        conn.execute(sa.text(f"""
            INSERT INTO {TABLE} (id, "Device Id", reading, created_at)
            SELECT g, 'dev-' || (g % 37), g % 1000,
                   CASE WHEN g % 97 = 0 THEN NULL
                        WHEN g <= :due THEN now() - interval '30 days' + make_interval(secs => g)
                        ELSE now() - interval '1 day' + make_interval(secs => g - :due) END
            FROM generate_series(1, :rows) g"""), {"rows": rows, "due": int(rows * due_share)})
        conn.exec_driver_sql("ANALYZE")


def rows(engine, where: str = "true") -> dict[int, tuple]:
    with engine.connect() as conn:
        return {r[0]: tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {TABLE} WHERE {where}"))}


KEPT = "created_at >= now() - interval '7 days' OR created_at IS NULL"


def policy(tmp_path, dbname, strategy="rebuild", archive="table", extra="", **kw):
    path = retention_policy(tmp_path, dbname, table="Sensor Readings", batch_size=500,
                            extra=f'strategy = "{strategy}"\narchive = "{archive}"\n{extra}', **kw)
    return path


@pytest.mark.parametrize("archive", ["table", "parquet", "none"])
def test_rebuild_keeps_every_row_the_rule_keeps_and_restore_puts_back_the_rest(tmp_path, pg, dbname, archive):
    load(pg)
    before, kept = rows(pg), rows(pg, KEPT)
    assert 600 < len(kept) < 700 and any(r[3] is None for r in kept.values())
    path = policy(tmp_path, dbname, archive=archive, archive_dir=str(tmp_path / "archive"))
    plan, report, target = purge(path)
    assert plan.steps[-1].walk == "rebuild"
    assert report.state == "finished" and report.rows == len(before) - len(kept) == plan.rows_selected
    assert rows(pg) == kept  # row for row, NULL times included
    verdict = verification(plan, service.verify(target, plan))
    assert verdict.passed, verdict.summary
    with pg.connect() as conn:
        backup = plan.steps[-1].spec["names"]["backup"]
        assert sa.inspect(conn).has_table(backup) == (archive == "table")
        # the swap carried the structure: index, trigger, check, default, comment, grant
        assert {ix["name"] for ix in sa.inspect(conn).get_indexes("Sensor Readings")} == {"readings by time"}
        assert conn.execute(sa.text("SELECT obj_description(to_regclass(:t), 'pg_class')"), {"t": TABLE}).scalar() == "meter readings"
        assert conn.execute(sa.text("SELECT has_table_privilege('public', to_regclass(:t), 'SELECT')"), {"t": TABLE}).scalar()
        audited = conn.execute(sa.text("SELECT count(*) FROM audit")).scalar()
    with pg.begin() as conn:
        conn.execute(sa.text(f'INSERT INTO {TABLE} (id, reading, created_at) VALUES (-1, 5, now())'))
        assert conn.execute(sa.text(f'SELECT "Device Id" FROM {TABLE} WHERE id = -1')).scalar() == "unknown"
        assert conn.execute(sa.text("SELECT count(*) FROM audit")).scalar() == audited + 1
        with pytest.raises(sa.exc.IntegrityError):
            with conn.begin_nested():
                conn.execute(sa.text(f"INSERT INTO {TABLE} (id, reading) VALUES (-2, -1)"))
        conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE id = -1"))
    ledger = Ledger(target.engine)
    assert ledger.ledger_rows(report.run_id) == report.rows
    restored = run_cli("restore", report.run_id, "--policy", path)
    if archive == "none":
        assert restored.returncode == 2 and "nothing to restore from" in restored.stderr, restored.stderr
        assert rows(pg) == kept
        return
    assert restored.returncode == 0, restored.stderr
    assert rows(pg) == before  # every removed row back, and nothing twice
    again = run_cli("restore", report.run_id, "--policy", path)
    assert rows(pg) == before, again.stderr


def test_writes_during_the_copy_are_replayed(tmp_path, pg, dbname):
    """Inserts, updates that make a due row stay (and a kept row due), and deletes, committed while
    the copy is half way, are all in the new table as they were committed."""
    load(pg)
    path = policy(tmp_path, dbname)
    _, target, plan = plan_and_gate(path)
    walker = _walker(target, plan)
    with target.engine.connect() as conn:
        for _ in range(5):  # into the copy, half way: it walks the kept rows 100 at a time
            if walker.stage == "copy" and walker.cursor.get("after"):
                break
            _one_batch(conn, walker, 100)
    assert walker.stage == "copy"
    with pg.begin() as conn:  # the writer, between two copy batches
        conn.execute(sa.text(f"INSERT INTO {TABLE} (id, reading, created_at) VALUES (100001, 1, now()), "
                             "(100002, 2, now() - interval '90 days')"))
        conn.execute(sa.text(f"UPDATE {TABLE} SET created_at = now() WHERE id = 10"))  # was due: now stays
        conn.execute(sa.text(f"UPDATE {TABLE} SET created_at = now() - interval '60 days' WHERE id = 5990"))  # now due
        conn.execute(sa.text(f"UPDATE {TABLE} SET reading = 999 WHERE id = 5980"))  # a kept row, changed
        conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE id = 5970"))  # a kept row, gone
        # a kept row the walk has copied, moved ahead of it: copied twice, left once by the replay
        conn.execute(sa.text(f"UPDATE {TABLE} SET created_at = now() + interval '1 hour', reading = 7 WHERE id = 5401"))
    expected = rows(pg, KEPT)
    with target.engine.connect() as conn:
        for _ in range(100):
            if walker.done:
                break
            _one_batch(conn, walker, 100)
    assert walker.done
    got = rows(pg)
    assert got == expected
    assert got[5401][2] == 7
    assert 10 in got and 5990 not in got and got[5980][2] == 999 and 5970 not in got and 100001 in got and 100002 not in got


def _walker(target, plan, cursor: dict | None = None):
    """The rebuild's walker, driven batch by batch as the executor drives it: the test decides
    where a writer's transaction falls, not a race against the clock."""
    from dbsweep.executor import RunOptions
    from dbsweep.kinds import kind_named
    from dbsweep.walkers import WalkContext

    with target.engine.connect() as conn:
        table = sa.Table("Sensor Readings", sa.MetaData(), autoload_with=conn)
    from dbsweep.dialects import dialect_for

    ctx = WalkContext(target.engine, dialect_for(target.engine), RunOptions(archive="table"))
    return kind_named("retention").walker(ctx, table, plan.steps[-1], cursor or {})


def _one_batch(conn, walker, size: int = 1000) -> None:
    walker.sink.begin_batch("test", 1)
    with conn.begin():
        rows, cursor = walker.batch(conn, size)
    walker.advance(cursor if cursor is not None else {}, rows, size)


def _walk_to_the_end(conn, walker, size: int = 100) -> tuple[int, set[str]]:
    """The rows the walker's batches removed, and the stages whose cursor carried a census."""
    removed, censused = 0, set()
    for _ in range(200):
        if walker.done:
            return removed, censused
        walker.sink.begin_batch("test", 1)
        with conn.begin():
            rows_, cursor = walker.batch(conn, size)
        if cursor and "census" in cursor:
            censused.add(cursor["stage"])
        walker.advance(cursor if cursor is not None else {}, rows_, size)
        removed += rows_
    raise AssertionError("the walk did not end")


def _backup_rows(engine, walker) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f'SELECT count(*) FROM "{walker.names.backup}"')).scalar()


def _writes(conn, ids: list[int], due: list[int], gone: list[int]) -> None:
    """Inserts of kept rows `ids`, of due rows `due`, and deletes of rows `gone`."""
    for i in ids + due:
        when = "now()" if i in ids else "now() - interval '90 days'"
        conn.execute(sa.text(f"INSERT INTO {TABLE} (id, reading, created_at) VALUES (:i, 1, {when})"), {"i": i})
    for i in gone:
        conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE id = :i"), {"i": i})


def test_the_rows_removed_are_counted_while_the_copy_runs_whenever_writers_commit(tmp_path, pg, dbname):
    """The old table is counted under a snapshot while the copy runs, and the changes that snapshot
    did not see are added as the replays take them: writes committed before it (counted once, not
    twice), a transaction still open when it was taken (added at its commit), writes during the
    copy and the catch-up. The rows removed equal the backup's count less the new table's."""
    load(pg)
    path = policy(tmp_path, dbname)
    _, target, plan = plan_and_gate(path)
    walker = _walker(target, plan)
    with target.engine.connect() as conn, pg.connect() as open_writer:
        walker.sink.begin_batch("test", 1)
        with conn.begin():
            rows_, cursor = walker.batch(conn, 100)  # prepare: the shadow, the log and its trigger
        assert walker.stage == "prepare" and cursor["stage"] == "copy"
        still_open = open_writer.begin()
        _writes(open_writer, [200011, 200012], [200013], [6000])  # open while the census counts
        with pg.begin() as before_census:  # logged, and seen by the census: counted once
            _writes(before_census, [200001, 200002], [200003], [5])
        walker.advance(cursor, rows_, 100)
        open_xid = open_writer.execute(sa.text("SELECT pg_current_xact_id()::text")).scalar()
        # counted with the open transaction in progress (a later one committed: xid below the snapshot's xmax)
        assert open_xid in walker.counting.result()["snapshot"].split(":")[2].split(",")
        still_open.commit()
        for _ in range(3):
            _one_batch(conn, walker, 100)
        assert walker.stage == "copy"
        with pg.begin() as during_copy:
            _writes(during_copy, [200021], [200022, 200023], [6001, 7])
        expected = rows(pg, KEPT)  # the old table, every write in: what the new one must hold
        removed, censused = _walk_to_the_end(conn, walker)
    assert {"build", "catchup", "swap", "count"} <= censused  # each names the stage after the batch
    assert rows(pg) == expected
    assert removed == _backup_rows(pg, walker) - len(expected)
    assert {200001, 200002, 200011, 200012, 200021} <= set(rows(pg)) and not {5, 6000, 6001, 7} & set(rows(pg))


def test_a_resumed_rebuild_without_its_census_counts_the_backup(tmp_path, pg, dbname):
    """The process that prepared the rebuild stopped before its census came back: the next one
    finds none in the cursor and counts the backup, exact all the same."""
    load(pg)
    path = policy(tmp_path, dbname)
    _, target, plan = plan_and_gate(path)
    first = _walker(target, plan)
    with target.engine.connect() as conn:
        _one_batch(conn, first, 100)
        _one_batch(conn, first, 100)
        first.close()  # the census cancelled (or done): nothing of it reaches the cursor
        assert first.stage == "copy" and "census" not in first.cursor
        again = _walker(target, plan, first.cursor)
        with pg.begin() as writer:
            _writes(writer, [200001], [200002], [6000])
        expected = rows(pg, KEPT)
        removed, censused = _walk_to_the_end(conn, again)
    assert not censused
    assert rows(pg) == expected and removed == _backup_rows(pg, again) - len(expected)
    with pg.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_current_snapshot%' "
                                    "AND pid <> pg_backend_pid()")).scalar() == 0


@pytest.mark.parametrize("cursor, refusal", [
    ({"census": {"snapshot": "12:10:", "rows": 5, "delta": 0}}, "census snapshot whose xmin passes its xmax"),
    ({"census": {"snapshot": "1:2:; DROP TABLE x", "rows": 5, "delta": 0}}, "has a census that is not"),
    ({"census": {"snapshot": "1:2:", "rows": -1, "delta": 0}}, "has a census that is not"),
    ({"census": {"snapshot": "1:2:", "rows": True, "delta": 0}}, "has a census that is not"),
    ({"census": {"snapshot": "1:2:", "rows": 5}}, "has a census that is not"),
    ({"census": "5"}, "has a census that is not"),
    ({"kept": "many"}, "counts 'many' rows kept"),
])
def test_a_census_or_kept_count_read_back_from_the_ledger_is_checked(tmp_path, pg, dbname, cursor, refusal):
    from dbsweep.errors import BadInput

    load(pg, rows=200)
    _, target, plan = plan_and_gate(policy(tmp_path, dbname))
    with pytest.raises(BadInput, match=f"ledger cursor of '.*Sensor Readings' .*{refusal}"):
        _walker(target, plan, {"stage": "count", "kept": 3, **cursor})


def test_auto_chooses_by_the_share_due_and_what_blocks_a_swap(tmp_path, pg, dbname):
    load(pg, due_share=0.5)
    path = policy(tmp_path, dbname, strategy="auto")
    _, _, plan = plan_and_gate(path)
    assert plan.steps[-1].walk == "key" and "rebuild above 70%" in plan.profile[0]["why"]
    with pg.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM {TABLE} WHERE id BETWEEN 3001 AND 5700")  # now about 90% due
    _, _, plan = plan_and_gate(path)
    assert plan.steps[-1].walk == "rebuild" and "copying the" in plan.profile[0]["why"], plan.profile[0]["why"]
    with pg.begin() as conn:  # a foreign key into the table: a swap cannot carry it
        conn.exec_driver_sql(f"CREATE TABLE notes (id int PRIMARY KEY, reading_id bigint REFERENCES {TABLE} (id))")
    _, _, plan = plan_and_gate(path)
    assert plan.steps[-1].walk == "key" and "foreign key notes_reading_id_fkey" in plan.profile[0]["why"]
    before = checksums(pg)
    forced = run_cli("plan", policy(tmp_path, dbname, strategy="rebuild"))
    assert forced.returncode == 2 and "key 'strategy'" in forced.stderr and len(forced.stderr.strip().splitlines()) == 1
    assert checksums(pg) == before


def test_keep_backup_drops_the_backup_as_a_later_plan_step(tmp_path, pg, dbname):
    from datetime import timedelta

    from expectations.runner import gate

    load(pg)
    path = policy(tmp_path, dbname, strategy="auto", extra='keep_backup = "2 days"')
    plan, report, target = purge(path)
    backup = plan.steps[-1].spec["names"]["backup"]
    policy_ = plan_and_gate(path)[0]
    soon = service.make_plan(policy_, "purge", target, now=plan.created_at + timedelta(days=1))
    assert [s.walk for s in soon.steps] == ["key"] and f"keep {backup}" in soon.profile[0]["backups"]
    later = service.make_plan(policy_, "purge", target, now=plan.created_at + timedelta(days=2, minutes=2))
    service.record_gate(target, later, gate(later))
    assert [s.walk for s in later.steps][0] == "drop_backup" and f"drop {backup}" in later.profile[0]["backups"]
    assert later.gate.passed, later.gate.summary
    kept = rows(pg)
    done = service.apply(policy_, target, later, dry_run=False)
    assert done.state == "finished"
    with pg.connect() as conn:
        assert not sa.inspect(conn).has_table(backup)
    assert set(rows(pg)) <= set(kept)
    refused = run_cli("restore", report.run_id, "--policy", path)
    assert refused.returncode == 2 and "is gone" in refused.stderr, refused.stderr
    record = [json.loads(b.archive) for b in Ledger(target.engine).archived_batches(done.run_id) if b.archive.startswith("{")]
    assert {"dropped_backup": backup, "undoable": False} in record


def _backup_name(engine) -> str | None:
    """The rebuild's backup, as the run named it (the CLI plans for itself: its minute may differ)."""
    with engine.connect() as conn:
        found = [t for t in sa.inspect(conn).get_table_names() if t.startswith("Sensor Readings__retention_2")]
    return found[0] if found else None


def test_sigkills_in_the_copy_the_swap_and_the_export_then_resume(tmp_path, pg, dbname):

    from tests.test_dedupe_faults import _start_phase, kill_inside_the_swap
    from tests.test_faults import _kill_after

    load(pg)
    before, kept = rows(pg), rows(pg, KEPT)
    path = policy(tmp_path, dbname, archive="parquet", extra="sleep_ms = 20", archive_dir=str(tmp_path / "archive"))
    path.write_text(path.read_text().replace('name = "purge"', 'name = "dedupe"'))  # the phase _start_phase runs
    _, target, plan = plan_and_gate(path, "dedupe")
    names = plan.steps[-1].spec["names"]
    # 1: killed while copying: the table is untouched, its trigger logs what writers do
    proc = _start_phase(path)
    _kill_after(pg, proc, more_batches=4, jitter_s=0.01)
    assert rows(pg) == before
    # 2: killed inside the swap (its last statement waits on a lock this test holds): all rolled back
    kill_inside_the_swap(pg, path, names["log"])
    assert rows(pg) == before and _backup_name(pg) is None
    # 3: killed while the removed rows go to Parquet: the new table is in place, the rest still in the backup
    proc = _start_phase(path)
    _kill_after(pg, proc, more_batches=4, jitter_s=0.01)
    assert rows(pg) == kept
    with pg.connect() as conn:
        left = conn.execute(sa.text(f'SELECT count(*) FROM "{_backup_name(pg)}"')).scalar()
    assert len(kept) < left < len(before)  # the export had begun and not finished
    done = run_cli("run", path, "--phase", "dedupe")
    assert done.returncode == 0, done.stderr
    assert rows(pg) == kept and _backup_name(pg) is None
    with pg.connect() as conn:
        rows_done, recorded = conn.execute(sa.text(
            "SELECT r.rows_done, (SELECT sum(rows) FROM dbsweep.batches b WHERE b.run_id = r.run_id) FROM dbsweep.runs r")).one()
    assert rows_done == recorded == len(before) - len(kept)
    run_id = Ledger(target.engine).list_runs("testpol")[0].run_id
    restored = run_cli("restore", run_id, "--policy", path)
    assert restored.returncode == 0, restored.stderr
    assert rows(pg) == before


def test_rebuild_through_the_dagster_graph_then_its_restore_job(tmp_path, pg, dbname):
    """Profile → blocking gate → apply (a rebuild) → verified, then the restore job puts back the
    removed rows from the backup."""
    import dagster as dg

    from tests.test_dagster import _defs, _materialize

    load(pg)
    before, kept = rows(pg), rows(pg, KEPT)
    policy(tmp_path, dbname, strategy="auto")
    defs = _defs(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(defs, dg.AssetSelection.groups("testpol_purge"), instance,
                          run_config={"ops": {"testpol__purge__apply": {"config": {"dry_run": False}}}})
    assert result.success and rows(pg) == kept
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"gate": True, "postconditions": True}
    run_id = result.asset_materializations_for_node("testpol__purge__apply")[0].metadata["run_id"].value
    restored = defs.resolve_job_def("testpol__restore").execute_in_process(instance=instance, run_config={
        "ops": {"testpol__restore_run": {"config": {"run_id": run_id}}}})
    assert restored.success and rows(pg) == before


def test_rows_out_of_time_order_are_copied_along_the_key(tmp_path, pg, dbname):
    """Times shuffled against the rows' order: the copy walks the key (the time index would read
    the table page by random page), and keeps exactly the same rows, a `where` too."""
    with pg.begin() as conn:
        conn.exec_driver_sql(f"""CREATE TABLE {TABLE} (id bigint PRIMARY KEY, "Device Id" text, reading numeric,
                                 created_at timestamptz)""")
        conn.exec_driver_sql(f"CREATE INDEX ON {TABLE} (created_at)")
        conn.exec_driver_sql(f"""INSERT INTO {TABLE} SELECT g, 'dev-' || mod(g, 5), mod(g, 100),
                                 CASE WHEN mod(g, 89) = 0 THEN NULL WHEN mod(hashtext(g::text), 10) <> 0
                                 THEN now() - interval '30 days' ELSE now() END FROM generate_series(1, 5000) g""")
        conn.exec_driver_sql("ANALYZE")
    kept = rows(pg, KEPT + " OR \"Device Id\" = 'dev-0'")
    path = policy(tmp_path, dbname, extra="where = \"\\\"Device Id\\\" <> 'dev-0'\"")
    plan, report, _ = purge(path)
    assert plan.steps[-1].walk == "rebuild" and plan.steps[-1].spec["copy_walk"] == "key"
    assert rows(pg) == kept and report.rows == 5000 - len(kept)


def test_the_time_walk_copies_rows_sharing_one_time_once_whatever_the_batch(tmp_path, pg, dbname):
    """Kept rows in runs of one timestamp far longer than a batch (a bulk load stamps thousands
    alike): each time window takes every row of its last time, so none is copied twice or left."""
    with pg.begin() as conn:
        conn.exec_driver_sql(f"""CREATE TABLE {TABLE} (id bigint PRIMARY KEY, "Device Id" text, reading numeric,
                                 created_at timestamptz)""")
        conn.exec_driver_sql(f"CREATE INDEX ON {TABLE} (created_at)")
        conn.exec_driver_sql(f"""INSERT INTO {TABLE} SELECT g, 'dev-' || mod(g, 5), mod(g, 100),
                                 CASE WHEN g <= 4000 THEN timestamptz '2020-01-01' + make_interval(secs => g)
                                      WHEN mod(g, 101) = 0 THEN NULL
                                      ELSE date_trunc('day', now()) - make_interval(days => (9000 - g) / 1500)
                                 END FROM generate_series(1, 9000) g""")
        conn.exec_driver_sql("ANALYZE")
    kept = rows(pg, KEPT)
    path = policy(tmp_path, dbname, archive="none")
    plan, report, _ = purge(path)
    assert plan.steps[-1].spec["copy_walk"] == "time"
    assert rows(pg) == kept and report.rows == 9000 - len(kept) == 4000
    with pg.connect() as conn:
        copies = [json.loads(c) for c in conn.execute(sa.text(
            "SELECT cursor FROM dbsweep.batches WHERE cursor LIKE '%\"stage\": \"copy\"%' ORDER BY batch_no")).scalars()]
    ends = [c["after"][0] for c in copies if c.get("after")]  # the batch that enters the stage has none
    assert len(ends) >= 3 and len(set(ends)) == len(ends)  # each window ended on a time of its own


@pytest.mark.parametrize("archive", ["parquet", "table"])
def test_sigkills_at_random_batches_of_every_stage_then_resume(tmp_path, pg, dbname, archive):
    """Killed again and again, each time a few batches on (so each kill lands in another stage),
    until a run finishes: the kept rows exact, the ledger equal to the rows gone (as the Parquet
    export wrote them, or as the census and the replays counted them across the restarts), the
    archive whole (restore brings every row back)."""
    import random

    from tests.test_dedupe_faults import _start_phase
    from tests.test_faults import _kill_after

    load(pg)
    before, kept = rows(pg), rows(pg, KEPT)
    path = policy(tmp_path, dbname, archive=archive, extra="sleep_ms = 15", archive_dir=str(tmp_path / "archive"))
    path.write_text(path.read_text().replace('name = "purge"', 'name = "dedupe"'))
    plan_and_gate(path, "dedupe")
    rng, kills = random.Random(31), 0
    while kills < 8:
        proc = _start_phase(path)
        try:
            _kill_after(pg, proc, more_batches=rng.randint(1, 4), jitter_s=rng.uniform(0, 0.03))
        except AssertionError:  # the run ended before the kill: nothing left to kill
            proc.wait()
            break
        kills += 1
        assert set(rows(pg)) in (set(before), set(kept))  # the old table whole, or the new one: never between
    done = run_cli("run", path, "--phase", "dedupe")
    assert done.returncode == 0, done.stderr
    assert kills >= 4 and rows(pg) == kept
    with pg.connect() as conn:
        runs = conn.execute(sa.text(
            "SELECT r.rows_done, coalesce((SELECT sum(rows) FROM dbsweep.batches b WHERE b.run_id = r.run_id), 0) "
            "FROM dbsweep.runs r ORDER BY r.started_at")).all()
    # the killed run, resumed to its end; a run after it (when the last kill came too late) found nothing
    assert tuple(runs[0]) == (len(before) - len(kept),) * 2 and all(tuple(r) == (0, 0) for r in runs[1:])
    run_id = Ledger(pg).list_runs("testpol")[-1].run_id
    assert run_cli("restore", run_id, "--policy", path).returncode == 0
    assert rows(pg) == before
