"""Drive the engine the way the CLI does: plan, GE gate, apply; scrape the metrics exporter."""

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from dbsweep import service
from dbsweep.policy import load_policy
from dbsweep.target import connect


def plan_and_gate(policy_path, phase="purge", env=None):
    from expectations.runner import gate

    policy = load_policy(policy_path)
    target = connect(policy, env)
    plan = service.make_plan(policy, phase, target)
    service.record_gate(target, plan, gate(plan))
    return policy, target, plan


def purge(policy_path, phase="purge", **overrides):
    policy, target, plan = plan_and_gate(policy_path, phase)
    assert plan.gate.passed, plan.gate.summary
    report = service.apply(policy, target, plan, dry_run=False, **overrides)
    return plan, report, target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample the exporter serves: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def wait_for_a_batch(engine, seconds: float = 300) -> None:
    """Until a run has committed its first batch in this database's ledger."""
    import time

    import sqlalchemy as sa

    deadline = time.monotonic() + seconds
    while True:
        with engine.connect() as conn:
            if sa.inspect(conn).has_table("batches", schema="dbsweep") and \
                    conn.execute(sa.text("SELECT count(*) FROM dbsweep.batches")).scalar():
                return
        assert time.monotonic() < deadline, "no batch was committed"
        time.sleep(0.05)

