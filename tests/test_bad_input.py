"""Every bad input is one line on stderr, exit 2, and nothing changed: policies, plan files, paths,
values that do not fit their columns, CLI options."""

import pytest
import sqlalchemy as sa

from tests.conftest import checksums, run_cli, write_policy

RETENTION = """
[[phase]]
name = "purge"
kind = "retention"
table = "items"
time_column = "{time_column}"
older_than = "{older_than}"
{extra}
"""

RESET = """
[[phase]]
name = "purge"
kind = "reset"
table = "items"
[[phase.rules]]
match = {{ column = "label", equals = "a" }}
set = {{ {sets} }}
"""

CASCADE = """
[[phase]]
name = "purge"
kind = "cascade"
[phase.parent]
table = "items"
type_column = "kind"
type_value = {type_value}
[[phase.children]]
table = "item_notes"
fk_column = "item_id"
"""


@pytest.fixture
def items(pg):
    with pg.begin() as conn:
        conn.exec_driver_sql("""
            CREATE TABLE items (id bigint PRIMARY KEY, label text, qty int NOT NULL, kind smallint,
                                created_text text, created_num bigint, created_at timestamptz, archived boolean)""")
        conn.exec_driver_sql("""
            INSERT INTO items SELECT g, chr(97 + mod(g, 3)), g, mod(g, 2), 'x', g, now() - g * interval '1 day', mod(g, 5) = 0
            FROM generate_series(1, 40) g""")
        conn.exec_driver_sql("CREATE TABLE item_notes (id bigint PRIMARY KEY, item_id bigint REFERENCES items)")
        conn.exec_driver_sql("INSERT INTO item_notes SELECT g, g FROM generate_series(1, 40) g")
    return pg


def retention(time_column="created_at", older_than="7 days", extra=""):
    return RETENTION.format(time_column=time_column, older_than=older_than, extra=extra)


POLICIES = {
    "unterminated quote in where": (retention(extra="where = \"label = 'a\""), "where"),
    "unterminated comment in where": (retention(extra="where = \"label = 'a' /* x\""), "where"),
    "empty where": (retention(extra='where = ""'), "where"),
    "moving time literal": (retention(extra="where = \"created_at < 'now'::timestamptz\""), "'now'"),
    "today literal": (retention(extra="where = \"created_at < 'today'\""), "'today'"),
    "duration overflows": (retention(older_than="1000000000 years"), "older_than"),
    "duration beyond dates": (retention(older_than="10000 years"), "older_than"),
    "text time column": (retention(time_column="created_text"), "not a date or timestamp"),
    "integer time column": (retention(time_column="created_num"), "not a date or timestamp"),
    "lock_timeout beyond the server": (retention(extra='lock_timeout = "30 days"'), "lock_timeout"),
    "statement_timeout beyond the server": (retention(extra='statement_timeout = "25 days"'), "statement_timeout"),
    "batch_size as text": (retention(extra='batch_size = "1000"'), "batch_size"),
    "batch_size as a boolean": (retention(extra="batch_size = true"), "batch_size"),
    "set value of the wrong type": (RESET.format(sets='qty = "many"'), "qty"),
    "set value out of range": (RESET.format(sets="qty = 99999999999"), "qty"),
    "set a fraction into an integer column": (RESET.format(sets="qty = 1.5"), "qty"),
    "set writes the primary key": (RESET.format(sets="id = 5"), "primary-key"),
    "type_value of the wrong type": (CASCADE.format(type_value='"community"'), "type_value"),
}


@pytest.mark.parametrize("case", list(POLICIES))
def test_bad_policy_is_one_line_exit_2_and_changes_nothing(tmp_path, items, dbname, case):
    body, named = POLICIES[case]
    path = write_policy(tmp_path, body, dbname)
    before = checksums(items)
    for verb in ("plan", "run"):
        result = run_cli(verb, path)
        assert result.returncode == 2, (case, verb, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and named in lines[0], (case, result.stderr)
        assert "phase 'purge'" in lines[0] or "[policy]" in lines[0], lines[0]
    assert checksums(items) == before


def test_a_bare_boolean_column_is_a_predicate(tmp_path, items, dbname):
    with items.begin() as conn:
        conn.exec_driver_sql("DROP TABLE item_notes")
    path = write_policy(tmp_path, retention(extra='where = "archived"'), dbname)
    result = run_cli("run", path)
    assert result.returncode == 0, result.stderr
    with items.connect() as conn:
        gone = conn.execute(sa.text("SELECT count(*) FROM items WHERE archived AND created_at < now() - interval '7 days'")).scalar()
        kept = conn.execute(sa.text("SELECT count(*) FROM items")).scalar()
    assert gone == 0 and kept == 40 - 7  # ids 10, 15, ..., 40 were archived and old


def test_a_policy_named_unlike_its_file_is_refused(tmp_path, items, dbname):
    path = write_policy(tmp_path, retention(), dbname)
    renamed = path.rename(tmp_path / "other.toml")
    result = run_cli("plan", renamed)
    assert result.returncode == 2 and "differs from the file name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_files_and_missing_folders(tmp_path, items, dbname):
    path = write_policy(tmp_path, retention(), dbname)
    latin = tmp_path / "latin.toml"
    latin.write_bytes("[policy]\nname = \"caf\xe9\"\n".encode("latin-1"))
    before = checksums(items)
    cases = [
        (("plan", tmp_path), "is a directory"),
        (("plan", latin), "not UTF-8"),
        (("run", path, "--plan", tmp_path), "is a directory"),
        (("run", path, "--plan", latin), "not UTF-8"),
        (("plan", path, "-o", tmp_path / "no" / "such" / "plan.json"), "folder does not exist"),
        (("run", path, "--batch-size", "-5"), "--batch-size"),
        (("run", path, "--no-such-option"), "--no-such-option"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert checksums(items) == before
    with items.connect() as conn:  # `plan -o` into a missing folder was refused before a plan was recorded
        assert not sa.inspect(conn).has_table("plans", schema="dbsweep") or \
            conn.execute(sa.text("SELECT count(*) FROM dbsweep.plans")).scalar() == 0


def test_help_shows_flags_without_a_value_type():
    shown = run_cli("run", "--help")
    assert shown.returncode == 0 and "--dry-run" in shown.stdout and "--help" in shown.stdout
    assert "<bool>" not in shown.stdout and "<int range>" in shown.stdout
