"""Jobs and schedules by purpose: the consistency check changes nothing, the scheduled apply runs
the marked phases for real, the integrity verification fails when a promise stops holding."""

import dagster as dg
import sqlalchemy as sa

from pipelines.definitions import build_definitions
from tests.conftest import count, ids, load_events, retention_policy

NEW = "created_at >= now() - interval '7 days'"
SCHEDULES = '\n[schedules]\ncheck = "0 * * * *"\napply = "0 2 * * *"\nintegrity = "0 3 * * 0"\n'


def _run(defs, job_name, instance):
    return defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=False)


def test_check_apply_and_integrity_jobs_do_what_they_say(tmp_path, pg, dbname):
    load_events(pg, old=3000, new=1000)
    keep = ids(pg, "events", NEW)
    path = retention_policy(tmp_path, dbname, extra="apply_scheduled = true")
    path.write_text(path.read_text() + SCHEDULES)
    defs = build_definitions(str(tmp_path))
    dg.Definitions.validate_loadable(defs)
    schedules = {s.name: s for s in defs.schedules}
    for purpose, cron in (("check", "0 * * * *"), ("apply", "0 2 * * *"), ("integrity_report", "0 3 * * 0")):
        schedule = schedules[f"testpol__{purpose}__schedule"]
        assert schedule.cron_schedule == cron and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    [request] = schedules["testpol__apply__schedule"].evaluate_tick(dg.build_schedule_context()).run_requests
    assert request.run_config == {"ops": {"testpol__purge__apply": {"config": {"dry_run": False, "confirm": "purge"}}}}
    instance = dg.DagsterInstance.ephemeral()

    check = _run(defs, "testpol__check", instance)
    assert check.success and count(pg, "events") == 4000  # profile and gate only
    assert [e.check_name for e in check.get_asset_check_evaluations()] == ["gate"]

    applied = defs.resolve_job_def("testpol__apply").execute_in_process(
        instance=instance, run_config=request.run_config)
    assert applied.success and ids(pg, "events") == keep

    integrity = _run(defs, "testpol__integrity_report", instance)
    verdicts = {e.check_name: e.passed for e in integrity.get_asset_check_evaluations()}
    assert verdicts["verified_purge"] and verdicts["no_problems"]
    with pg.begin() as conn:  # an old row back inside the plan's key range: the promise no longer holds
        conn.execute(sa.text("INSERT INTO events VALUES (2, 'back', now() - interval '30 days')"))
    integrity = _run(defs, "testpol__integrity_report", instance)
    failed = [e for e in integrity.get_asset_check_evaluations() if e.check_name == "verified_purge"]
    assert len(failed) == 1 and not failed[0].passed
