"""Merge on shapes its demo never had: foreign keys of every ON DELETE action (re-pointed, none
lost), a key to a column that is no primary key (refused), parents whose ids overlap, plans that
count every level, duplicates that arrive behind the walk, polymorphic children with a unique key,
long constraint names and identity keys."""

from __future__ import annotations

import sqlalchemy as sa
from conftest import checksums, run_cli, write_policy
from helpers import plan_and_gate
from test_merge import policy, snapshot

from dbsweep import service
from dbsweep.demo import folders
from dbsweep.dialects import pg_merge
from dbsweep.restore import restore_run


def groups_policy(tmp_path, dbname, extra: str = "") -> object:
    return write_policy(tmp_path, f"""
        [[phase]]
        name = "groups"
        kind = "merge"
        table = "Accounts"
        group_by = ["email"]
        survivor = "lowest_key"
        batch_size = 3
        {extra}
    """, dbname)


def load_accounts(engine, identity: str = "bigserial") -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "Accounts" (id {identity} PRIMARY KEY, email text, code text UNIQUE)')
        conn.exec_driver_sql("""INSERT INTO "Accounts" (email, code) SELECT 'e' || mod(g, 10), 'k' || g
                                FROM generate_series(1, 40) g""")
        conn.exec_driver_sql('CREATE TABLE cascading (id int PRIMARY KEY, account bigint REFERENCES "Accounts" '
                             'ON DELETE CASCADE)')
        conn.exec_driver_sql('CREATE TABLE blocking (id int PRIMARY KEY, account bigint NOT NULL REFERENCES "Accounts")')
        conn.exec_driver_sql("INSERT INTO cascading SELECT g, g FROM generate_series(1, 40) g")
        conn.exec_driver_sql("INSERT INTO blocking SELECT g, 41 - g FROM generate_series(1, 40) g")


def test_children_of_every_on_delete_action_are_re_pointed_and_none_lost(tmp_path, dbname, pg):
    load_accounts(pg)
    policy_path = groups_policy(tmp_path, dbname)
    pol, target, plan = plan_and_gate(policy_path, "groups")
    assert plan.gate.passed, plan.gate.summary
    report = service.apply(pol, target, plan, dry_run=False)
    assert report.rows == 30
    with pg.connect() as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM "Accounts"')).scalar() == 10
        for child in ("cascading", "blocking"):  # 40 rows each, every one on its email's lowest id
            rows = conn.execute(sa.text(f'SELECT c.id, c.account FROM {child} c')).all()
            assert len(rows) == 40
            want = {i: (mod if (mod := (i if child == "cascading" else 41 - i) % 10) else 10) for i, _ in rows}
            assert {i: a for i, a in rows} == want


def test_a_foreign_key_to_a_column_that_is_no_primary_key_is_refused(tmp_path, dbname, pg):
    load_accounts(pg)
    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE by_code (id int PRIMARY KEY, code text REFERENCES "Accounts" (code))')
        conn.exec_driver_sql("INSERT INTO by_code VALUES (1, 'k5')")
    before = checksums(pg)
    result = run_cli("run", groups_policy(tmp_path, dbname))
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "phase 'groups'" in line and "foreign key by_code_code_fkey" in line and "Accounts(code)" in line, line
    assert checksums(pg) == before


def test_a_constraint_name_longer_than_63_bytes_is_refused_before_anything(tmp_path, dbname, pg):
    load_accounts(pg)
    before = checksums(pg)
    long_name = "x" * 64
    result = run_cli("plan", groups_policy(tmp_path, dbname, f'constraint = {{ name = "{long_name}", columns = ["email"] }}'))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "longer than 63 bytes" in result.stderr and "constraint" in result.stderr
    assert checksums(pg) == before


def test_group_by_errors_name_the_key(tmp_path, dbname, pg):
    load_accounts(pg)
    bad = write_policy(tmp_path, '[[phase]]\nname = "groups"\nkind = "merge"\ntable = "Accounts"\n'
                                 'group_by = ["Email Adress"]\nsurvivor = "lowest_key"\n', dbname)
    result = run_cli("plan", bad)
    assert result.returncode == 2
    assert "key 'group_by': column 'Email Adress' not found in table 'Accounts'" in result.stderr, result.stderr


def test_identity_keys_come_back_on_restore(tmp_path, dbname, pg):
    load_accounts(pg, identity="bigint GENERATED ALWAYS AS IDENTITY")
    with pg.connect() as conn:
        before = {t: set(conn.execute(sa.text(f'SELECT x::text FROM {t} x')).scalars())
                  for t in ('"Accounts"', "cascading", "blocking")}
    pol, target, plan = plan_and_gate(groups_policy(tmp_path, dbname), "groups")
    report = service.apply(pol, target, plan, dry_run=False)
    restore_run(target.engine, report.run_id, pol.archive_dir)
    with pg.connect() as conn:
        after = {t: set(conn.execute(sa.text(f'SELECT x::text FROM {t} x')).scalars()) for t in before}
    assert after == before


def test_overlapping_parents_verify_and_plan_counts_equal_the_journal(tmp_path, dbname, pg):
    """Documents merged on collision too: comments on folders and on documents are both re-pointed,
    and the two id spaces overlap (both sequences start at 1)."""
    from expectations.runner import verification

    folders.create(pg, scale=0.05)
    before = snapshot(pg)
    path = policy(tmp_path, dbname, {'documents = "rename"': 'documents = "merge"'})
    pol, target, plan = plan_and_gate(path, "root_folders")
    assert plan.gate.passed, plan.gate.summary
    with pg.connect() as conn:
        overlap = conn.execute(sa.text("SELECT count(*) FROM folders f JOIN documents d ON d.id = f.id")).scalar()
    assert overlap > 0
    report = service.apply(pol, target, plan, dry_run=False)
    with pg.connect() as conn:
        journal = pg_merge.journal_by_column(conn, "folders__merge_journal", [report.run_id])
    assert journal == plan.steps[0].spec["planned"]  # the plan counted every level the run changed
    by_table = {row["table"] + " " + row["role"]: row for row in plan.profile[1:]}
    documents = by_table["public.documents fk child of public.folders (folder_id)"]
    assert documents["collisions"] > 0 and documents["repointed"] > 0  # counted below the top level
    assert any(row["table"] == "public.comments" and "public.documents" in row["role"] and row["moving"] > 0
               for row in plan.profile)
    verdict = verification(plan, service.verify(target, plan))
    assert verdict.passed, verdict.summary
    restore_run(target.engine, report.run_id, pol.archive_dir)
    assert snapshot(pg) == before


def test_a_duplicate_that_arrives_behind_the_walk_is_merged_by_another_pass(tmp_path, dbname, pg):
    folders.create(pg, scale=0.05)
    path = policy(tmp_path, dbname, {"batch_size = 100 ": "batch_size = 5 "})
    pol, target, plan = plan_and_gate(path, "root_folders")
    stopped = service.apply(pol, target, plan, dry_run=False, max_rows=10)
    assert stopped.state == "stopped"
    with pg.begin() as conn:  # a second root for an application the walk has passed
        first = conn.execute(sa.text("SELECT min(application_id) FROM folders")).scalar()
        conn.execute(sa.text("INSERT INTO folders (application_id, name, created_at) VALUES (:a, 'root', now())"),
                     {"a": first})
    done = run_cli("run", path, "--phase", "root_folders")
    assert done.returncode == 0, done.stdout + done.stderr
    with pg.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM (SELECT application_id FROM folders WHERE parent_id IS NULL "
                                    "GROUP BY 1 HAVING count(*) > 1) g")).scalar() == 0
        assert conn.execute(sa.text("SELECT state FROM dbsweep.runs WHERE run_id = :r"),
                            {"r": stopped.run_id}).scalar() == "finished"
        valid = conn.execute(sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                                     "'one_root_folder_per_application'::regclass")).scalar()
    assert valid


def test_a_polymorphic_child_with_a_unique_key_collides_by_its_rule(tmp_path, dbname, pg):
    folders.create(pg, scale=0.05)
    with pg.begin() as conn:  # the same comment on two roots of one application
        conn.exec_driver_sql("CREATE UNIQUE INDEX comments_once ON comments (commentable_type, commentable_id, body)")
        conn.exec_driver_sql("""INSERT INTO comments (commentable_type, commentable_id, body)
            SELECT 'folder', id, 'same words' FROM folders WHERE parent_id IS NULL AND application_id IN
                (SELECT application_id FROM folders WHERE parent_id IS NULL GROUP BY 1 HAVING count(*) > 1)""")
        comments = conn.execute(sa.text("SELECT count(*) FROM comments")).scalar()
    path = policy(tmp_path, dbname, {'documents = "rename"': 'documents = "rename", comments = "rename"'})
    pol, target, plan = plan_and_gate(path, "root_folders")
    assert plan.gate.passed, plan.gate.summary
    report = service.apply(pol, target, plan, dry_run=False)
    assert report.state == "finished"
    with pg.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM comments")).scalar() == comments
        assert conn.execute(sa.text("SELECT count(*) FROM comments WHERE body LIKE 'same words (merged %'")).scalar() > 0
