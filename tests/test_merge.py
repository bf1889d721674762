"""Kind `merge` (seed 004) on the embedded PostgreSQL: exact outcome, collisions merged and renamed
recursively, the journal and restore row for row, the gate on collisions, bad input."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from dbsweep import service
from dbsweep.demo import folders
from dbsweep.restore import restore_run
from tests.conftest import ROOT, checksums, run_cli
from tests.helpers import plan_and_gate


def policy(tmp_path, dbname, edits: dict | None = None):
    text = (ROOT / "policies" / "folders.toml").read_text()
    text = text.replace('env.dev = { url = "embedded" }', f'database_name = "{dbname}"\nenv.dev = {{ url = "embedded" }}')
    for old, new in (edits or {}).items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "folders.toml"
    path.write_text(text)
    return path


def snapshot(engine) -> dict[str, set]:
    with engine.connect() as conn:
        return {name: set(conn.execute(sa.text(f"SELECT t::text FROM {name} t")).scalars())
                for name in ("applications", "folders", "documents", "comments")}


def expected(engine) -> dict:
    """The outcome computed independently, in Python: per application the oldest root survives;
    child folders of the same name become the one under the survivor (or the oldest moved one);
    their documents end up together, a colliding name renamed."""
    with engine.connect() as conn:
        roots = conn.execute(sa.text("SELECT id, application_id, created_at FROM folders WHERE parent_id IS NULL")).all()
        children = conn.execute(sa.text("SELECT id, parent_id, name FROM folders WHERE parent_id IS NOT NULL")).all()
        documents = conn.execute(sa.text("SELECT id, folder_id, name, body FROM documents")).all()
        comments = conn.execute(sa.text("SELECT id, commentable_type, commentable_id FROM comments")).all()
    survivor = {}
    for root in sorted(roots, key=lambda r: (r.created_at, r.id)):
        survivor.setdefault(root.application_id, root.id)
    root_to = {r.id: survivor[r.application_id] for r in roots}
    folder_to = {}
    for child in sorted(children, key=lambda c: (root_to[c.parent_id] != c.parent_id, c.id)):  # staying ones first
        folder_to[child.id] = folder_to.setdefault((root_to[child.parent_id], child.name), child.id)
    where_folder = {f: folder_to[f] for f in folder_to if isinstance(f, int)}
    bodies = {(where_folder[d.folder_id], d.body) for d in documents}
    return {"roots": set(survivor.values()), "folders": set(where_folder.values()), "documents": bodies,
            "documents_total": len(documents), "comments_total": len(comments), "folder_of": where_folder,
            "root_of": root_to}


@pytest.fixture
def loaded(pg):
    folders.create(pg, scale=0.05)
    return pg


def test_exact_outcome_and_restore_row_for_row(tmp_path, dbname, loaded):
    from expectations.runner import verification

    before, want = snapshot(loaded), expected(loaded)
    path = policy(tmp_path, dbname)
    pol, target, plan = plan_and_gate(path, "root_folders")
    assert plan.gate.passed, plan.gate.summary
    groups = plan.profile[0]["groups"]
    assert groups > 0 and plan.rows_selected == len(want["root_of"]) - len(want["roots"])
    report = service.apply(pol, target, plan, dry_run=False)
    assert report.rows == plan.rows_selected
    with loaded.connect() as conn:
        assert set(conn.execute(sa.text("SELECT id FROM folders WHERE parent_id IS NULL")).scalars()) == want["roots"]
        assert set(conn.execute(sa.text("SELECT id FROM folders WHERE parent_id IS NOT NULL")).scalars()) == want["folders"]
        docs = conn.execute(sa.text("SELECT folder_id, body, name FROM documents")).all()
        assert {(d.folder_id, d.body) for d in docs} == want["documents"]  # every document, in its merged folder
        assert len(docs) == want["documents_total"] and any("(merged " in d.name for d in docs)
        assert conn.execute(sa.text("SELECT count(*) FROM comments")).scalar() == want["comments_total"]
        dangling = conn.execute(sa.text("SELECT count(*) FROM comments c WHERE c.commentable_type = 'folder' AND NOT "
                                        "EXISTS (SELECT 1 FROM folders f WHERE f.id = c.commentable_id)")).scalar()
        assert dangling == 0
        with pytest.raises(sa.exc.IntegrityError):  # one root folder per application, from now on
            conn.execute(sa.text("INSERT INTO folders (application_id, name, created_at) VALUES (4, 'root', now())"))
    verdict = verification(plan, service.verify(target, plan))
    assert verdict.passed, verdict.summary
    result = restore_run(target.engine, report.run_id, pol.archive_dir)
    assert "dropped unique index one_root_folder_per_application first" in result.detail
    assert snapshot(loaded) == before  # every table row for row
    again = restore_run(target.engine, report.run_id, pol.archive_dir)
    assert again.already_restored and snapshot(loaded) == before


def test_on_conflict_fail_refuses_at_the_gate_and_changes_nothing(tmp_path, dbname, loaded):
    path = policy(tmp_path, dbname, {'on_conflict = { folders = "merge", documents = "rename" }':
                                     'on_conflict = { folders = "fail" }'})
    before = checksums(loaded)
    result = run_cli("run", path, "--phase", "root_folders")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "unresolved" in result.stdout + result.stderr
    assert checksums(loaded) == before


def test_unlisted_polymorphic_child_fails_the_gate_when_children_must_be_complete(tmp_path, dbname, loaded):
    with loaded.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE likes (id bigserial PRIMARY KEY, likeable_type text, likeable_id bigint)")
    _, _, plan = plan_and_gate(policy(tmp_path, dbname), "root_folders")
    assert not plan.gate.passed and "likes (likeable_type, likeable_id)" in plan.profile[0]["unlisted_children"]


@pytest.mark.parametrize("edit, message", [
    (('group_by = ["application_id"]', 'group_by = ["app"]'), "app"),
    (('survivor = "oldest"', 'survivor = "biggest"'), "survivor"),
    (('on_conflict = { folders = "merge", documents = "rename" }', 'on_conflict = { folderz = "merge" }'), "folderz"),
    (('where = "parent_id IS NULL"', 'where = "parent_id IS NULL; DROP TABLE folders"'), "where"),
])
def test_bad_input_exits_2_and_changes_nothing(tmp_path, dbname, loaded, edit, message):
    path = policy(tmp_path, dbname, {edit[0]: edit[1]})
    before = checksums(loaded)
    result = run_cli("run", path, "--phase", "root_folders")
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert message in line and "folders.toml" in line, line
    assert checksums(loaded) == before
    shutil.rmtree(tmp_path, ignore_errors=True)


def _start(path):
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "dbsweep.cli", "run", str(path), "--phase", "root_folders"], cwd=ROOT,
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _consistent(engine) -> None:
    """After any kill: no comment points at a folder that is gone, no application half-merged (one
    root, or all it had), and the journal holds one top-level delete per loser the ledger counts."""
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM comments c WHERE c.commentable_type = 'folder' AND NOT EXISTS "
                                    "(SELECT 1 FROM folders f WHERE f.id = c.commentable_id)")).scalar() == 0
        if not sa.inspect(conn).has_table("folders__merge_journal"):
            return
        half = conn.execute(sa.text("""
            SELECT count(*) FROM (SELECT DISTINCT (row_data->>'application_id')::int AS app FROM folders__merge_journal
                                  WHERE action = 'delete' AND row_data->>'parent_id' IS NULL) merged
            WHERE (SELECT count(*) FROM folders f WHERE f.application_id = merged.app AND f.parent_id IS NULL) <> 1""")).scalar()
        assert half == 0
        journaled = conn.execute(sa.text("SELECT count(*) FROM folders__merge_journal WHERE action = 'delete' "
                                         "AND table_name = 'public.folders' AND row_data->>'parent_id' IS NULL")).scalar()
        assert journaled == conn.execute(sa.text("SELECT coalesce(sum(rows_done), 0) FROM dbsweep.runs")).scalar()


def test_sigkills_then_resume_then_restore(tmp_path, dbname, pg):
    from tests.test_faults import _kill_after

    folders.create(pg, scale=0.5)
    before, want = snapshot(pg), expected(pg)
    path = policy(tmp_path, dbname, {"batch_size = 100 ": "batch_size = 4\nsleep_ms = 10 "})
    plan_and_gate(path, "root_folders")
    for kill in range(3):
        proc = _start(path)
        _kill_after(pg, proc, more_batches=3 + 5 * kill, jitter_s=0.005 * kill)
        _consistent(pg)
    done = run_cli("run", path, "--phase", "root_folders")
    assert done.returncode == 0, done.stderr
    _consistent(pg)
    with pg.connect() as conn:
        assert set(conn.execute(sa.text("SELECT id FROM folders WHERE parent_id IS NULL")).scalars()) == want["roots"]
        assert set(conn.execute(sa.text("SELECT id FROM folders WHERE parent_id IS NOT NULL")).scalars()) == want["folders"]
        assert {(r[0], r[1]) for r in conn.execute(sa.text("SELECT folder_id, body FROM documents"))} == want["documents"]
        run_id = conn.execute(sa.text("SELECT run_id FROM dbsweep.runs")).scalar()
    restored = run_cli("restore", run_id, "--policy", path)
    assert restored.returncode == 0, restored.stderr
    assert snapshot(pg) == before


def test_children_written_during_the_run_are_moved_or_refused_never_dangling(tmp_path, dbname, pg):
    """A writer adds child folders under root folders (losers among them) all through the run: each
    is re-pointed with its siblings, or, landing during the batch that merges its parent, waits for
    it and is refused by the foreign key. The run itself never fails."""
    import threading
    import time

    folders.create(pg, scale=0.3)
    path = policy(tmp_path, dbname, {"batch_size = 100 ": "batch_size = 5\nsleep_ms = 5 "})
    pol, target, plan = plan_and_gate(path, "root_folders")
    with pg.connect() as conn:
        roots = list(conn.execute(sa.text("SELECT id FROM folders WHERE parent_id IS NULL ORDER BY id")).scalars())
    written, refused, stop = [], [], threading.Event()

    def writer():
        n = 0
        with pg.connect() as conn:
            while not stop.is_set():
                n += 1
                try:
                    new = conn.execute(sa.text("INSERT INTO folders (application_id, parent_id, name, created_at) "
                                               "SELECT application_id, id, :n, now() FROM folders WHERE id = :p "
                                               "RETURNING id"), {"n": f"new {n}", "p": roots[n % len(roots)]}).scalar()
                    conn.commit()
                    if new:
                        written.append(new)
                except sa.exc.IntegrityError as exc:
                    conn.rollback()
                    refused.append(exc.orig.sqlstate)
                time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    report = service.apply(pol, target, plan, dry_run=False)
    stop.set()
    thread.join()
    assert report.state == "finished" and len(written) > 20
    assert set(refused) <= {"23503"}  # only the foreign key, for a parent merged while it waited
    with pg.connect() as conn:
        kept = set(conn.execute(sa.text("SELECT id FROM folders WHERE id = ANY(:w)"), {"w": written}).scalars())
        assert kept == set(written)  # every child the writer committed is still there...
        assert conn.execute(sa.text("SELECT count(*) FROM folders c WHERE c.id = ANY(:w) AND NOT EXISTS "
                                    "(SELECT 1 FROM folders p WHERE p.id = c.parent_id)"), {"w": written}).scalar() == 0


def test_a_foreign_key_the_policy_never_names_is_re_pointed(tmp_path, dbname, loaded):
    """Catalog discovery: `shares` points at folders and appears nowhere in the policy."""
    with loaded.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE shares (id serial PRIMARY KEY, folder_id bigint NOT NULL REFERENCES folders, "
                             "who text NOT NULL)")
        conn.exec_driver_sql("INSERT INTO shares (folder_id, who) SELECT id, 'team ' || id FROM folders WHERE parent_id IS NULL")
    want = expected(loaded)
    pol, target, plan = plan_and_gate(policy(tmp_path, dbname), "root_folders")
    assert any(row["table"] == "public.shares" and row["moving"] > 0 for row in plan.profile)
    service.apply(pol, target, plan, dry_run=False)
    with loaded.connect() as conn:
        shares = conn.execute(sa.text("SELECT folder_id, who FROM shares")).all()
    assert len(shares) == len(want["root_of"])  # every share kept...
    assert {s.folder_id for s in shares} == want["roots"]  # ...on the surviving root of its application
    assert all(want["root_of"][int(s.who.split()[1])] == s.folder_id for s in shares)
