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


def test_the_data_docs_pages_render_with_no_network_and_show_what_was_judged(tmp_path, pg, dbname):
    """Every page keeps no link to a CDN, carries dbsweep's own stylesheet, and the validation page
    shows the rows judged; opened offline in headless Chromium (where installed), the stylesheet
    is what draws it: the judged section's border is there in the screenshot."""
    import re
    import shutil
    import subprocess

    from tests.helpers import png_colours

    load_events(pg, old=300, new=200)
    path = retention_policy(tmp_path, dbname, name="offline_docs")
    planned = run_cli("plan", path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    gate_page = Path(planned.stdout.split("gate report ")[1].split()[0])
    site = gate_page.parents[4]
    for page in site.rglob("*.html"):
        text = page.read_text()
        # no asset from the network (a plain hyperlink to GE's documentation may stay: it fetches nothing)
        assert not re.search(r"""<(link|script|img)\b[^>]*\b(src|href)\s*=\s*["']https?://|url\(\s*['"]?https?://""",
                             text), page
        assert "dbsweep's own stylesheet" in text, page
    text = gate_page.read_text()
    selected = next(r for r in planned.stdout.splitlines() if "events" in r).split("│")[5].strip()
    assert "What was judged" in text and f"<td>{selected.replace(',', '')}</td>" in text, selected
    assert "no more rows than the policy&#x27;s expect.max_rows" in text and "passed" in text

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return  # the page itself was checked above; the rendering needs Debian's chromium package
    shot = tmp_path / "gate.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
                    f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1200,900", f"--screenshot={shot}",
                    f"file://{gate_page}"], check=True, capture_output=True, timeout=120)
    colours = png_colours(shot)
    assert colours.get((9, 105, 218), 0) > 500, "the judged section's border (the stylesheet's) is not drawn"
    assert colours.get((26, 127, 55), 0) > 20, "no 'passed' in the stylesheet's green"
