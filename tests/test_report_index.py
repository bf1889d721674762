"""The fleet's flake, named: every target of a fleet writes its policy's index of the newest report
pages (`reports/<policy>/latest.json`) from a process of its own. Written in place, a reader could
find it empty (`JSONDecodeError: Expecting value: line 1 column 1`) and two writers lose each other's
entries. Here four processes update it at once, as `--all-targets --parallel 4` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

WRITER = """
import sys
from dbsweep.plan import GateVerdict, PhasePlan, utcnow
from expectations.runner import _remember, latest_reports

phase, rounds = sys.argv[1], int(sys.argv[2])
plan = PhasePlan(policy="fleetpol", phase=phase, kind="retention", env="dev", phase_fingerprint="x", steps=[],
                 profile=[])
for n in range(rounds):
    _remember(plan, "gate", GateVerdict(passed=True, checked_at=utcnow(), summary="ok", report=f"{phase}-{n}"))
    latest_reports("fleetpol")  # what `dbsweep report` and the next gate read meanwhile
"""


def test_targets_writing_one_report_index_at_once_never_read_half_of_it(tmp_path):
    env = {**os.environ, "DBSWEEP_HOME": str(tmp_path)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, f"phase_{i}", "150"], cwd=ROOT, env=env,
                                stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [w.communicate(timeout=300)[1] for w in writers]
    assert all(w.returncode == 0 for w in writers), "\n".join(errors)
    index = json.loads((Path(tmp_path) / "reports" / "fleetpol" / "latest.json").read_text())
    assert index == {f"phase_{i}": {"gate": f"phase_{i}-149"} for i in range(4)}  # no writer's entry lost
    assert not list((Path(tmp_path) / "reports" / "fleetpol").glob("*.tmp"))
