"""Dedupe under faults on the embedded PostgreSQL: SIGKILLs mid-run and inside the swap, then
resume; a concurrent writer (the ETL that does not stop) all through both strategies."""

from __future__ import annotations

import random
import threading
import time

import pytest
import sqlalchemy as sa

from dbsweep.ledger import Ledger
from tests.conftest import run_cli
from tests.helpers import plan_and_gate
from tests.test_dedupe import TABLE, expected_survivors, load, policy_for, rows_by_id
from tests.test_faults import _kill_after, _wait_for_orphaned_backends


def _archived(engine) -> set[int]:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("Task Requirements__archive"):
            return set()
        return set(conn.execute(sa.text(f'SELECT id FROM {TABLE[:-1]}__archive"')).scalars())


def _ledger_rows(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT r.rows_done, (SELECT coalesce(sum(rows), 0) FROM dbsweep.batches b WHERE b.run_id = r.run_id) "
            "FROM dbsweep.runs r")).one()


def test_sigkills_of_in_place_then_resume(tmp_path, pg, dbname):
    load(pg, keys=1500, copies=12)
    original, survivors = set(rows_by_id(pg)), expected_survivors(pg)
    path = policy_for(tmp_path, dbname, "in_place", extra="sleep_ms = 10", batch_size=150)
    plan_and_gate(path, "dedupe")
    rng = random.Random(3)
    for kill in range(3):
        proc = _start_phase(path)
        _kill_after(pg, proc, more_batches=3 + 4 * kill, jitter_s=rng.uniform(0, 0.02))
        now, archived = set(rows_by_id(pg)), _archived(pg)
        assert now | archived == original and not now & archived  # nothing lost, nothing kept twice
        assert survivors <= now
        rows_done, ledger_sum = _ledger_rows(pg)
        assert rows_done == ledger_sum == len(archived)  # the ledger equals the rows gone
    assert len(rows_by_id(pg)) > len(survivors)  # the kills left work to do
    done = run_cli("run", path, "--phase", "dedupe")
    assert done.returncode == 0, done.stderr
    assert set(rows_by_id(pg)) == survivors and _archived(pg) == original - survivors
    runs = Ledger(pg).list_runs("testpol")
    assert len(runs) == 1 and runs[0].state == "finished"


def _start_phase(path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    return subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "run", str(path), "--phase", "dedupe"], cwd=ROOT,
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_copy_and_inside_the_swap_then_resume(tmp_path, pg, dbname):
    load(pg, keys=3000, copies=6)
    before = rows_by_id(pg)
    survivors = expected_survivors(pg)
    path = policy_for(tmp_path, dbname, "rebuild", extra="sleep_ms = 20", batch_size=100)
    _, _, plan = plan_and_gate(path, "dedupe")
    log = plan.steps[0].spec["names"]["log"]
    # 1: killed while copying; the original table is untouched, its trigger logs what writers do
    proc = _start_phase(path)
    _kill_after(pg, proc, more_batches=5, jitter_s=0.01)
    assert rows_by_id(pg) == before
    # 2: killed inside the swap: the renames are done, the last statement (dropping the log) waits
    # on a lock this test holds; the kill rolls the whole swap back
    kill_inside_the_swap(pg, path, log)
    assert rows_by_id(pg) == before  # the old table, whole, under its name: never neither
    with pg.connect() as conn:
        assert not sa.inspect(conn).has_table(plan.steps[0].spec["names"]["backup"])
    done = run_cli("run", path, "--phase", "dedupe")
    assert done.returncode == 0, done.stderr
    after = rows_by_id(pg)
    assert set(after) == survivors and all(after[i] == before[i] for i in survivors)
    rows_done, ledger_sum = _ledger_rows(pg)
    assert rows_done == ledger_sum == len(before) - len(survivors)


def kill_inside_the_swap(pg, path, log: str) -> None:
    """Run the phase until its swap's last statement (dropping the rebuild's log) waits on a lock
    this test holds, SIGKILL it there, and wait for its session to end: the swap rolls back whole."""
    holder = pg.connect()
    holder.exec_driver_sql(f'LOCK TABLE "{log}" IN ACCESS SHARE MODE')
    proc = _start_phase(path)
    deadline = time.monotonic() + 120
    with pg.connect() as conn:
        while not conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DROP TABLE%'")
                ).scalar():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached the swap"
            conn.rollback()
            time.sleep(0.02)
    proc.kill()
    proc.wait()
    holder.rollback()  # the killed session never sent its COMMIT: whatever it does next, it cannot commit
    holder.close()
    _wait_for_orphaned_backends(pg)


class EtlWriter(threading.Thread):
    """The ETL that does not stop: new keys, duplicates of existing keys, updates and deletes, one
    transaction each on its own connection."""

    def __init__(self, engine):
        super().__init__(daemon=True)
        self.engine, self.stop = engine, threading.Event()
        self.inserted, self.deleted, self.errors, self.longest_s, self.commits = {}, set(), [], 0.0, 0

    def run(self):
        rng = random.Random(11)
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SET lock_timeout = '1s'")  # a wait of a second on dbsweep's locks fails (55P03)
            conn.commit()
            while not self.stop.is_set():
                began = time.perf_counter()
                choice = rng.random()
                try:
                    if choice < 0.4:  # a duplicate of a key that has a kept row
                        key = (rng.randint(1, 500), f"r{rng.randint(0, 6)}")
                        self._insert(conn, key)
                    elif choice < 0.6:  # a new key
                        self._insert(conn, (50_000 + len(self.inserted), "etl"))
                    elif choice < 0.85:
                        conn.execute(sa.text(f"UPDATE {TABLE} SET payload = 'touched' WHERE id = :i"),
                                     {"i": rng.randint(1, 4000)})
                    elif self.inserted:
                        victim = rng.choice(sorted(set(self.inserted) - self.deleted) or [0])
                        conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE id = :i"), {"i": victim})
                        self.deleted.add(victim)
                    conn.commit()
                    self.commits += 1
                except sa.exc.DBAPIError as exc:
                    conn.rollback()
                    self.errors.append(getattr(exc.orig, "sqlstate", None) or str(exc.orig))
                self.longest_s = max(self.longest_s, time.perf_counter() - began)
                time.sleep(0.002)

    def _insert(self, conn, key):
        new_id = conn.execute(sa.text(f"""INSERT INTO {TABLE} ("Task PK", requirement_id, created_at)
                                         VALUES (:k, :r, clock_timestamp()) RETURNING id"""),
                              {"k": key[0], "r": key[1]}).scalar()
        self.inserted[new_id] = key


@pytest.mark.parametrize("strategy", ["in_place", "rebuild"])
def test_concurrent_writer_through_the_whole_dedupe(tmp_path, pg, dbname, strategy):
    from dbsweep import service
    from expectations.runner import verification

    load(pg, keys=500, copies=16)
    path = policy_for(tmp_path, dbname, strategy, extra="sleep_ms = 5", batch_size=200)
    policy, target, plan = plan_and_gate(path, "dedupe")
    writer = EtlWriter(pg)
    writer.start()
    time.sleep(0.3)
    started = writer.commits
    report = service.apply(policy, target, plan, dry_run=False)
    during = writer.commits - started
    time.sleep(0.3)  # after the run: its duplicates now fail at the database
    writer.stop.set()
    writer.join(10)
    assert report.state == "finished" and during > 20
    # only the unique violations the constraint causes: no lock wait of a second (55P03), whatever the machine's speed
    assert set(writer.errors) <= {"23505"}, writer.errors
    assert "23505" in writer.errors
    verdict = verification(plan, service.verify(target, plan))
    assert verdict.passed, verdict.summary
    now = rows_by_id(pg)
    with pg.connect() as conn:
        for new_id, key in writer.inserted.items():  # every row the writer committed is there, or the rule removed it
            if new_id in now or new_id in writer.deleted:
                continue
            earlier = conn.execute(sa.text(f"""SELECT count(*) FROM {TABLE} WHERE "Task PK" = :k AND requirement_id = :r
                                               AND id <> :i"""), {"k": key[0], "r": key[1], "i": new_id}).scalar()
            assert earlier == 1, (new_id, key)


def test_a_duplicate_past_the_guard_fails_the_build_which_is_cleaned_up_and_retried(tmp_path, pg, dbname):
    """A duplicate the guard cannot see (a session with triggers off moves an already visited row
    onto a kept key) makes the concurrent build fail: its invalid index is dropped, the whole table
    swept again, and the second build holds."""
    load(pg, keys=400, copies=5)
    path = policy_for(tmp_path, dbname, "in_place")
    policy, target, plan = plan_and_gate(path, "dedupe")
    constraint = plan.steps[0].spec["constraint"]
    moved = {}

    def sneak_in():
        deadline = time.monotonic() + 60
        with pg.connect() as conn:
            while not conn.execute(sa.text("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%dedupe_guard'")).scalar():
                assert time.monotonic() < deadline
                conn.rollback()
                time.sleep(0.001)
            conn.exec_driver_sql("SET session_replication_role = replica")  # no triggers: the guard is skipped
            moved["id"] = conn.execute(sa.text(f"""
                UPDATE {TABLE} SET "Task PK" = 1, requirement_id = 'r1', created_at = now()
                WHERE id = (SELECT min(id) FROM {TABLE} WHERE "Task PK" = 2) RETURNING id""")).scalar()
            conn.commit()

    from dbsweep import service

    thread = threading.Thread(target=sneak_in)
    thread.start()
    report = service.apply(policy, target, plan, dry_run=False)
    thread.join()
    assert report.state == "finished" and moved["id"]
    with pg.connect() as conn:
        cursors = [r[0] for r in conn.execute(sa.text("SELECT cursor FROM dbsweep.batches ORDER BY batch_no"))]
        assert any('"attempt": 2' in c for c in cursors), cursors  # the build failed once, the sweep ran
        assert conn.execute(sa.text("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                    "WHERE NOT i.indisvalid")).scalar() == 0
        assert conn.execute(sa.text(f"""SELECT count(*) FROM {TABLE} WHERE "Task PK" = 1 AND requirement_id = 'r1'""")
                            ).scalar() == 1
        assert conn.execute(sa.text(f"SELECT count(*) FROM {TABLE} WHERE id = :i"), {"i": moved["id"]}).scalar() == 0  # the newer went
        assert conn.execute(sa.text("SELECT count(*) FROM pg_constraint WHERE conname = :n"), {"n": constraint}).scalar() == 1


def test_a_staged_walk_refuses_a_ledger_cursor_naming_a_stage_it_does_not_have():
    """The cursor is read back from the ledger: a stage not among the walker's own is refused
    before any method is looked up by its name."""
    import pytest

    from dbsweep.errors import BadInput
    from dbsweep.plan import Step
    from dbsweep.walkers import StagedWalker

    class TwoStages(StagedWalker):
        stages = ("copy", "swap")

    step = Step(table="public.t", walk="rebuild", key=["id"], rows_selected=1, batch_size=10, spec={})
    assert TwoStages(None, None, step, None, {"stage": "swap"}).stage == "swap"
    with pytest.raises(BadInput, match="names stage 'prepare', not one of copy, swap"):
        TwoStages(None, None, step, None, {"stage": "prepare"})


def test_a_row_a_writer_moves_ahead_of_the_copy_is_left_once(tmp_path, pg, dbname):
    """The loose index scan copied a key's kept row; a writer then gives that row a natural key the
    walk has not reached, where it is the only row, so the walk copies it again: the settle replay
    before the shadow gets its primary key leaves it once (without it, the key's build fails)."""
    from dbsweep.dialects import dialect_for
    from dbsweep.executor import RunOptions
    from dbsweep.kinds import kind_named
    from dbsweep.walkers import WalkContext

    load(pg, keys=300, copies=4, singles=0)
    _, target, plan = plan_and_gate(policy_for(tmp_path, dbname, "rebuild"), "dedupe")
    with pg.connect() as conn:
        table = sa.Table("Task Requirements", sa.MetaData(), autoload_with=conn)
        first = conn.execute(sa.text(f"""SELECT id FROM {TABLE} WHERE "Task PK" = 1 ORDER BY created_at, id LIMIT 1""")).scalar()
    walker = kind_named("dedupe").walker(WalkContext(target.engine, dialect_for(target.engine), RunOptions()),
                                         table, plan.steps[0], {})

    def one(conn, size):
        walker.sink.begin_batch("test", 1)
        with conn.begin():
            rows, cursor = walker.batch(conn, size)
        walker.advance(cursor if cursor is not None else {}, rows, size)

    with target.engine.connect() as conn:
        for _ in range(5):
            if walker.stage == "copy" and walker.cursor.get("after"):
                break
            one(conn, 20)
        assert walker.stage == "copy"
        with pg.begin() as writer:  # key (1, 'r1') was copied; (99999, 'moved') lies ahead of the walk
            writer.execute(sa.text(f"""UPDATE {TABLE} SET "Task PK" = 99999, requirement_id = 'moved' WHERE id = :i"""),
                           {"i": first})
        for _ in range(200):
            if walker.done:
                break
            one(conn, 20)
    assert walker.done
    with pg.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {TABLE} WHERE id = :i"), {"i": first}).scalar() == 1
        assert conn.execute(sa.text(f"""SELECT "Task PK" FROM {TABLE} WHERE id = :i"""), {"i": first}).scalar() == 99999
