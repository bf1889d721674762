"""SQLite (local work) runs the same engine; the engine never imports Dagster or GE."""

import subprocess
import sys

import sqlalchemy as sa

from tests.conftest import RETENTION, ROOT, run_cli, write_policy
from tests.helpers import purge


def _sqlite_events(path, with_key: bool):
    engine = sa.create_engine(f"sqlite:///{path}")
    pk = "INTEGER PRIMARY KEY" if with_key else "INTEGER"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE events (id {pk}, created_at DATETIME NOT NULL)")
        for i in range(1, 3001):
            days = 10 + (i * 7919) % 20 if i % 3 else (i * 31) % 6
            conn.exec_driver_sql(f"INSERT INTO events VALUES ({i}, datetime('now', '-{days} days'))")
    return engine


def _ids(engine):
    with engine.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql("SELECT id FROM events")}


def test_sqlite_retention_with_key_and_with_rowid(tmp_path):
    for with_key in (True, False):
        db = tmp_path / f"local_{with_key}.db"
        engine = _sqlite_events(db, with_key)
        keep = {i for i in range(1, 3001) if i % 3 == 0}
        policy = write_policy(tmp_path, RETENTION.format(table="events", batch_size=250, extra=""), "unused",
                              env_block=f'env.dev = {{ url = "sqlite:///{db}" }}')
        plan, report, _ = purge(policy)
        assert plan.steps[0].key == (["id"] if with_key else ["rowid"])
        assert _ids(engine) == keep and report.rows == 2000
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT sum(rows) FROM dbsweep_batches").scalar() == 2000


def test_walk_blocks_on_sqlite_is_bad_input_and_changes_nothing(tmp_path):
    db = tmp_path / "local.db"
    engine = _sqlite_events(db, with_key=True)
    policy = write_policy(tmp_path, RETENTION.format(table="events", batch_size=250, extra='walk = "blocks"'),
                          "unused", env_block=f'env.dev = {{ url = "sqlite:///{db}" }}')
    result = run_cli("run", policy, "--phase", "purge")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'walk = "blocks"' in lines[0] and "needs PostgreSQL" in lines[0]
    assert len(_ids(engine)) == 3000


def test_a_kind_that_cannot_run_on_sqlite_is_refused_before_planning(tmp_path):
    """Merge keeps its journal as jsonb: on SQLite its phase is refused in one line naming the
    file and the phase, exit 2, nothing planned and the table unchanged."""
    db = tmp_path / "local.db"
    engine = _sqlite_events(db, with_key=True)
    body = '[[phase]]\nname = "folders"\nkind = "merge"\ntable = "events"\ngroup_by = ["created_at"]\nsurvivor = "lowest_key"\n'
    policy = write_policy(tmp_path, body, "unused", env_block=f'env.dev = {{ url = "sqlite:///{db}" }}')
    result = run_cli("plan", policy)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(policy) in lines[0] and "phase 'folders'" in lines[0], lines
    assert "merge needs PostgreSQL" in lines[0] and "not sqlite" in lines[0]
    assert len(_ids(engine)) == 3000 and not sa.inspect(engine).has_table("dbsweep_plans")


def test_engine_imports_neither_dagster_nor_great_expectations():
    code = ("import sys, dbsweep.cli, dbsweep.service, dbsweep.executor, dbsweep.kinds.retention, dbsweep.demo_run;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'great_expectations')];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_sql_in_the_dagster_layer():
    for folder in ("assets", "pipelines", "resources"):
        for path in (ROOT / folder).glob("*.py"):
            text = path.read_text()
            assert "sqlalchemy" not in text and "DELETE " not in text and "SELECT " not in text, path


CASCADE = """
[[phase]]
name = "tenant"
kind = "cascade"

[phase.parent]
table = "contacts"
type_column = "object_type_id"
type_value = 94
inactive_for = "7 years"
activity_columns = ["updated_at", "last_login_at"]
batch_size = 3

[[phase.activity]]
table = "contact_activity"
fk_column = "contact_id"
time_column = "occurred_at"

[[phase.children]]
table = "addresses"
type_column = "object_type_id"
id_column = "object_id"
type_value = 94
batch_size = 2

[[phase.children]]
table = "contact_activity"
fk_column = "contact_id"
batch_size = 5
"""


def test_sqlite_cascade_keeps_active_parents_other_types_and_their_children(tmp_path):
    """The cascade on SQLite, gate included: its newest-activity expectation is portable SQL."""
    db = tmp_path / "nes.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE contacts (id INTEGER PRIMARY KEY, object_type_id INTEGER, "
                             "updated_at DATETIME, last_login_at DATETIME)")
        conn.exec_driver_sql("CREATE TABLE addresses (id INTEGER PRIMARY KEY, object_type_id INTEGER, object_id INTEGER)")
        conn.exec_driver_sql("CREATE TABLE contact_activity (id INTEGER PRIMARY KEY, "
                             "contact_id INTEGER REFERENCES contacts (id), occurred_at DATETIME)")
        for i in range(1, 41):  # tenants 1-30; 31-40 are communities (49)
            kind = 94 if i <= 30 else 49
            updated = "datetime('now', '-9 years')" if i % 5 else "datetime('now', '-1 years')"  # 5, 10, .. active
            login = "NULL" if i % 7 else "datetime('now', '-2 days')"  # 7, 14, .. active
            conn.exec_driver_sql(f"INSERT INTO contacts VALUES ({i}, {kind}, {updated}, {login})")
            for n in range(3):
                conn.exec_driver_sql(f"INSERT INTO addresses VALUES ({i * 10 + n}, {kind}, {i})")
                conn.exec_driver_sql(f"INSERT INTO addresses VALUES ({1000 + i * 10 + n}, 1, {i})")  # another type's
            when = "datetime('now', '-1 months')" if i % 11 == 0 else "datetime('now', '-8 years')"  # 11, 22 active
            conn.exec_driver_sql(f"INSERT INTO contact_activity VALUES ({i}, {i}, {when})")
    doomed = {i for i in range(1, 31) if i % 5 and i % 7 and i % 11}
    policy = write_policy(tmp_path, CASCADE, "unused", name="nes", env_block=f'env.dev = {{ url = "sqlite:///{db}" }}')
    plan, report, _ = purge(policy, phase="tenant")
    with engine.connect() as conn:
        contacts = {r[0] for r in conn.exec_driver_sql("SELECT id FROM contacts")}
        addresses = conn.exec_driver_sql("SELECT object_type_id, object_id FROM addresses").all()
        activity = {r[0] for r in conn.exec_driver_sql("SELECT contact_id FROM contact_activity")}
    assert contacts == set(range(1, 41)) - doomed
    assert sorted(addresses) == sorted([(94 if i <= 30 else 49, i) for i in range(1, 41) if i not in doomed for _ in range(3)]
                                       + [(1, i) for i in range(1, 41) for _ in range(3)])
    assert activity == contacts
    assert report.rows == len(doomed) * (1 + 3 + 1)
