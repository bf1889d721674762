"""A draft policy from a discovery: every proposed phase, its evidence in comments above it, nothing
scheduled to apply. Written with tomlkit (comments kept), never a URL: the database is named as
the source policy names it, or by an environment variable."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import datetime, timezone
from pathlib import Path

import tomlkit

from .discover import Discovery
from .errors import BadInput

NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def database_block(source_policy: Path | None, database: str | None, url_env: str | None) -> dict:
    """The [database] table: the source policy's own (env names and url_env only, as it wrote
    them), an environment variable's name, or the embedded server's database."""
    if source_policy is not None:
        return tomllib.loads(source_policy.read_text())["database"]
    if url_env is not None:
        return {"default_env": "dev", "env": {"dev": {"url_env": url_env}}}
    return {"default_env": "dev", "database_name": database, "env": {"dev": {"url": "embedded"}}}


def draft(discovery: Discovery, path: Path, database: dict) -> str:
    name = path.stem
    if not NAME.match(name):
        raise BadInput(f"--write-policy {path}: a policy's name is its file name, letters, digits, _ and - only")
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"Drafted by `dbsweep discover` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
                            f"database {discovery.database!r} ({discovery.tables} tables, {discovery.seconds:.1f} s)."))
    doc.add(tomlkit.comment("Every phase is a proposal: read its evidence, then `dbsweep plan` it. Nothing here is "
                            "scheduled, and a phase runs only when you run it."))
    doc.add(tomlkit.nl())
    doc["policy"] = {"name": name, "description": f"drafted by dbsweep discover from {discovery.database}"}
    doc["database"] = database
    phases = tomlkit.aot()
    used: set[str] = set()
    written: list[dict] = []
    for proposal in (p for p in discovery.proposals if p.phase is not None):
        if proposal.phase in written:  # the same phase found from another table (a parent's other children)
            continue
        written.append(proposal.phase)
        table = tomlkit.table()
        table.add(tomlkit.comment(f"{proposal.kind} on {proposal.table}: {proposal.why} ({proposal.sure})"))
        table.add(tomlkit.comment(f"evidence: {json.dumps(proposal.evidence, default=str)}"))
        base = re.sub(r"[^A-Za-z0-9]+", "_", f"{proposal.kind}_{proposal.table}").strip("_").lower()[:50]
        phase_name, n = base, 2
        while phase_name in used:
            phase_name, n = f"{base}_{n}", n + 1
        used.add(phase_name)
        table["name"] = phase_name
        for key, value in proposal.phase.items():
            table[key] = value
        phases.append(table)
    if phases:
        doc["phase"] = phases
    return tomlkit.dumps(doc)
