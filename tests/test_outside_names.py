"""Names and input from outside: database names that look like paths or Rich markup through the
fleet verbs, a dagster.yaml value that would inject settings, the modes of the files dbsweep
writes under a permissive umask, and input that used to escape as exit 1 or a hang."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa
from conftest import ROOT, load_events, retention_policy, run_cli, write_policy

from dbsweep.embedded import embedded_url

HOSTILE = ["../../../x_escape", "[/x]", "[bold]b", "plain"]


def test_hostile_database_names_through_every_fleet_verb(tmp_path):
    prefix = f"hx{uuid.uuid4().hex[:5]}"
    for name in HOSTILE:
        engine = sa.create_engine(embedded_url(f"{prefix}_{name}"))
        load_events(engine, 300, 100)
        engine.dispose()
    env = f'env.dev = {{ url = "embedded", databases_like = "{prefix}\\\\_%" }}'
    path = write_policy(tmp_path, """
        [[phase]]
        name = "events"
        kind = "retention"
        table = "events"
        time_column = "created_at"
        older_than = "7 days"
    """, "unused", env_block=env)
    home = Path(os.environ["DBSWEEP_HOME"])
    outside_before = _files_outside(home)
    for verb in (("plan",), ("status",), ("run",), ("verify",), ("stats",), ("check",), ("health",)):
        result = run_cli(*verb, path, "--all-targets", "--parallel", "2")
        assert result.returncode in (0, 1, 3), (verb, result.stdout + result.stderr)
        shown = " ".join(result.stdout.split())
        for name in HOSTILE:  # every target served, its name printed as it is
            assert f"{prefix}_{name}" in shown, (verb, name, result.stdout)
        assert "Traceback" not in result.stderr
    assert _files_outside(home) == outside_before  # nothing written beside DBSWEEP_HOME...
    assert not [p for p in home.rglob("*.log") if (home / "fleet") not in p.parents and "pgdata" not in p.parts]
    for folder in (home / "fleet").glob("testpol-*"):  # one log per target, each a plain name of its own
        logs = [p.name for p in folder.glob("*.log")]
        assert len(logs) == len(HOSTILE) and not [n for n in logs if n.startswith(".")], logs
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o600 for n in logs)
    for name in HOSTILE:  # each database purged
        engine = sa.create_engine(embedded_url(f"{prefix}_{name}"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM events WHERE created_at < now() - interval '7 days'")
                                ).scalar() == 0
        engine.dispose()


def _files_outside(home: Path) -> set[str]:
    return {str(p) for p in home.parent.rglob("*") if p.is_file() and home not in p.parents}


def test_a_long_target_name_is_refused_as_bad_input(tmp_path, dbname, pg):
    long_name = "t" * 300
    env = f'env.dev = {{ url = "embedded", targets = [{{ name = "{long_name}", database = "{dbname}" }}] }}'
    path = retention_policy(tmp_path, dbname, env_block=env)
    result = run_cli("status", path, "--all-targets")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "300 characters long" in lines[0] and "testpol.toml" in lines[0], lines


def test_a_storage_url_env_that_is_no_variable_name_is_refused(tmp_path):
    home = tmp_path / "dagster"
    injected = "X\nrun_launcher: {module: os, class: system}"
    result = run_cli("ui", "--storage", "postgres", "--storage-url-env", injected, env={"DAGSTER_HOME": str(home)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the name of an environment variable" in result.stderr
    assert not (home / "dagster.yaml").exists()


def test_files_dbsweep_writes_are_its_owners_alone_under_umask_022(tmp_path, dbname, pg):
    load_events(pg, 2000, 500)
    archive = tmp_path / "archive"
    path = retention_policy(tmp_path, dbname, batch_size=500, extra='archive = "parquet"', archive_dir=str(archive))
    home = Path(os.environ["DBSWEEP_HOME"])
    plan_file = tmp_path / "plan.json"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "dbsweep.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, env=os.environ.copy(), preexec_fn=lambda: os.umask(0o022), timeout=300)

    assert cli("plan", path, "-o", plan_file).returncode == 0
    ran = cli("run", path, "--plan", plan_file)
    assert ran.returncode == 0, ran.stderr
    written = [plan_file, *archive.rglob("*"), *(home / "reports" / "testpol").rglob("*")]
    assert len(written) > 5
    loose = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in written
             if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert not loose, loose


def test_input_that_used_to_escape_is_one_line_and_exit_2(tmp_path, dbname, pg):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    nested = tmp_path / "nested.toml"
    nested.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp_path / "p").mkdir()
    long_phase = retention_policy(tmp_path / "p", dbname)
    long_phase.write_text(long_phase.read_text().replace('name = "purge"', f'name = "{"p" * 5000}"'))
    cases = [(("plan", "/dev/zero"), "not a regular file"), (("plan", fifo), "not a regular file"),
             (("plan", nested), "nested deeper"), (("plan", long_phase), "5000 characters long"),
             (("metrics", retention_policy(tmp_path, dbname), "--listen", "999.1.1.1:9187"), "cannot listen there")]
    for args, words in cases:
        result = run_cli(*args, timeout=60)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and words in lines[0], (args, result.stdout, result.stderr)
