"""Seed 001's orders database: FACT_ORDER_LIST (column names with spaces and capitals, sync_state,
action_type, ORDER_TYPE with CANCELLED), the empty ORDER_LIST_DELTA and ORDER_LIST_LINES_DELTA left
over from the DELTA architecture, and the swp_ORDER_LIST_SYNC staging table."""

from __future__ import annotations

import sqlalchemy as sa

ORDERS_PER_SCALE = 20_000
TEST_PO = "GREYSON-PO-4755"
TEST_PO_LINES = 12

DDL = """
CREATE TABLE "FACT_ORDER_LIST" (
    "id" bigint PRIMARY KEY,
    "AAG ORDER NUMBER" text NOT NULL,
    "CUSTOMER NAME" text NOT NULL,
    "PO NUMBER" text,
    "ORDER_TYPE" text NOT NULL,
    "ORDER QTY" integer NOT NULL,
    "sync_state" text,
    "action_type" text,
    "UPDATED AT" timestamptz NOT NULL
);
CREATE TABLE "ORDER_LIST_DELTA" (
    "id" bigint PRIMARY KEY, "AAG ORDER NUMBER" text, "sync_state" text, "action_type" text, "delta_at" timestamptz
);
CREATE TABLE "ORDER_LIST_LINES_DELTA" (
    "line_uuid" uuid PRIMARY KEY, "record_uuid" uuid, "size_code" text, "qty" integer, "sync_state" text
);
CREATE TABLE "swp_ORDER_LIST_SYNC" (
    "id" bigint PRIMARY KEY, "AAG ORDER NUMBER" text NOT NULL, "loaded_at" timestamptz NOT NULL DEFAULT now()
)
"""

LOAD = """
INSERT INTO "FACT_ORDER_LIST"
SELECT g,
       CASE WHEN g <= :test_lines THEN :test_po ELSE 'AAG-' || lpad((g / 4)::text, 7, '0') END,
       (ARRAY['GREYSON', 'ACME OUTDOOR', 'NORTHWIND', 'BLUE HARBOR'])[1 + mod(g, 4)],
       'PO ' || mod(g * 37, 9973),
       CASE WHEN mod(g, 19) = 0 THEN 'CANCELLED' WHEN mod(g, 7) = 0 THEN 'REORDER' ELSE 'ACTIVE' END,
       1 + mod(g * 13, 500),
       (ARRAY['PENDING', 'COMPLETED', NULL, 'FAILED'])[1 + mod(g * 7, 4)],
       (ARRAY['INSERT', 'UPDATE', 'NONE', NULL])[1 + mod(g * 11, 4)],
       now() - make_interval(hours => mod(g, 5000))
FROM generate_series(1, :orders) g;
INSERT INTO "swp_ORDER_LIST_SYNC" ("id", "AAG ORDER NUMBER")
SELECT "id", "AAG ORDER NUMBER" FROM "FACT_ORDER_LIST" WHERE "AAG ORDER NUMBER" = :test_po
"""


def drop_all(conn: sa.Connection) -> None:
    """Also the tables an earlier demo retired (renamed `__retired_<date>` or moved to dbsweep_archive)."""
    names = conn.execute(sa.text(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
        "WHERE schemaname IN ('public', 'dbsweep_archive') AND (tablename IN ('FACT_ORDER_LIST', "
        "'ORDER_LIST_DELTA', 'ORDER_LIST_LINES_DELTA', 'swp_ORDER_LIST_SYNC') OR tablename LIKE 'ORDER_LIST%DELTA__%' "
        "OR tablename LIKE 'FACT_ORDER_LIST__%')")).scalars().all()
    for name in names:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name} CASCADE")


def create(engine: sa.Engine, scale: float = 1.0) -> dict[str, int]:
    """(Re)create the demo tables. Only ever called on the embedded database."""
    orders = max(int(ORDERS_PER_SCALE * scale), TEST_PO_LINES + 100)
    with engine.begin() as conn:
        drop_all(conn)
        for statement in DDL.split(";"):
            conn.exec_driver_sql(statement)
        for statement in LOAD.split(";"):
            conn.execute(sa.text(statement), {"orders": orders, "test_po": TEST_PO, "test_lines": TEST_PO_LINES})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql('VACUUM ANALYZE "FACT_ORDER_LIST"')
    return {"FACT_ORDER_LIST": orders, "ORDER_LIST_DELTA": 0, "ORDER_LIST_LINES_DELTA": 0}
