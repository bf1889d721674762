"""Alert delivery: Dagster sensors post a JSON message (Slack-compatible: a `text` field) to the
webhook whose URL is in DBSWEEP_WEBHOOK_URL, for a failed run and for failed checks of a run
that succeeded (the health asset's alerts, a verification). Without the variable they do nothing."""

from __future__ import annotations

import json
import os
import urllib.request

import dagster as dg

from dbsweep.redact import redact

WEBHOOK_ENV = "DBSWEEP_WEBHOOK_URL"


def post(message: dict) -> bool:
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        return False
    request = urllib.request.Request(url, data=json.dumps(message).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    return True


@dg.run_failure_sensor(name="dbsweep_run_failure_webhook", default_status=dg.DefaultSensorStatus.RUNNING,
                       description=f"Posts each failed run to the webhook in ${WEBHOOK_ENV}.")
def run_failure_webhook(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    why = redact(context.failure_event.message or "failed")
    steps = context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    errors = [e.dagster_event.step_failure_data.error for e in steps if e.dagster_event.step_failure_data.error]
    if errors:  # the on-call reads why, not only which step
        why += " " + "; ".join(redact(f"{e.cls_name}: {e.message.strip()}")[:500] for e in errors[:3])
    post({"text": f"dbsweep: run {run.run_id} of {run.job_name} failed: {why}",
          "dbsweep": {"event": "run_failed", "run_id": run.run_id, "job": run.job_name, "tags": dict(run.tags)}})


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="dbsweep_failed_checks_webhook",
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description=f"Posts the failed asset checks of a successful run to the webhook in ${WEBHOOK_ENV}.")
def failed_checks_webhook(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    records = context.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    failed = [r.dagster_event.event_specific_data for r in records if not r.dagster_event.event_specific_data.passed]
    if not failed:
        return
    lines = [f"{e.asset_key.to_user_string()}:{e.check_name} ({e.severity.value}): {redact(e.description or '')}"
             for e in failed]
    post({"text": f"dbsweep: {len(failed)} failed checks in run {run.run_id} of {run.job_name}:\n" + "\n".join(lines),
          "dbsweep": {"event": "checks_failed", "run_id": run.run_id, "job": run.job_name,
                      "checks": [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in failed]}})


SENSORS = [run_failure_webhook, failed_checks_webhook]
