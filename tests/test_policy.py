"""Policy parsing and validation that needs no database."""

from datetime import timedelta

import pytest

from dbsweep.durations import parse_duration
from dbsweep.errors import BadInput
from dbsweep.policy import load_policy
from dbsweep.redact import redact
from tests.conftest import retention_policy, write_policy


@pytest.mark.parametrize("text,expected", [
    ("7 days", timedelta(days=7)), ("90d", timedelta(days=90)), ("1 day 12 hours", timedelta(hours=36)),
    ("2 years", timedelta(days=730)), ("1 week", timedelta(days=7)), ("500 seconds", timedelta(seconds=500)),
    ("200 ms", timedelta(milliseconds=200)), ("1 second 500 milliseconds", timedelta(seconds=1.5)),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7 dayz", "days", "7", "", "-1 day", "0 days", "0 ms", "7 days; DROP TABLE x"])
def test_malformed_durations(text):
    with pytest.raises(BadInput):
        parse_duration(text)


def test_policy_loads_the_shipped_examples():
    policy = load_policy("policies/telemetry.toml")
    assert [p.name for p in policy.phases] == ["events", "aggregates"]
    assert policy.database.env["prod"].protected


@pytest.mark.parametrize("extra,message", [
    ('tabel = "x"', "phase 'purge': unknown key 'tabel'"),
    ('expect = { max_rowz = 5 }', "unknown key 'expect.max_rowz'"),
    ('lock_timeout = "2 secondz"', "key 'lock_timeout': malformed duration '2 secondz'"),
    ('cutoff = 2099-01-01T00:00:00Z', "give exactly one of 'older_than' or 'cutoff'"),
    ('after = ["reindex"]', "unknown after-action 'reindex'"),
])
def test_policy_errors_name_file_phase_and_key(tmp_path, extra, message):
    path = retention_policy(tmp_path, "db", extra=extra)
    with pytest.raises(BadInput) as info:
        load_policy(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_unknown_kind(tmp_path):
    path = write_policy(tmp_path, '[[phase]]\nname = "x"\nkind = "purge"\n', "db")
    with pytest.raises(BadInput, match="phase 'x': key 'kind': unknown kind 'purge'"):
        load_policy(path)


def test_cutoff_in_the_future_is_refused(tmp_path):
    body = '[[phase]]\nname = "x"\nkind = "retention"\ntable = "t"\ntime_column = "c"\ncutoff = 2099-01-01T00:00:00Z\n'
    with pytest.raises(BadInput, match="cutoff 2099-01-01T00:00:00\\+00:00 is in the future"):
        load_policy(write_policy(tmp_path, body, "db"))


def test_redaction():
    assert redact("postgresql://app:s3cr3t@db.internal:5432/x") == "postgresql://app:***@db.internal:5432/x"
    assert "s3cr3t" not in redact("could not connect: password=s3cr3t host=x")
