"""Nothing dbsweep reads back from its ledger is trusted: a plan body, a cursor, a batch row or a
journal row edited outside dbsweep is refused (exit 3) with every table, relation, constraint and
index as it was; a run whose cursor cannot be read can still be abandoned."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import checksums, load_events, retention_policy, run_cli, write_policy
from test_inbound_keys import _relations
from test_merge import policy as folders_policy

from dbsweep.demo import folders


def _state(engine) -> tuple:
    return checksums(engine), _relations(engine)


def _ledger(engine, sql: str, **params) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def _run_id(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT run_id FROM dbsweep.runs WHERE state <> 'refused' "
                                    "ORDER BY started_at DESC LIMIT 1")).scalar()


def test_a_plan_body_edited_after_its_run_is_refused_by_restore(tmp_path, dbname, pg):
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE victim (id int PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO victim SELECT generate_series(1, 100)")
        conn.exec_driver_sql("CREATE TABLE items (id bigserial PRIMARY KEY, k int, at timestamptz NOT NULL)")
        conn.exec_driver_sql("INSERT INTO items (k, at) SELECT mod(g, 10), now() - make_interval(secs => g) "
                             "FROM generate_series(1, 1000) g")
    path = write_policy(tmp_path, """
        [[phase]]
        name = "dd"
        kind = "dedupe"
        [[phase.tables]]
        table = "items"
        natural_key = ["k"]
        keep = "oldest"
        time_column = "at"
        strategy = "rebuild"
    """, dbname)
    assert run_cli("run", path).returncode == 0
    run_id = _run_id(pg)
    _ledger(pg, "UPDATE dbsweep.plans SET body = replace(body, 'items__dedupe_2', 'victim') ")
    _ledger(pg, "UPDATE dbsweep.plans SET body = replace(body, '\"shadow\":\"items__dedupe_new\"', '\"shadow\":\"victim\"')")
    before = _state(pg)
    result = run_cli("restore", run_id, "--policy", path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "changed after its gate ran" in result.stderr, result.stderr
    assert _state(pg) == before


def test_edited_or_unreadable_cursors_are_refused_and_the_run_can_be_abandoned(tmp_path, dbname, pg):
    load_events(pg, old=2000, new=500)
    path = retention_policy(tmp_path, dbname, batch_size=200)
    assert run_cli("run", path, "--max-rows", "400").returncode == 4  # stopped, resumable
    run_id = _run_id(pg)
    for cursor in ('{"step": 99}', '{"step": 0, "after": [99999999]}', "not json"):
        _ledger(pg, "UPDATE dbsweep.runs SET cursor = :c WHERE run_id = :r", c=cursor, r=run_id)
        before = _state(pg)
        result = run_cli("run", path)
        assert result.returncode == 3, (cursor, result.stdout + result.stderr)
        assert "the ledger's cursor cannot be trusted" in result.stderr and "dbsweep abandon" in result.stderr
        assert _state(pg) == before
    for verb in (("status", path), ("stats", path)):
        shown = run_cli(*verb)
        assert shown.returncode == 0, shown.stdout + shown.stderr
    given_up = run_cli("abandon", run_id, "--policy", path)
    assert given_up.returncode == 0, given_up.stderr
    again = run_cli("run", path)  # a fresh plan and run
    assert again.returncode == 0, again.stderr


def test_an_edited_batch_row_is_refused_by_restore(tmp_path, dbname, pg):
    load_events(pg, old=1000, new=500)
    path = retention_policy(tmp_path, dbname, batch_size=300, extra='archive = "table"')
    assert run_cli("run", path).returncode == 0
    run_id = _run_id(pg)
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE decoy (LIKE events)")
    _ledger(pg, "UPDATE dbsweep.batches SET archive = 'public.decoy' WHERE batch_no = 1")
    before = _state(pg)
    result = run_cli("restore", run_id, "--policy", path)
    assert result.returncode == 3 and "not as dbsweep recorded them" in result.stderr, result.stdout + result.stderr
    assert _state(pg) == before


def test_an_edited_merge_journal_row_is_refused_by_restore(tmp_path, dbname, pg):
    folders.create(pg, scale=0.05)
    path = folders_policy(tmp_path, dbname)
    assert run_cli("run", path, "--phase", "root_folders").returncode == 0
    run_id = _run_id(pg)
    _ledger(pg, "UPDATE folders__merge_journal SET key = jsonb_build_object('id', 1) "
                "WHERE id = (SELECT min(id) FROM folders__merge_journal WHERE action = 'repoint')")
    before = _state(pg)
    result = run_cli("restore", run_id, "--policy", path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "are not as dbsweep recorded them" in result.stderr
    assert _state(pg) == before
    with pg.connect() as conn:
        assert conn.execute(sa.text("SELECT state FROM dbsweep.runs WHERE run_id = :r"), {"r": run_id}).scalar() == "finished"
