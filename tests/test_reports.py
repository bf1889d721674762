"""Expectation reports: every gate and verification writes Great Expectations Data Docs under
$DBSWEEP_HOME/reports/<policy>/, printed by the CLI, listed by `dbsweep report`, linked from the
Dagster check."""

import os
from pathlib import Path

import dagster as dg

from pipelines.definitions import build_definitions
from tests.conftest import load_events, retention_policy, run_cli


def test_gate_and_verification_reports_are_written_and_found(tmp_path, pg, dbname):
    load_events(pg, old=300, new=200)
    path = retention_policy(tmp_path, dbname, name="reports_only_here")  # reports are kept per policy name
    assert "no expectation report of a plan in" in run_cli("report", path).stderr
    planned = run_cli("plan", path)
    assert planned.returncode == 0, planned.stderr
    gate_page = Path(planned.stdout.split("gate report ")[1].split()[0])
    assert gate_page.is_file() and gate_page.is_relative_to(Path(os.environ["DBSWEEP_HOME"]) / "reports" / "reports_only_here")
    html = gate_page.read_text()
    assert "rows_selected" in html and "fraction_selected" in html  # the gate's expectations, rendered
    assert run_cli("run", path).returncode == 0
    verified = run_cli("verify", path)
    assert verified.returncode == 0 and "report " in verified.stdout
    listed = run_cli("report", path)
    assert listed.returncode == 0
    latest_gate = Path(listed.stdout.split("purge gate: ")[1].split()[0])  # `run` planned and gated again
    assert latest_gate.is_file() and gate_page.is_file() and latest_gate != gate_page  # both kept
    verification_page = Path(listed.stdout.split("purge verification: ")[1].split()[0])
    assert verification_page.is_file() and verification_page != gate_page
    assert (verification_page.parents[4] / "index.html").is_file()  # the report's own Data Docs site

    # the same policy on another database (or this one dropped and made again): none of those pages is its own
    (tmp_path / "elsewhere").mkdir()
    elsewhere = retention_policy(tmp_path / "elsewhere", f"{dbname}_b", name="reports_only_here")
    other = run_cli("report", elsewhere)
    assert other.returncode == 2 and "no expectation report of a plan in" in other.stderr, other.stdout + other.stderr


def test_the_dagster_gate_check_links_its_report(tmp_path, pg, dbname):
    load_events(pg, old=300, new=200)
    retention_policy(tmp_path, dbname)
    defs = build_definitions(str(tmp_path))
    result = dg.materialize(list(defs.assets) + list(defs.asset_checks), resources=defs.resources,
                            selection=dg.AssetSelection.assets(dg.AssetKey(["testpol", "purge", "profile"])),
                            instance=dg.DagsterInstance.ephemeral())
    [gate] = [e for e in result.get_asset_check_evaluations() if e.check_name == "gate"]
    assert gate.passed and Path(gate.metadata["report"].value).is_file()
