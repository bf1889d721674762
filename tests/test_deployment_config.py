"""The README's deployment settings load under Dagster's own config validation: the base
dagster.yaml as an instance config, each run launcher against its class's schema."""

from __future__ import annotations

import re
from importlib import import_module

import yaml

from tests.conftest import ROOT


def _blocks() -> dict[str, dict]:
    text = (ROOT / "README.md").read_text()
    return {name: yaml.safe_load(body) for name, body in
            re.findall(r"<!-- deployment: (\w+) -->\n```yaml\n(.*?)```", text, flags=re.S)}


def test_the_readme_deployment_settings_validate(tmp_path, monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config

    blocks = _blocks()
    assert set(blocks) == {"base", "docker", "k8s"}, set(blocks)
    for name in ("docker", "k8s"):
        settings = {**blocks["base"], **blocks[name]}
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(settings))
        dagster_instance_config(str(tmp_path))  # raises on a bad instance config
        launcher = settings["run_launcher"]
        klass = getattr(import_module(launcher["module"]), launcher["class"])
        result = process_config(klass.config_type(), launcher["config"])
        assert result.success, (name, [e.message for e in result.errors])
    broken = {**blocks["k8s"]["run_launcher"]["config"], "job_namespace": 3}
    from dagster_k8s import K8sRunLauncher

    assert not process_config(K8sRunLauncher.config_type(), broken).success  # the check can fail
