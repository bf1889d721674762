"""Seed 000's NES cleanup on real PostgreSQL: exact survivors per table for each phase, the FK
coverage gate, SIGKILL and resume mid-cascade, and a protected environment's confirmation."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from dbsweep import service
from dbsweep.catalog import reflect_table
from dbsweep.demo import nes
from dbsweep.kinds.cascade import _linked_to_each_other
from tests.conftest import ROOT, run_cli, write_policy
from tests.helpers import plan_and_gate, purge

CHILDREN = {"addresses": "object", "phones": "object", "emails": "object", "notes": "object",
            "contact_tags": "fk", "contact_activity": "fk"}


def nes_policy(tmp_path, dbname, env_block=None):
    body = (ROOT / "policies" / "nes.toml").read_text().split("[[phase]]", 1)[1]
    return write_policy(tmp_path, "[[phase]]" + body, dbname, name="nes", env_block=env_block)


def inactive(type_id: int, extra: str = "true") -> str:
    """The seed's rule, written independently of dbsweep: type, extra, no activity for 7 years."""
    cutoff = "now() - interval '7 years'"
    return f"""object_type_id = {type_id} AND ({extra})
        AND (updated_at IS NULL OR updated_at < {cutoff}) AND (last_login_at IS NULL OR last_login_at < {cutoff})
        AND NOT EXISTS (SELECT 1 FROM contact_activity a WHERE a.contact_id = c.id AND a.occurred_at >= {cutoff})"""


def snapshot(engine) -> dict[str, set]:
    with engine.connect() as conn:
        out = {"contacts": set(conn.execute(sa.text("SELECT id FROM contacts")).scalars())}
        for table in CHILDREN:
            out[table] = set(conn.execute(sa.text(f"SELECT id FROM {table}")).scalars())
        return out


def expected_after(engine, doomed_where: str, type_id: int) -> dict[str, set]:
    """What must survive: every row except the doomed parents and their children."""
    with engine.connect() as conn:
        doomed = f"SELECT id FROM contacts c WHERE {doomed_where}"
        out = {"contacts": set(conn.execute(sa.text(f"SELECT id FROM contacts WHERE id NOT IN ({doomed})")).scalars())}
        for table, how in CHILDREN.items():
            gone = (f"object_type_id = {type_id} AND object_id IN ({doomed})" if how == "object"
                    else f"contact_id IN ({doomed})")
            out[table] = set(conn.execute(sa.text(f"SELECT id FROM {table} WHERE NOT ({gone})")).scalars())
        return out


def orphans(engine) -> int:
    """Children whose parent is gone, beyond the five orphan addresses the demo data starts with."""
    with engine.connect() as conn:
        polymorphic = sum(conn.execute(sa.text(
            f"SELECT count(*) FROM {t} x WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = x.object_id)")).scalar()
            for t, how in CHILDREN.items() if how == "object")
    return polymorphic - 5


def test_each_phase_keeps_exactly_what_it_must(tmp_path, pg, dbname):
    nes.create(pg, scale=0.1)
    path = nes_policy(tmp_path, dbname)
    community = inactive(49, "contact_type = 'Closed' OR name LIKE 'ZY%'")
    keep = expected_after(pg, community, 49)
    plan, report, _ = purge(path, phase="community")
    assert report.state == "finished" and plan.profile[0]["rows_selected"] > 20
    assert snapshot(pg) == keep  # active communities, other types, their children all survive
    assert orphans(pg) == 0
    assert report.rows == sum(p["rows_selected"] for p in plan.profile)

    with pg.connect() as conn:
        billed = set(conn.execute(sa.text("SELECT reading_id FROM sm_usage")).scalars())
        keep_readings = set(conn.execute(sa.text(
            "SELECT id FROM readings WHERE reading_date >= current_date - interval '2 years' "
            "OR id IN (SELECT reading_id FROM sm_usage)")).scalars())
    purge(path, phase="reading")
    with pg.connect() as conn:
        readings = set(conn.execute(sa.text("SELECT id FROM readings")).scalars())
    assert readings == keep_readings and billed <= readings  # a billed reading never goes

    keep = expected_after(pg, inactive(94), 94)
    purge(path, phase="tenant")
    assert snapshot(pg) == keep and orphans(pg) == 0


def test_uncovered_foreign_key_fails_the_gate_and_deletes_nothing(tmp_path, pg, dbname):
    nes.create(pg, scale=0.05)
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE invoices (id bigserial PRIMARY KEY, "
                             "contact_id bigint CONSTRAINT invoices_contact_fk REFERENCES contacts (id))")
        conn.exec_driver_sql("CREATE TABLE phone_calls (id bigserial PRIMARY KEY, "
                             "phone_id bigint CONSTRAINT calls_phone_fk REFERENCES phones (id))")
    before = snapshot(pg)
    policy, target, plan = plan_and_gate(nes_policy(tmp_path, dbname), phase="community")
    assert not plan.gate.passed
    assert "foreign key invoices_contact_fk on invoices(contact_id) is not covered" in plan.gate.summary
    assert "foreign key calls_phone_fk on phone_calls(phone_id) is not covered" in plan.gate.summary
    result = run_cli("run", nes_policy(tmp_path, dbname), "--phase", "community")
    assert result.returncode == 3 and "invoices_contact_fk" in result.stderr
    assert snapshot(pg) == before


def _batches(engine) -> int:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("batches", schema="dbsweep"):
            return 0
        return conn.execute(sa.text("SELECT count(*) FROM dbsweep.batches")).scalar()


def test_sigkill_mid_cascade_then_resume(tmp_path, pg, dbname):
    nes.create(pg, scale=0.3)
    path = nes_policy(tmp_path, dbname)
    # small batches, addresses smaller still: a parent batch then spans several transactions
    text = re.sub(r"batch_size = 500\b", "batch_size = 25", re.sub(r"batch_size = 100\b", "batch_size = 20", path.read_text()))
    path.write_text(text.replace('name = "tenant"', 'name = "tenant"\nsleep_ms = 5'))
    keep = expected_after(pg, inactive(94), 94)
    total_before = sum(len(v) for v in snapshot(pg).values())
    inside_a_parent_batch = 0
    for kill_after in (5, 23, 61):
        proc = subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "run", str(path), "--phase", "tenant"],
                                cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _batches(pg) < kill_after:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # the invariant, after every kill: no child of a deleted parent remains
        assert orphans(pg) == 0
        assert keep["contacts"] <= snapshot(pg)["contacts"]
        with pg.connect() as conn:
            cursor = json.loads(conn.execute(sa.text("SELECT cursor FROM dbsweep.runs")).scalar())
        inside_a_parent_batch += cursor.get("parents") is not None  # children gone, parents not yet
    assert inside_a_parent_batch >= 1
    assert snapshot(pg) != keep  # work was left
    done = run_cli("run", path, "--phase", "tenant")
    assert done.returncode == 0, done.stderr
    assert "resuming plan" in done.stdout
    assert snapshot(pg) == keep and orphans(pg) == 0
    with pg.connect() as conn:
        rows_done, ledger = conn.execute(sa.text(
            "SELECT rows_done, (SELECT sum(rows) FROM dbsweep.batches) FROM dbsweep.runs")).one()
    assert rows_done == ledger == total_before - sum(len(v) for v in keep.values())  # nothing counted twice


def test_protected_env_needs_each_phase_confirmation(tmp_path, pg, dbname):
    nes.create(pg, scale=0.05)
    path = nes_policy(tmp_path, dbname, env_block='env.dev = { url = "embedded", protected = true }')
    keep = expected_after(pg, inactive(49, "contact_type = 'Closed' OR name LIKE 'ZY%'"), 49)
    plan_file = tmp_path / "cutoff_report.json"
    assert run_cli("plan", path, "-o", plan_file).returncode == 0
    before = snapshot(pg)
    assert run_cli("run", path, "--plan", plan_file, "--dry-run").returncode == 0
    for args in ([], ["--confirm", "tenant"]):  # none, or another phase's confirmation
        refused = run_cli("run", path, "--plan", plan_file, "--phase", "community", *args)
        assert refused.returncode == 2 and "--confirm community" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert snapshot(pg) == before
    done = run_cli("run", path, "--plan", plan_file, "--phase", "community", "--confirm", "community",
                   "--accept-no-undo")
    assert done.returncode == 0, done.stderr
    assert snapshot(pg) == keep != before


def test_parquet_archive_on_a_cascade_is_refused(tmp_path, dbname):
    path = nes_policy(tmp_path, dbname)
    path.write_text(path.read_text().replace('name = "community"', 'name = "community"\narchive = "parquet"'))
    result = run_cli("plan", path, "--phase", "community")
    assert result.returncode == 2 and "use archive = 'table'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def full_snapshot(engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {t} ORDER BY id"))]
                for t in ["contacts", *CHILDREN]}


def test_archived_cascade_then_restore_gives_back_every_table(tmp_path, pg, dbname):
    from dbsweep.restore import restore_run

    nes.create(pg, scale=0.05)
    with pg.begin() as conn:  # a child table none of the parents have rows in
        conn.execute(sa.text("DELETE FROM notes WHERE object_type_id = 49"))
    original = full_snapshot(pg)
    path = nes_policy(tmp_path, dbname)
    path.write_text(path.read_text().replace('name = "community"', 'name = "community"\narchive = "table"'))
    keep = expected_after(pg, inactive(49, "contact_type = 'Closed' OR name LIKE 'ZY%'"), 49)
    plan, report, target = purge(path, phase="community")
    assert snapshot(pg) == keep
    with pg.connect() as conn:
        archived = sum(conn.execute(sa.text(f"SELECT count(*) FROM {t}__archive")).scalar() for t in ["contacts", *CHILDREN])
    assert archived == report.rows > 0  # every deleted row, in its table's archive
    with pg.connect() as conn:  # a batch is named in a table's batch table only when it archived rows there
        empty = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}__archive_batches b WHERE NOT EXISTS "
                                         f"(SELECT 1 FROM {t}__archive a WHERE a.dbsweep_batch = b.dbsweep_batch)"))
                 .scalar() for t in ["contacts", *CHILDREN]}
        named = sum(conn.execute(sa.text(f"SELECT count(*) FROM {t}__archive_batches")).scalar()
                    for t in ["contacts", *CHILDREN])
    assert set(empty.values()) == {0} and named > 0, empty
    result = restore_run(target.engine, report.run_id, tmp_path)
    assert (result.rows_restored, result.rows_skipped) == (report.rows, 0)
    assert full_snapshot(pg) == original  # row for row, every table


@pytest.mark.parametrize("old, new, message", [
    ('table = "notes"', 'table = "notez"', "table 'notez' not found"),
    ('fk_column = "contact_id"\nbatch_size = 1000', 'fk_column = "contactid"\nbatch_size = 1000', "column 'contactid' not found"),
    ("where = \"contact_type = 'Closed' OR name LIKE 'ZY%'\"", "where = \"id IN (SELECT id FROM contacts)\"", "not allowed"),
    ('inactive_for = "7 years"', 'inactive_for = "7 yeers"', "malformed duration"),
    ('keep_if_referenced_by = ["sm_usage.reading_id"]', 'keep_if_referenced_by = ["sm_usage.nope"]', "column 'nope' not found"),
    ('type_value = 49\nbatch_size = 500', 'type_value = 49', None),  # control: still valid
])
def test_bad_cascade_input_is_one_line_and_exit_2(tmp_path, pg, dbname, old, new, message):
    nes.create(pg, scale=0.02)
    path = nes_policy(tmp_path, dbname)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    before = snapshot(pg)
    result = run_cli("plan", path)
    if message is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and snapshot(pg) == before


def test_a_lock_timeout_mid_cascade_is_retried_without_skipping_a_table(tmp_path, pg, dbname):
    """Another session holds the tenants' notes locked for a second: the cascade's transaction times
    out on them, rolls back (addresses, phones and emails of that transaction included) and is
    retried. Nothing may count as done from the rolled-back attempt."""
    import threading

    nes.create(pg, scale=0.1)
    path = nes_policy(tmp_path, dbname)
    path.write_text(path.read_text().replace('name = "tenant"', 'name = "tenant"\nlock_timeout = "200 ms"'))
    keep = expected_after(pg, inactive(94), 94)
    locked, release, waited = threading.Event(), threading.Event(), threading.Event()

    def hold_notes():
        with pg.connect() as conn:
            conn.execute(sa.text("SELECT id FROM notes WHERE object_type_id = 94 FOR UPDATE")).all()
            locked.set()
            while not release.wait(0.02):
                if conn.execute(sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                    waited.set()  # the cascade is waiting on a note: its lock_timeout will end that attempt
            conn.commit()

    policy, target, plan = plan_and_gate(path, phase="tenant")
    holder = threading.Thread(target=hold_notes)
    holder.start()
    locked.wait(30)
    threading.Timer(1.0, release.set).start()
    try:
        report = service.apply(policy, target, plan, dry_run=False)
    finally:
        release.set()
        holder.join()
    assert waited.is_set() and report.state == "finished"
    assert snapshot(pg) == keep and orphans(pg) == 0


def test_child_tables_linked_to_each_other_are_seen_from_the_reflected_tables(pg):
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA crm")
        conn.exec_driver_sql("CREATE TABLE crm.people (id bigint PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE crm.mails (id bigint PRIMARY KEY, person_id bigint REFERENCES crm.people)")
        conn.exec_driver_sql("CREATE TABLE crm.mail_reads (id bigint PRIMARY KEY, person_id bigint REFERENCES crm.people, "
                             "mail_id bigint REFERENCES crm.mails)")
        conn.exec_driver_sql("CREATE TABLE crm.notes (id bigint PRIMARY KEY, person_id bigint REFERENCES crm.people)")
    with pg.connect() as conn:
        mails, reads, notes = (reflect_table(conn, f"crm.{n}") for n in ("mails", "mail_reads", "notes"))
    assert _linked_to_each_other([reads, mails, notes])
    assert not _linked_to_each_other([mails, notes])  # both point only at the parent
    assert not _linked_to_each_other([reads, notes])  # mails is not among them


def test_a_child_added_after_its_table_was_done_keeps_its_parent(tmp_path, pg, dbname):
    """A parent batch whose children take several transactions: an address added for one of its
    parents once the addresses were done keeps that parent (the guard), and nothing is orphaned."""
    nes.create(pg, scale=0.05)
    path = nes_policy(tmp_path, dbname)
    text = re.sub(r"batch_size = 500\b", "batch_size = 5", path.read_text())  # addresses
    path.write_text(re.sub(r"batch_size = 1000\b", "batch_size = 1", text, count=1))  # phones
    doomed = expected_after(pg, inactive(49, "contact_type = 'Closed' OR name LIKE 'ZY%'"), 49)
    late: dict = {}

    def add_a_late_address(progress):
        with pg.begin() as conn:
            cursor = json.loads(conn.execute(sa.text("SELECT cursor FROM dbsweep.runs WHERE state = 'running'")).scalar())
            if late or not cursor.get("parents") or cursor["child"] < 1:
                return  # wait for a committed cursor past the addresses, inside a parent batch
            late["parent"] = cursor["parents"][0]
            late["address"] = conn.execute(sa.text(
                "INSERT INTO addresses (object_type_id, object_id, line1) VALUES (49, :p, 'late') RETURNING id"),
                {"p": late["parent"]}).scalar()

    policy, target, plan = plan_and_gate(path, phase="community")
    report = service.apply(policy, target, plan, dry_run=False, on_progress=add_a_late_address)
    assert report.state == "finished" and late, "no committed cursor inside a parent batch past the addresses"
    after = snapshot(pg)
    assert after["contacts"] == doomed["contacts"] | {late["parent"]}
    assert after["addresses"] == doomed["addresses"] | {late["address"]}
    assert orphans(pg) == 0
    parent_row = {r["table"]: r for r in service.verify(target, plan)}["contacts"]
    assert parent_row["remaining_selected"] == 1  # verify reports the parent that stayed


def _parents_per_batch(engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT count(*) FROM contacts__archive GROUP BY dbsweep_batch "
                                         "ORDER BY dbsweep_batch")).scalars())


@pytest.mark.parametrize("cap", [None, 40])
def test_parent_batches_sized_from_the_cost_per_parent(tmp_path, pg, dbname, cap):
    """With no batch sizes in the policy, parent batches start at 100 and grow (at most 4x a batch)
    toward target_batch_ms from the cost per parent seen; a parent batch_size the policy sets is an
    upper bound, never exceeded. What survives is the same either way."""
    nes.create(pg, scale=0.2)
    path = nes_policy(tmp_path, dbname)
    text = re.sub(r"\nbatch_size = \d+[^\n]*", "", path.read_text())
    text = text.replace('name = "tenant"', 'name = "tenant"\narchive = "table"')
    if cap:
        text = re.sub(r'(\[phase.parent\]\ntable = "contacts"\ntype_column = "object_type_id"\ntype_value = 94)',
                      rf"\1\nbatch_size = {cap}", text)
    path.write_text(text)
    keep = expected_after(pg, inactive(94), 94)
    plan, report, _ = purge(path, phase="tenant")
    assert snapshot(pg) == keep
    sizes = _parents_per_batch(pg)
    assert sum(sizes) == plan.profile[0]["rows_selected"] and len(sizes) > 2
    if cap:
        assert max(sizes) <= cap and plan.steps[0].spec["parent_cap"] == cap
    else:
        assert sizes[0] == 100 and max(sizes) > 100, sizes  # grown from the first batch's cost
        assert all(b <= 4 * a for a, b in zip(sizes, sizes[1:-1]))
