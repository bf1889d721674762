"""Human durations in policies: "7 days", "90 days", "2 years", "36 hours", "1 week", "200 ms"."""

import re
from datetime import timedelta

from .errors import BadInput


class DurationError(BadInput, ValueError):
    """A ValueError too, so pydantic reports it against the policy key that holds it."""


_UNITS = {
    "millisecond": 0.001,
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}
_ALIASES = {"ms": "millisecond", "s": "second", "sec": "second", "min": "minute", "h": "hour", "d": "day", "w": "week", "y": "year"}
MAX_SECONDS = 1000 * _UNITS["year"]  # a cutoff of now minus this stays a valid date
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")


def _unit(word: str) -> str | None:
    word = _ALIASES.get(word, word)
    if word in _UNITS:
        return word
    if word.endswith("s") and word[:-1] in _UNITS:
        return word[:-1]
    return None


def parse_duration(text: str) -> timedelta:
    """Parse "7 days", "1 day 12 hours", "90d". Months are 30 days, years 365 days."""
    if not isinstance(text, str):
        raise DurationError(f"malformed duration {text!r}: expected text like '7 days'")
    cleaned = text.strip().lower()
    seconds = 0.0
    pos = 0
    for match in _PART.finditer(cleaned):
        if cleaned[pos : match.start()].strip(" ,") or (unit := _unit(match.group(2))) is None:
            raise DurationError(f"malformed duration {text!r}: expected text like '7 days'")
        seconds += float(match.group(1)) * _UNITS[unit]
        pos = match.end()
    if pos == 0 or cleaned[pos:].strip():
        raise DurationError(f"malformed duration {text!r}: expected text like '7 days'")
    if seconds <= 0:
        raise DurationError(f"duration {text!r} must be longer than zero")
    if seconds > MAX_SECONDS:
        raise DurationError(f"duration {text!r} is too long (at most 1000 years)")
    return timedelta(seconds=seconds)
