"""Foreign keys into the rows a kind deletes (dbsweep.inbound), for retention and dedupe: refused
at the gate with every table as it was, guarded at run time, and dedupe's `referenced = "repoint"`
moving children to the kept row and back on restore, row for row."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from conftest import checksums, count, run_cli, write_policy
from helpers import plan_and_gate

from dbsweep import service
from dbsweep.errors import StoppedEarly

ITEMS = '"Sales"."Item Master"'


def load_items(engine: sa.Engine, on_delete: str = "CASCADE", unique_notes: bool = False) -> None:
    """Items with duplicate codes (an identity key the database generates, a NULL code among
    them); notes and tags pointing at duplicates and at kept rows; a self-reference."""
    unique = ', CONSTRAINT "Note Title" UNIQUE ("Item Id", title)' if unique_notes else ""
    with engine.begin() as conn:
        conn.exec_driver_sql('CREATE SCHEMA "Sales"')
        conn.exec_driver_sql(f"""CREATE TABLE {ITEMS} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, code text,
                                 made timestamptz NOT NULL, replaces bigint REFERENCES {ITEMS} (id))""")
        conn.exec_driver_sql(f"""INSERT INTO {ITEMS} (code, made)
            SELECT CASE WHEN mod(g, 50) = 0 THEN NULL ELSE 'C' || mod(g, 40) END,
                   timestamptz '2025-01-01' + make_interval(mins => (hashtext(g::text) & 4095))
            FROM generate_series(1, 400) g""")
        conn.exec_driver_sql(f"""CREATE TABLE "Sales".notes (id int PRIMARY KEY, "Item Id" bigint
                                 REFERENCES {ITEMS} (id) ON DELETE {on_delete}, title text NOT NULL{unique})""")
        conn.exec_driver_sql('INSERT INTO "Sales".notes SELECT g, g * 3, \'note \' || mod(g, 4) FROM generate_series(1, 120) g')
        conn.exec_driver_sql(f"""CREATE TABLE "Sales".tags (id int PRIMARY KEY, item bigint NOT NULL
                                 REFERENCES {ITEMS} (id) ON DELETE {on_delete}, tag text)""")
        conn.exec_driver_sql('INSERT INTO "Sales".tags SELECT g, g * 5, \'t\' FROM generate_series(1, 70) g')
        conn.exec_driver_sql(f"UPDATE {ITEMS} SET replaces = id - 1 WHERE mod(id, 97) = 0")


def dedupe_policy(tmp_path, dbname, extra: str = "", table: str = "Sales.Item Master", more: str = ""):
    return write_policy(tmp_path, f"""
        [[phase]]
        name = "items"
        kind = "dedupe"
        batch_size = 60

        [[phase.tables]]
        table = "{table}"
        natural_key = ["code"]
        keep = "oldest"
        time_column = "made"
        strategy = "in_place"
        {extra}
        {more}
    """, dbname)


def kept_ids(engine) -> dict[str, int]:
    """code -> id of the row the rule keeps, computed independently."""
    with engine.connect() as conn:
        return dict(conn.execute(sa.text(f"SELECT DISTINCT ON (code) code, id FROM {ITEMS} WHERE code IS NOT NULL "
                                         "ORDER BY code, made, id")).all())


def snapshot(engine) -> dict[str, set]:
    with engine.connect() as conn:
        return {t: set(conn.execute(sa.text(f"SELECT x::text FROM {t} x")).scalars())
                for t in (ITEMS, '"Sales".notes', '"Sales".tags')}


@pytest.mark.parametrize("on_delete", ["CASCADE", "NO ACTION"])
def test_dedupe_of_rows_children_point_at_is_refused_with_every_table_unchanged(tmp_path, dbname, pg, on_delete):
    load_items(pg, on_delete)
    before, relations = checksums(pg), _relations(pg)
    result = run_cli("run", dedupe_policy(tmp_path, dbname))
    assert result.returncode == 3, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert f"foreign key notes_Item Id_fkey on Sales.notes(Item Id) ON DELETE {on_delete}" in said, said
    assert "duplicate rows are referenced" in said and "repoint" in said
    assert checksums(pg) == before and _relations(pg) == relations  # not even the helper index


def test_repoint_moves_every_child_to_the_kept_row_and_restore_puts_all_back(tmp_path, dbname, pg):
    load_items(pg, "CASCADE", unique_notes=True)
    before, kept = snapshot(pg), kept_ids(pg)
    with pg.connect() as conn:
        code_of = dict(conn.execute(sa.text(f"SELECT id, code FROM {ITEMS}")).all())
        notes_before = conn.execute(sa.text('SELECT id, "Item Id", title FROM "Sales".notes')).all()
    path = dedupe_policy(tmp_path, dbname, 'referenced = "repoint"', more='on_conflict = { notes = "rename" }')
    policy, target, plan = plan_and_gate(path, "items")
    assert plan.gate.passed, plan.gate.summary
    assert plan.profile[0]["blockers"] == "none" and "move to the kept row" in plan.profile[0]["detail"]
    report = service.apply(policy, target, plan, dry_run=False)
    assert report.state == "finished"
    with pg.connect() as conn:
        items = dict(conn.execute(sa.text(f"SELECT id, code FROM {ITEMS}")).all())
        notes = {r.id: r for r in conn.execute(sa.text('SELECT id, "Item Id", title FROM "Sales".notes'))}
        tags = dict(conn.execute(sa.text('SELECT id, item FROM "Sales".tags')).all())
    assert set(items) == set(kept.values()) | {i for i, c in code_of.items() if c is None}  # the rule's rows
    assert len(notes) == 120 and len(tags) == 70  # no child lost through ON DELETE CASCADE
    for note in notes_before:  # each note on the kept row of its item's code (or where it was)
        want = kept[code_of[note[1]]] if code_of[note[1]] is not None else note[1]
        assert notes[note.id][1] == want
    assert all(tags[t] == (kept[code_of[t * 5]] if code_of[t * 5] is not None else t * 5) for t in tags)
    assert any("(merged " in n.title for n in notes.values())  # a title that collided was renamed
    with pg.connect() as conn:  # the constraint is there, and the self-reference too
        assert conn.execute(sa.text(f"SELECT count(*) FROM (SELECT code FROM {ITEMS} WHERE code IS NOT NULL "
                                    "GROUP BY code HAVING count(*) > 1) d")).scalar() == 0
    restored = run_cli("restore", report.run_id, "--policy", path)
    assert restored.returncode == 0, restored.stderr
    assert "put back 352 rows, and 245 rows pointing at them" in " ".join(restored.stdout.split()), restored.stdout
    assert snapshot(pg) == before  # every table row for row, each child on its own item again


def test_a_row_referenced_after_the_plan_is_kept_by_the_batch(tmp_path, dbname, pg):
    """Retention: the gate saw no bill on an old event; one is written between plan and run, and
    ON DELETE CASCADE would take it with the event. The batch's guard keeps both."""
    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "Events" (id bigint PRIMARY KEY, at timestamptz NOT NULL)')
        conn.exec_driver_sql('CREATE TABLE "Bills" (id bigint PRIMARY KEY, "Event Id" bigint REFERENCES "Events" '
                             'ON DELETE CASCADE)')
        conn.exec_driver_sql("""INSERT INTO "Events" SELECT g, now() - g * interval '1 day' FROM generate_series(1, 40) g""")
    path = write_policy(tmp_path, '[[phase]]\nname = "purge"\nkind = "retention"\ntable = "Events"\n'
                                  'time_column = "at"\nolder_than = "10 days"\nbatch_size = 5\n', dbname)
    policy, target, plan = plan_and_gate(path)
    assert plan.gate.passed and plan.rows_selected == 31
    with pg.begin() as conn:
        conn.exec_driver_sql('INSERT INTO "Bills" VALUES (1, 30), (2, 12)')
    report = service.apply(policy, target, plan, dry_run=False)
    assert report.rows == 29
    assert count(pg, '"Bills"') == 2 and count(pg, '"Events"', "id IN (12, 30)") == 2


def test_dedupe_stops_on_a_duplicate_referenced_after_the_plan(tmp_path, dbname, pg):
    load_items(pg, "CASCADE")
    with pg.begin() as conn:
        conn.exec_driver_sql('DELETE FROM "Sales".notes; DELETE FROM "Sales".tags')
        conn.exec_driver_sql(f"UPDATE {ITEMS} SET replaces = NULL")
    kept = kept_ids(pg)
    path = dedupe_policy(tmp_path, dbname)
    policy, target, plan = plan_and_gate(path, "items")
    assert plan.gate.passed, plan.gate.summary
    with pg.begin() as conn:
        victim = conn.execute(sa.text(f"SELECT max(id) FROM {ITEMS} WHERE code = 'C7' AND id <> :k"),
                              {"k": kept["C7"]}).scalar()
        conn.execute(sa.text('INSERT INTO "Sales".notes VALUES (1, :v, \'late\')'), {"v": victim})
    with pytest.raises(StoppedEarly, match="became referenced since the plan.*abandon this run") as stopped:
        service.apply(policy, target, plan, dry_run=False)
    assert stopped.value.exit_code == 4
    assert count(pg, '"Sales".notes') == 1 and count(pg, ITEMS, f"id = {victim}") == 1
    with pg.connect() as conn:
        state = conn.execute(sa.text("SELECT state FROM dbsweep.runs ORDER BY started_at DESC LIMIT 1")).scalar()
    assert state == "stopped"  # as the exit code says


def test_two_spellings_of_one_table_are_refused_as_bad_input(tmp_path, dbname, pg):
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (id int PRIMARY KEY, code text, made timestamptz NOT NULL)")
        conn.exec_driver_sql("INSERT INTO items SELECT g, 'c' || mod(g, 3), now() FROM generate_series(1, 30) g")
    path = write_policy(tmp_path, """
        [[phase]]
        name = "items"
        kind = "dedupe"
        [[phase.tables]]
        table = "items"
        natural_key = ["code"]
        keep = "lowest_key"
        [[phase.tables]]
        table = "public.items"
        natural_key = ["made"]
        keep = "lowest_key"
    """, dbname)
    before, relations = checksums(pg), _relations(pg)
    result = run_cli("run", path)
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "phase 'items'" in line and "'public.items' and 'items' are the same table" in line, line
    assert checksums(pg) == before and _relations(pg) == relations


def test_dedupe_rebuild_restored_then_planned_and_run_again(tmp_path, dbname, pg):
    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE task_requirements (id bigserial PRIMARY KEY, task int, req text, '
                             'at timestamptz NOT NULL)')
        conn.exec_driver_sql("INSERT INTO task_requirements (task, req, at) SELECT mod(g, 50), 'r' || mod(g, 3), "
                             "now() - make_interval(secs => g) FROM generate_series(1, 3000) g")
        conn.exec_driver_sql("CREATE TABLE original AS TABLE task_requirements")
    path = write_policy(tmp_path, """
        [[phase]]
        name = "dedupe"
        kind = "dedupe"
        [[phase.tables]]
        table = "task_requirements"
        natural_key = ["task", "req"]
        keep = "oldest"
        time_column = "at"
        strategy = "rebuild"
    """, dbname)
    first = run_cli("run", path)
    assert first.returncode == 0, first.stderr
    run_id = _last_run(pg)
    restored = run_cli("restore", run_id, "--policy", path)
    assert restored.returncode == 0, restored.stderr
    assert "put back 2,850 rows" in " ".join(restored.stdout.split()), restored.stdout
    assert _differences(pg, "task_requirements", "original") == 0
    with pg.connect() as conn:
        state, reason = conn.execute(sa.text("SELECT state, stop_reason FROM dbsweep.runs WHERE run_id = :r"),
                                     {"r": run_id}).one()
    assert state == "restored" and "dropped constraint" in reason and "put back 2,850 rows" in reason
    again = run_cli("run", path)
    assert again.returncode == 0, again.stderr
    assert count(pg, "task_requirements") == 150


def _last_run(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT run_id FROM dbsweep.runs ORDER BY started_at DESC LIMIT 1")).scalar()


def _differences(engine, table: str, other: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM ((SELECT * FROM {table} EXCEPT ALL SELECT * FROM {other}) "
                                    f"UNION ALL (SELECT * FROM {other} EXCEPT ALL SELECT * FROM {table})) d")).scalar()


def _relations(engine) -> set:
    """Every relation, constraint and index outside dbsweep's own schema."""
    with engine.connect() as conn:
        return set(conn.execute(sa.text(
            "SELECT c.relkind::text || ' ' || n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'dbsweep') AND n.nspname NOT LIKE 'pg_temp%%' "
            "UNION ALL SELECT 'constraint ' || conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'dbsweep')")).scalars())
