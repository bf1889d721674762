"""Seed 003's Breezeway ETL database: six child tables in schema `breezeway` full of duplicates,
because the ETL's upsert had no conflict target, at the seed's ratios scaled down (scale 1 is a
hundredth of the seed's rows: about 380,000), and task_tags, which a unique constraint kept clean."""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA = "breezeway"
# table: (natural key, seed rows, seed distinct keys)
TABLES = {
    "task_requirements": (("task_pk", "requirement_id"), 24_174_099, 26_580),
    "property_photos": (("property_pk", "photo_id"), 10_192_750, 16_113),
    "reservation_guests": (("reservation_pk", "guest_id"), 1_763_359, 1_761_596),  # about none
    "task_assignments": (("task_pk", "assignee_id"), 1_485_262, 1_000),
    "task_photos": (("task_pk", "photo_id"), 715_312, 26_000),
    "task_comments": (("task_pk", "comment_id"), 14_664, 470),
}
SCALE_DIVISOR = 100


def sizes(scale: float) -> dict[str, tuple[int, int]]:
    """(rows, distinct keys) per table at `scale`, the seed's duplication ratio kept."""
    out = {}
    for name, (_, rows, keys) in TABLES.items():
        scaled = max(int(rows * scale / SCALE_DIVISOR), 10)
        out[name] = (scaled, max(1, min(scaled, round(scaled * keys / rows))))
    return out


def create(engine: sa.Engine, scale: float = 1.0) -> dict[str, int]:
    """(Re)create the demo tables. Only ever called on the embedded database. Row g of a table has
    natural key g mod keys, so every key's copies are spread over the whole table, and a created_at
    that does not follow g: the oldest copy is rarely the first one inserted."""
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.exec_driver_sql(f"CREATE SCHEMA {SCHEMA}")
        for name, (rows, keys) in sizes(scale).items():
            parent, child = TABLES[name][0]
            conn.exec_driver_sql(f"""
                CREATE TABLE {SCHEMA}.{name} (
                    id bigserial PRIMARY KEY, {parent} integer NOT NULL, {child} text NOT NULL,
                    details text, region_code text NOT NULL DEFAULT 'us',
                    created_at timestamptz NOT NULL DEFAULT now())""")
            conn.exec_driver_sql(f"CREATE INDEX ON {SCHEMA}.{name} ({parent})")
            conn.execute(sa.text(f"""
                INSERT INTO {SCHEMA}.{name} ({parent}, {child}, details, created_at)
                SELECT 1000 + mod(g, :keys) / 3, '{child[:-3]}-' || mod(g, :keys), 'etl run ' || (g / :keys),
                       timestamptz '2025-06-01' + make_interval(secs => (hashtext(g::text) & 1048575))
                FROM generate_series(0, :rows - 1) g"""), {"rows": rows, "keys": keys})
        conn.exec_driver_sql(f"""
            CREATE TABLE {SCHEMA}.task_tags (id bigserial PRIMARY KEY, task_pk integer NOT NULL,
                                             tag_pk integer NOT NULL, CONSTRAINT task_tags_unique UNIQUE (task_pk, tag_pk))""")
        conn.exec_driver_sql(f"INSERT INTO {SCHEMA}.task_tags (task_pk, tag_pk) SELECT g, mod(g, 40) "
                             "FROM generate_series(1, 500) g")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
    return {name: rows for name, (rows, _) in sizes(scale).items()}
