"""Seed 002's telemetry tables: events_seen (7-day retention, 14 days of data) and agg_1m
(90-day retention, about 200 days of data at scale 1).
Ids are not correlated with time, as in a real deduplication table fed out of order."""

from __future__ import annotations

import sqlalchemy as sa

EVENTS_PER_SCALE = 200_000
AGGREGATES_PER_SCALE = 100_000

DDL = """
DROP TABLE IF EXISTS events_seen, agg_1m;
CREATE TABLE events_seen (
    id bigint PRIMARY KEY,
    event_id uuid NOT NULL,
    client_id integer NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE agg_1m (
    client_id integer NOT NULL,
    target text NOT NULL,
    window_start_ts timestamptz NOT NULL,
    samples integer NOT NULL,
    latency_p50_ms double precision,
    latency_p95_ms double precision,
    PRIMARY KEY (client_id, target, window_start_ts)
);
"""

LOAD = """
INSERT INTO events_seen (id, event_id, client_id, created_at)
SELECT g, md5(g::text)::uuid, ((g::bigint * 7919) % 5000)::int,
       now() - make_interval(secs => ((hashtext(g::text)::bigint & 2147483647) % (14 * 86400)))
FROM generate_series(1, :events) g;
INSERT INTO agg_1m (client_id, target, window_start_ts, samples, latency_p50_ms, latency_p95_ms)
SELECT (g % 97), 'target-' || (g % 13),
       date_trunc('minute', now()) - make_interval(mins => 3 * g), 60, 20 + g % 30, 80 + g % 50
FROM generate_series(1, :aggregates) g;
CREATE INDEX idx_events_seen_created_at ON events_seen (created_at);
CREATE INDEX idx_agg_1m_window ON agg_1m (window_start_ts);
"""


def create(engine: sa.Engine, scale: float = 1.0) -> dict[str, int]:
    """(Re)create the demo tables. Only ever called on the embedded database."""
    counts = {"events_seen": int(EVENTS_PER_SCALE * scale), "agg_1m": int(AGGREGATES_PER_SCALE * scale)}
    with engine.begin() as conn:
        conn.exec_driver_sql(DDL)
        for statement in LOAD.split(";"):
            if statement.strip():
                conn.execute(sa.text(statement), {"events": counts["events_seen"], "aggregates": counts["agg_1m"]})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE events_seen")
        conn.exec_driver_sql("VACUUM ANALYZE agg_1m")
    return counts
