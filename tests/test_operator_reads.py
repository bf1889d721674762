"""What an operator reads: verify judges the run that was applied (and any run it is given), not
whichever plan was recorded last; every moment printed one way, with its zone."""

import re

from dbsweep.ledger import Ledger
from tests.conftest import load_events, retention_policy, run_cli


def test_verify_judges_the_latest_applied_run_after_check_recorded_new_plans(tmp_path, pg, dbname):
    load_events(pg, old=600, new=400)
    path = retention_policy(tmp_path, dbname, batch_size=200, extra='archive = "table"')
    assert run_cli("run", path).returncode == 0
    (run,) = Ledger(pg).list_runs()
    assert run_cli("check", path).returncode == 0  # records a new plan, applied by nothing
    newer = Ledger(pg).latest_plan("testpol", "purge", "dev")
    assert newer.plan_id != run.plan_id

    verified = run_cli("verify", path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"verifying run {run.run_id} (plan {run.plan_id}" in verified.stdout
    assert f"plan {newer.plan_id} is newer and not applied" in verified.stdout and "passed" in verified.stdout
    assert re.search(r"finished \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", verified.stdout), verified.stdout

    given = run_cli("verify", path, "--run", run.run_id)
    assert given.returncode == 0 and f"verifying run {run.run_id}" in given.stdout, given.stdout + given.stderr
    unknown = run_cli("verify", path, "--run", "feedfacecafe")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    assert "--run feedfacecafe" in unknown.stderr and "testpol" in unknown.stderr

    assert run_cli("restore", run.run_id, "--policy", path).returncode == 0
    undone = run_cli("verify", path)
    assert undone.returncode == 0 and f"run {run.run_id} (plan {run.plan_id}) was restored" in undone.stdout, undone.stdout


def test_verify_before_any_run_says_there_is_nothing_to_verify(tmp_path, pg, dbname):
    load_events(pg, old=60, new=40)
    path = retention_policy(tmp_path, dbname)
    assert run_cli("plan", path).returncode == 0
    result = run_cli("verify", path)
    assert result.returncode == 0 and "no run of this phase went to the end yet" in result.stdout, result.stdout


def test_a_change_without_undo_says_so_and_a_protected_env_needs_it_acknowledged(tmp_path, pg, dbname):
    from tests.conftest import ids

    load_events(pg, old=300, new=100)
    before = ids(pg, "events")
    env_block = 'env.dev = { url = "embedded", protected = true }'
    path = retention_policy(tmp_path, dbname, batch_size=100, env_block=env_block)
    planned = run_cli("plan", path)
    assert planned.returncode == 0 and "purge: no undo: archive = 'none'" in planned.stdout, planned.stdout
    assert "cannot bring them back" in planned.stdout
    dry = run_cli("run", path, "--dry-run")
    assert dry.returncode == 0 and "no undo" in dry.stdout, dry.stdout
    confirmed = run_cli("run", path, "--confirm", "purge")
    assert confirmed.returncode == 2 and "--accept-no-undo" in confirmed.stderr, confirmed.stdout + confirmed.stderr
    assert len(confirmed.stderr.strip().splitlines()) == 1 and ids(pg, "events") == before
    acknowledged = run_cli("run", path, "--confirm", "purge", "--accept-no-undo")
    assert acknowledged.returncode == 0, acknowledged.stdout + acknowledged.stderr
    assert "no undo" in acknowledged.stdout and len(ids(pg, "events")) < len(before)

    archived = retention_policy(tmp_path, dbname, batch_size=100, env_block=env_block, extra='archive = "table"')
    said = run_cli("plan", archived)
    assert said.returncode == 0 and "no undo" not in said.stdout  # an archived change says nothing of the kind


def test_health_says_how_many_old_rows_are_kept_and_why(tmp_path, pg, dbname):
    load_events(pg, old=300, new=100)
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE billing (id bigint PRIMARY KEY, event_id bigint)")
        conn.exec_driver_sql("INSERT INTO billing SELECT id, id FROM events "
                             "WHERE created_at < now() - interval '7 days' ORDER BY id LIMIT 25")
    path = retention_policy(tmp_path, dbname, extra='keep_if_referenced_by = ["billing.event_id"]')
    assert run_cli("run", path).returncode == 0
    health = run_cli("health", path)
    assert "nothing due (7 days); 25 older rows kept (referenced by public.billing.event_id" in health.stdout \
        or "nothing due (7 days); 25 older rows kept (referenced by billing.event_id" in health.stdout, health.stdout


def test_retire_with_no_code_paths_says_the_code_was_not_checked(tmp_path, pg, dbname):
    from tests.conftest import write_policy

    with pg.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE "OLD_DELTA" (id bigint PRIMARY KEY)')
    body = '[[phase]]\nname = "retire_delta"\nkind = "retire"\ntables = ["OLD_DELTA"]\ncode_paths = []\n'
    planned = run_cli("plan", write_policy(tmp_path, body, dbname, name="orders"))
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "OLD_DELTA: no code reference: not checked: code_paths names no folder" in planned.stdout, planned.stdout
    assert "no inbound foreign key: ok" in planned.stdout


def test_every_bracketed_word_of_the_help_is_printed():
    """Rich reads [word] as markup and drops it: every one written in a command's help must show."""
    import re

    import typer.main
    from typer.testing import CliRunner

    from dbsweep.cli import app

    group = typer.main.get_command(app)
    runner = CliRunner()
    for name, command in group.commands.items():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        written = {m.group(1) for text in texts for m in re.finditer(r"\\?\[([a-z_.]+)\]", text)}
        shown = runner.invoke(app, [name, "--help"], terminal_width=200).output
        assert all(f"[{word}]" in shown for word in written), (name, written, shown)
    assert "[alerts]" in runner.invoke(app, ["check", "--help"], terminal_width=200).output


def test_the_demo_summary_wraps_long_names_instead_of_cutting_them():
    import io

    from rich.console import Console

    from dbsweep.demo_run import summary_table

    table = summary_table(1)
    table.add_row("orders", "retire_delta", "retire", "ORDER_LIST_DELTA, ORDER_LIST_LINES_DELTA", "0", "0",
                  "rename to ORDER_LIST_DELTA__retired_20261202; rename to ORDER_LIST_LINES_DELTA__retired_20261202",
                  "-", "2", "5 ms", "0.1 s", "4.0 s", "2/2 passed")
    shown = io.StringIO()
    Console(file=shown, width=160).print(table)
    assert "…" not in shown.getvalue()  # every name whole, if on more lines


def test_the_plan_table_shows_newest_selected_the_ages_and_bytes_removed_with_one_time_format(tmp_path, pg, dbname):
    load_events(pg, old=300, new=100)
    planned = run_cli("plan", retention_policy(tmp_path, dbname), env={"COLUMNS": "250"})
    assert planned.returncode == 0, planned.stdout + planned.stderr
    text = planned.stdout
    assert "newest selected" in text and "est. bytes removed" in text and "times in UTC" in text, text
    assert "purge: rows by age: <1d" in text and "7-30d" in text
    moments = re.findall(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S*", text)  # in a table whose header says UTC
    assert len(moments) >= 3 and all(len(m) == 19 and m[10] == " " for m in moments), moments
