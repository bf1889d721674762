"""Backfill windows on the command line: `2022-03` (a month), `2022-03-05` (a day), or
`START..END` (ISO dates or datetimes, END excluded). Times without a zone are UTC."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone

from .errors import BadInput
from .plan import as_utc

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_window(text: str) -> tuple[datetime, datetime]:
    text = text.strip()
    try:
        if ".." in text:
            start, end = (as_utc(datetime.fromisoformat(part.strip())) for part in text.split("..", 1))
        elif match := _MONTH.match(text):
            year, month = int(match.group(1)), int(match.group(2))
            start = datetime(year, month, 1, tzinfo=timezone.utc)
            end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
        else:
            start = datetime.combine(date.fromisoformat(text), time.min, tzinfo=timezone.utc)
            end = start + timedelta(days=1)
    except ValueError:
        raise BadInput(f"malformed window {text!r}: expected 2022-03, 2022-03-05 or START..END") from None
    if start >= end:
        raise BadInput(f"window {text!r} is empty: its start is not before its end")
    return start, end
