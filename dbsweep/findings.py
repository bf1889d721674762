"""One line of `dbsweep health`: a check, its subject, what was found, and how bad it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

OK, WARN, PROBLEM = "ok", "warn", "problem"


@dataclass
class Finding:
    check: str
    subject: str
    value: str
    status: str = OK


def age(span: timedelta | float) -> str:
    seconds = span.total_seconds() if isinstance(span, timedelta) else float(span)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} seconds"
