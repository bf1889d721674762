"""What users see, as reviewed data: every registered kind keeps the interface's promises, and the
Dagster surface (asset keys, checks, jobs with their selections, schedules) is a snapshot, so a
change to it is a diff in review. Regenerate with DBSWEEP_UPDATE_SNAPSHOT=1 after checking it."""

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from dbsweep.errors import BadInput
from dbsweep.kinds import Kind, all_kinds, kind_named
from dbsweep.phase_config import PhaseBase

SNAPSHOT = Path(__file__).parent / "snapshots" / "dagster_surface.json"
SUITES = Path(__file__).resolve().parents[1] / "expectations" / "suites"
REQUIRED = ("build_plan", "selection", "verify")


@pytest.mark.parametrize("name", sorted(all_kinds()))
def test_every_kind_keeps_the_interface(name):
    kind = kind_named(name)
    assert isinstance(kind, Kind) and kind.name == name
    assert issubclass(kind.Config, PhaseBase)
    literal = kind.Config.model_fields["kind"].annotation.__args__
    assert literal == (name,), "Config's kind literal is the kind's name"
    with pytest.raises(ValidationError):
        kind.Config.model_validate({"name": "x", "kind": "not-" + name})
    for suite in (kind.gate_suite, kind.verify_suite):
        assert (SUITES / f"{suite}.json").exists(), suite
        assert json.loads((SUITES / f"{suite}.json").read_text())["name"] == suite
    for method in REQUIRED:
        assert getattr(type(kind), method) is not getattr(Kind, method), f"{name} must implement {method}"
    assert kind.windowed in (True, False) and kind.changes_rows_in_place in (True, False)


def test_the_base_defaults_behave():
    class Bare(Kind):
        name = "bare_for_test"

    try:
        bare = kind_named("bare_for_test")
        for method in REQUIRED:
            with pytest.raises(NotImplementedError):
                getattr(bare, method)(*([None] * {"build_plan": 4, "selection": 2, "verify": 3}[method]))
        cfg = type("Cfg", (), {"table": "t", "name": "p"})()
        assert bare.tables(cfg) == ["t"] and bare.backfill(cfg) is None
        assert bare.health(cfg, None, None, None, {"t"}) == []
        with pytest.raises(TypeError):
            type("Again", (Kind,), {"name": "bare_for_test"})  # a second kind of the same name
    finally:
        Kind.registry.pop("bare_for_test", None)


def test_an_unknown_kind_names_the_closest():
    with pytest.raises(BadInput, match="did you mean 'retention'"):
        kind_named("retension")


def _surface() -> dict:
    from pipelines import definitions

    defs = definitions.defs
    graph = defs.resolve_asset_graph()
    jobs = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        selected = sorted(key.to_user_string() for key in job.asset_layer.executable_asset_keys) \
            if job.asset_layer else []
        jobs[job.name] = {"assets": selected, "partitioned": job.partitions_def is not None}
    return {
        "assets": {key.to_user_string(): {"group": graph.get(key).group_name, "kind": graph.get(key).tags.get("dbsweep/kind")}
                   for key in sorted(graph.get_all_asset_keys())},
        "checks": sorted(f"{key.asset_key.to_user_string()}:{key.name}" for key in graph.asset_check_keys),
        "jobs": jobs,
        "schedules": {s.name: {"cron": s.cron_schedule, "job": s.job_name, "status": str(s.default_status)}
                      for s in sorted(defs.schedules or [], key=lambda s: s.name)},
        "sensors": sorted(s.name for s in defs.sensors or []),
    }


def test_the_dagster_surface_is_the_reviewed_one():
    surface = _surface()
    if os.environ.get("DBSWEEP_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(surface, indent=1, sort_keys=True) + "\n")
    assert surface == json.loads(SNAPSHOT.read_text())
