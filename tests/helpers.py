"""Drive the engine the way the CLI does: plan, GE gate, apply."""

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
