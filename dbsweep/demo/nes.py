"""Seed 000's NES database, scaled down: `contacts` of object types 94 tenant, 49 community,
1 contact and 2 additional contact; polymorphic children `addresses`, `phones`, `emails`, `notes`
keyed by object_type_id + object_id (no foreign key possible) in the seed's proportions
(addresses >> phones ~ emails > notes); `contact_tags` and `contact_activity` with ordinary
foreign keys; `readings`, some referenced by `sm_usage` (billed)."""

from __future__ import annotations

import sqlalchemy as sa

# contacts per object type at scale 1: the seed's counts, tenants at 1% of 1.18M
TYPES = {94: 11_800, 49: 3_594, 1: 809, 2: 4_457}
READINGS_PER_SCALE = 100_000
TABLES = ["sm_usage", "readings", "contact_activity", "contact_tags", "notes", "emails", "phones", "addresses", "contacts"]

DDL = """
CREATE TABLE contacts (
    id bigint PRIMARY KEY,
    object_type_id integer NOT NULL,
    contact_type text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz,
    last_login_at timestamptz
);
CREATE INDEX contacts_type ON contacts (object_type_id);
CREATE TABLE addresses (id bigserial PRIMARY KEY, object_type_id integer NOT NULL, object_id bigint NOT NULL,
                        line1 text, city text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE phones (id bigserial PRIMARY KEY, object_type_id integer NOT NULL, object_id bigint NOT NULL,
                     number text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE emails (id bigserial PRIMARY KEY, object_type_id integer NOT NULL, object_id bigint NOT NULL,
                     address text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE notes (id bigserial PRIMARY KEY, object_type_id integer NOT NULL, object_id bigint NOT NULL,
                    body text, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX addresses_object ON addresses (object_type_id, object_id);
CREATE INDEX phones_object ON phones (object_type_id, object_id);
CREATE INDEX emails_object ON emails (object_type_id, object_id);
CREATE INDEX notes_object ON notes (object_type_id, object_id);
CREATE TABLE contact_tags (id bigserial PRIMARY KEY, contact_id bigint NOT NULL REFERENCES contacts (id), tag text);
CREATE INDEX contact_tags_contact ON contact_tags (contact_id);
CREATE TABLE contact_activity (id bigserial PRIMARY KEY, contact_id bigint NOT NULL REFERENCES contacts (id),
                               kind text, occurred_at timestamptz NOT NULL);
CREATE INDEX contact_activity_contact ON contact_activity (contact_id, occurred_at);
CREATE TABLE readings (id bigint PRIMARY KEY, meter_id integer NOT NULL, reading_date date NOT NULL, value numeric(12, 3));
CREATE INDEX readings_date ON readings (reading_date);
CREATE TABLE sm_usage (id bigserial PRIMARY KEY, reading_id bigint NOT NULL REFERENCES readings (id), billed_at date);
CREATE INDEX sm_usage_reading ON sm_usage (reading_id)
"""

# h(g, salt) is a stable pseudo-random number in [0, 1000) per contact
LOAD = """
INSERT INTO contacts
SELECT g, t.type_id,
       CASE WHEN mod(hashtext(g || 'ct') & 1023, 2) = 0 THEN 'Closed' ELSE 'Active' END,
       CASE WHEN (hashtext(g || 'nm') & 1023) < 100 THEN 'ZY ' ELSE 'Contact ' END || g,
       now() - interval '15 years',
       CASE WHEN (hashtext(g || 'in') & 1023) < 640
            THEN now() - interval '8 years' - make_interval(days => (hashtext(g || 'd') & 1023) * 2)
            ELSE now() - make_interval(days => (hashtext(g || 'd') & 1023)) END,
       CASE WHEN (hashtext(g || 'lg') & 1023) < 100 THEN now() - interval '30 days' END
FROM (SELECT g, CASE WHEN g <= :t94 THEN 94 WHEN g <= :t49 THEN 49 WHEN g <= :t1 THEN 1 ELSE 2 END AS type_id
      FROM generate_series(1, :contacts) g) t;
INSERT INTO addresses (object_type_id, object_id, line1, city)
SELECT c.object_type_id, c.id, s || ' Main St', 'Springfield' FROM contacts c, generate_series(1, 6) s
WHERE s <= 1 + mod(hashtext(c.id || 'a') & 1023, 6);
INSERT INTO phones (object_type_id, object_id, number)
SELECT c.object_type_id, c.id, '555-' || s FROM contacts c, generate_series(1, 3) s
WHERE s <= mod(hashtext(c.id || 'p') & 1023, 3) + (CASE WHEN mod(c.id, 2) = 0 THEN 1 ELSE 0 END);
INSERT INTO emails (object_type_id, object_id, address)
SELECT c.object_type_id, c.id, 'c' || c.id || '-' || s || '@example.com' FROM contacts c, generate_series(1, 3) s
WHERE s <= mod(hashtext(c.id || 'e') & 1023, 3) + (CASE WHEN mod(c.id, 3) = 0 THEN 1 ELSE 0 END);
INSERT INTO notes (object_type_id, object_id, body)
SELECT c.object_type_id, c.id, 'note' FROM contacts c WHERE mod(hashtext(c.id || 'n') & 1023, 5) < 4;
INSERT INTO addresses (object_type_id, object_id, line1, city)
SELECT 49, 900000000 + g, 'orphan', 'Nowhere' FROM generate_series(1, 5) g;
INSERT INTO contact_tags (contact_id, tag) SELECT id, 'vip' FROM contacts WHERE mod(id, 4) = 0;
INSERT INTO contact_activity (contact_id, kind, occurred_at)
SELECT id, 'payment', CASE WHEN mod(id, 5) = 0 THEN now() - interval '1 year' ELSE now() - interval '9 years' END
FROM contacts WHERE mod(id, 3) = 0;
INSERT INTO readings
SELECT g, mod(g, 997), current_date - (mod(hashtext(g || 'r') & 1048575, 1500))::int, (g % 1000) / 10.0
FROM generate_series(1, :readings) g;
INSERT INTO sm_usage (reading_id, billed_at)
SELECT id, reading_date + 30 FROM readings WHERE mod(id, 7) = 0
"""


def counts(scale: float) -> dict[str, int]:
    return {str(t): max(10, int(n * scale)) for t, n in TYPES.items()}


def create(engine: sa.Engine, scale: float = 1.0) -> dict[str, int]:
    """(Re)create the demo tables. Only ever called on the embedded database."""
    per_type = counts(scale)
    t94 = per_type["94"]
    t49 = t94 + per_type["49"]
    t1 = t49 + per_type["1"]
    contacts = t1 + per_type["2"]
    params = {"t94": t94, "t49": t49, "t1": t1, "contacts": contacts, "readings": max(100, int(READINGS_PER_SCALE * scale))}
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS " + ", ".join(TABLES) + " CASCADE")
        for statement in DDL.split(";"):
            conn.exec_driver_sql(statement)
        for statement in LOAD.split(";"):
            conn.execute(sa.text(statement), params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in TABLES:
            conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    return {"contacts": contacts, "readings": params["readings"]}
