"""Seed 004's folders database: applications, folders (`application_id`, `parent_id`, `name`; a
share of applications with 2 to 4 root folders whose child folders' names overlap), documents in
folders, and comments on folders and documents (polymorphic: `commentable_type`, `commentable_id`)."""

from __future__ import annotations

import sqlalchemy as sa

APPLICATIONS_PER_SCALE = 2_000
DDL = """
DROP TABLE IF EXISTS comments, documents, folders, applications CASCADE;
CREATE TABLE applications (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE folders (
    id bigserial PRIMARY KEY,
    application_id integer NOT NULL REFERENCES applications (id),
    parent_id bigint REFERENCES folders (id),
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT folders_parent_name UNIQUE (parent_id, name)
);
CREATE INDEX ON folders (application_id) WHERE parent_id IS NULL;
CREATE INDEX ON folders (parent_id);
CREATE TABLE documents (
    id bigserial PRIMARY KEY,
    folder_id bigint NOT NULL REFERENCES folders (id),
    name text NOT NULL,
    body text,
    CONSTRAINT documents_folder_name UNIQUE (folder_id, name)
);
CREATE TABLE comments (
    id bigserial PRIMARY KEY,
    commentable_type text NOT NULL,
    commentable_id bigint NOT NULL,
    body text NOT NULL
);
CREATE INDEX ON comments (commentable_type, commentable_id)
"""
LOAD = """
INSERT INTO applications SELECT a, 'app ' || a FROM generate_series(1, :apps) a;
-- every application one root folder, and one in four gets 1 to 3 more (created later)
INSERT INTO folders (application_id, parent_id, name, created_at)
SELECT a, NULL, 'root', timestamptz '2025-01-01' + make_interval(mins => a + r * 100000)
FROM generate_series(1, :apps) a, generate_series(0, 3) r
WHERE r = 0 OR (mod(a, 4) = 0 AND r <= 1 + mod(a, 3));
-- child folders under every root, the names overlapping between one application's roots
INSERT INTO folders (application_id, parent_id, name, created_at)
SELECT f.application_id, f.id, n, f.created_at + interval '1 hour'
FROM folders f, unnest(ARRAY['Documents', 'Photos', 'Invoices']) n
WHERE f.parent_id IS NULL AND (n <> 'Invoices' OR mod(f.id, 2) = 0);
-- documents in every child folder, some names the same in the overlapping folders
INSERT INTO documents (folder_id, name, body)
SELECT f.id, 'doc ' || d || '.pdf', 'content of ' || f.id || '/' || d
FROM folders f, generate_series(1, 4) d WHERE f.parent_id IS NOT NULL AND (d <= 2 OR mod(f.id + d, 3) = 0);
INSERT INTO comments (commentable_type, commentable_id, body)
SELECT 'folder', id, 'on folder ' || id FROM folders WHERE mod(id, 3) = 0;
INSERT INTO comments (commentable_type, commentable_id, body)
SELECT 'document', id, 'on document ' || id FROM documents WHERE mod(id, 5) = 0
"""


def create(engine: sa.Engine, scale: float = 1.0) -> dict[str, int]:
    """(Re)create the demo tables. Only ever called on the embedded database."""
    apps = max(int(APPLICATIONS_PER_SCALE * scale), 8)
    with engine.begin() as conn:
        for statement in DDL.split(";"):
            conn.exec_driver_sql(statement)
        for statement in LOAD.split(";"):
            conn.execute(sa.text(statement), {"apps": apps})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
        return {name: conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar()
                for name in ("applications", "folders", "documents", "comments")}
