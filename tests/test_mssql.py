"""Every T-SQL statement dbsweep sends, compiled with SQLAlchemy's mssql dialect (pymssql) and
asserted on its text: also the forms no server here runs (the SQL Server tier, tests/test_tsql_*.py,
executes the rest on Babelfish)."""

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects.mssql import pymssql

from dbsweep.archive import ArchiveTables, archive_batches_for, archive_table_for
from dbsweep.dialects.mssql import (
    DEPENDENT_OBJECTS,
    INBOUND_FOREIGN_KEYS,
    TRIGGERS_ON,
    MssqlDialect,
    create_schema_statement,
    delete_statement,
    identity_insert_statement,
    lock_timeout_statement,
    move_statement,
    rename_statement,
    update_statement,
)
from dbsweep.keys import after_key, up_to_key
from dbsweep.kinds import reset, retention
from dbsweep.kinds.reset import previous_table_for
from dbsweep.plan import Step

MSSQL = pymssql.dialect()


def sql(stmt) -> str:
    return str(stmt.compile(dialect=MSSQL, compile_kwargs={"render_postcompile": True}))


def orders_table() -> sa.Table:
    return sa.Table(
        "FACT_ORDER_LIST", sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("AAG ORDER NUMBER", sa.String(50)),
        sa.Column("ORDER_TYPE", sa.String(20)),
        sa.Column("sync_state", sa.String(20)),
        sa.Column("action_type", sa.String(20)),
        sa.Column("UPDATED AT", sa.DateTime(timezone=True)),
        schema="dbo",
    )


def retention_window(table):
    step = Step(table="dbo.FACT_ORDER_LIST", walk="key", key=["id"], rows_selected=1, batch_size=500,
                spec={"time_column": "UPDATED AT", "cutoff": datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat()})
    keys = [table.c.id]
    return sa.and_(retention.selection(table, step), after_key(keys, [100]), up_to_key(keys, [900]))


def test_lock_timeout():
    assert sql(lock_timeout_statement(2.0)) == "SET LOCK_TIMEOUT 2000"


def test_delete_top_with_brackets_and_output_into_the_archive():
    table = orders_table()
    archive = archive_table_for(table)
    text = sql(delete_statement(MSSQL, table, retention_window(table), 500, archive, {"dbsweep_batch": 42}))
    # SQLAlchemy brackets every name that needs it (spaces, capitals, reserved words)
    assert text.startswith("DELETE TOP (500) FROM dbo.[FACT_ORDER_LIST] OUTPUT deleted.id, deleted.[AAG ORDER NUMBER], "
                           "deleted.[ORDER_TYPE], deleted.sync_state, deleted.action_type, deleted.[UPDATED AT], "
                           ":dbsweep_batch ")
    assert ("INTO dbo.[FACT_ORDER_LIST__archive] (id, [AAG ORDER NUMBER], [ORDER_TYPE], sync_state, "
            "action_type, [UPDATED AT], dbsweep_batch) WHERE ") in text
    # the batch is numbered first, in the same transaction: its number comes back by OUTPUT
    batches = archive_batches_for(archive)
    numbered = sql(sa.insert(batches).values(dbsweep_run_id="r1", dbsweep_batch_no=3).returning(batches.c.dbsweep_batch))
    assert numbered == ("INSERT INTO dbo.[FACT_ORDER_LIST__archive_batches] (dbsweep_run_id, dbsweep_batch_no) "
                        "OUTPUT inserted.dbsweep_batch VALUES (:dbsweep_run_id, :dbsweep_batch_no)")
    where = text[text.index(" WHERE "):]
    assert "dbo.[FACT_ORDER_LIST].[UPDATED AT] < :" in where
    assert "dbo.[FACT_ORDER_LIST].id > :" in where and "dbo.[FACT_ORDER_LIST].id <= :" in where


def test_delete_without_archive_and_to_parquet():
    table = orders_table()
    plain = sql(delete_statement(MSSQL, table, retention_window(table), 500))
    assert plain.startswith("DELETE TOP (500) FROM dbo.[FACT_ORDER_LIST] WHERE ") and "OUTPUT" not in plain
    rows = sql(delete_statement(MSSQL, table, retention_window(table), 500, output_rows=True))
    assert " OUTPUT deleted.id, deleted.[AAG ORDER NUMBER]" in rows and " INTO " not in rows


def test_batch_boundary_uses_offset_fetch_in_key_order():
    table = orders_table()
    keys = [table.c.id]
    text = sql(sa.select(*keys).where(retention_window(table)).order_by(*keys).offset(499).limit(1))
    # without a live server SQLAlchemy assumes no OFFSET/FETCH and numbers the rows instead
    assert "ROW_NUMBER() OVER (ORDER BY dbo.[FACT_ORDER_LIST].id)" in text
    assert "WHERE mssql_rn > :param_1 AND mssql_rn <= :param_2 + :param_1" in text


def test_composite_keys_expand_without_row_values():
    table = sa.Table("agg 1m", sa.MetaData(), sa.Column("client id", sa.Integer, primary_key=True),
                     sa.Column("ts", sa.DateTime, primary_key=True), schema="dbo")
    text = sql(sa.select(table).where(after_key([table.c["client id"], table.c.ts], [5, datetime(2026, 1, 1)])))
    assert ("WHERE dbo.[agg 1m].[client id] > :client_id_1 OR dbo.[agg 1m].[client id] = :client_id_2 "
            "AND dbo.[agg 1m].ts > :ts_1") in text


def test_reset_update_saves_previous_values_with_output_into():
    table = orders_table()
    spec = {"rules": [
        {"name": "test PO", "match": {"column": "AAG ORDER NUMBER", "equals": "GREYSON-PO-4755"},
         "set": {"sync_state": "PENDING", "action_type": "INSERT"}},
        {"name": "cancelled", "match": {"column": "ORDER_TYPE", "in": ["CANCELLED", "VOID"]},
         "set": {"sync_state": "EXISTING", "action_type": "EXISTING"}},
        {"match": "otherwise", "set": {"sync_state": "COMPLETED", "action_type": "NONE"}},
    ], "columns": ["action_type", "sync_state"]}
    previous = previous_table_for(table, spec)
    step = Step(table="dbo.FACT_ORDER_LIST", walk="key", key=["id"], rows_selected=1, batch_size=500, spec=spec)
    where = sa.and_(reset.selection(table, step), table.c.id > 100, table.c.id <= 900)
    text = sql(update_statement(MSSQL, table, previous, reset.targets(table, spec["rules"]), where,
                                {"dbsweep_run_id": "r1", "dbsweep_batch_no": 1}))
    assert text.startswith("UPDATE dbo.[FACT_ORDER_LIST] SET sync_state=CASE WHEN ")
    assert "WHEN (1 = 1) THEN :param_3 ELSE dbo.[FACT_ORDER_LIST].sync_state END" in text  # otherwise
    assert "NOT EXISTS (SELECT dbo.[FACT_ORDER_LIST].action_type INTERSECT SELECT CASE" in text  # IS DISTINCT FROM
    assert "dbo.[FACT_ORDER_LIST].[AAG ORDER NUMBER] = :" in text
    assert "dbo.[FACT_ORDER_LIST].[ORDER_TYPE] IN (:" in text  # the IN list expanded for T-SQL
    assert ("ELSE dbo.[FACT_ORDER_LIST].action_type END OUTPUT deleted.id, deleted.action_type, deleted.sync_state, "
            ":dbsweep_run_id, :dbsweep_batch_no, "
            "SYSUTCDATETIME() INTO dbo.[FACT_ORDER_LIST__previous] (id, action_type, sync_state, "
            "dbsweep_run_id, dbsweep_batch_no, dbsweep_archived_at) WHERE ") in text
    assert text.index(" OUTPUT ") < text.index(" WHERE ")


def test_retire_reads_the_sys_catalog_and_renames_with_sp_rename():
    assert "sys.foreign_keys" in sql(INBOUND_FOREIGN_KEYS) and "referenced_object_id = OBJECT_ID(:t)" in sql(INBOUND_FOREIGN_KEYS)
    assert "sys.sql_expression_dependencies" in sql(DEPENDENT_OBJECTS) and "referenced_id = OBJECT_ID(:t)" in sql(DEPENDENT_OBJECTS)
    assert "sys.triggers WHERE parent_id = OBJECT_ID(:t)" in sql(TRIGGERS_ON)
    table = sa.Table("ORDER_LIST_DELTA", sa.MetaData(), schema="dbo")
    rename = rename_statement(MSSQL, table, "ORDER_LIST_DELTA__retired_20261123")
    assert sql(rename) == "EXEC sp_rename @objname = :old, @newname = :new, @objtype = 'OBJECT'"
    assert rename.compile(dialect=MSSQL).params == {"old": "dbo.ORDER_LIST_DELTA", "new": "ORDER_LIST_DELTA__retired_20261123"}
    spaced = rename_statement(MSSQL, sa.Table("Order List", sa.MetaData(), schema="dbo"), "x")
    assert spaced.compile(dialect=MSSQL).params["old"] == "dbo.Order List"  # the form both servers find
    dotted = rename_statement(MSSQL, sa.Table("a.b", sa.MetaData(), schema="dbo"), "x")
    assert dotted.compile(dialect=MSSQL).params["old"] == "dbo.[a.b]"  # only brackets can say this one
    assert sql(move_statement(MSSQL, table, "dbsweep_archive")) == "ALTER SCHEMA dbsweep_archive TRANSFER dbo.[ORDER_LIST_DELTA]"
    assert sql(create_schema_statement(MSSQL, "dbsweep_archive")) == \
        "IF SCHEMA_ID(:s) IS NULL EXEC('CREATE SCHEMA dbsweep_archive')"


def test_restore_insert_skips_existing_keys():
    from dbsweep.undo import _insert_from_archive_statement

    table = orders_table()
    archive = archive_table_for(table)
    text = sql(_insert_from_archive_statement(table, [table.c.id], ArchiveTables(archive, archive_batches_for(archive)),
                                              "r1", 3))
    assert text.startswith("INSERT INTO dbo.[FACT_ORDER_LIST] (id, [AAG ORDER NUMBER],")
    assert ("WHERE dbo.[FACT_ORDER_LIST__archive].dbsweep_batch = (SELECT dbo.[FACT_ORDER_LIST__archive_batches]."
            "dbsweep_batch \nFROM dbo.[FACT_ORDER_LIST__archive_batches] \nWHERE dbo.[FACT_ORDER_LIST__archive_batches]."
            "dbsweep_run_id = :dbsweep_run_id_1 AND dbo.[FACT_ORDER_LIST__archive_batches].dbsweep_batch_no = "
            ":dbsweep_batch_no_1) AND NOT (EXISTS (SELECT") in text
    assert "WHERE dbo.[FACT_ORDER_LIST].id = dbo.[FACT_ORDER_LIST__archive].id))" in text


def test_restore_into_an_identity_table_turns_identity_insert_on_for_the_insert_only():
    """SQL Server refuses explicit values for any IDENTITY column unless IDENTITY_INSERT is on, and
    SQLAlchemy turns it on by itself only for INSERT ... VALUES naming the column, not for the
    INSERT ... SELECT a table-archive restore sends: dbsweep turns it on, then off."""
    from dbsweep.dialects.postgresql import PostgresDialect
    from dbsweep.undo import _archived_rows

    table = sa.Table("FACT_ORDER_LIST", sa.MetaData(), sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
                     sa.Column("ORDER_TYPE", sa.String(20)), schema="dbo")  # as SQLAlchemy reflects an IDENTITY
    plain = orders_table()
    assert MssqlDialect().refuses_explicit_identity(table) and not MssqlDialect().refuses_explicit_identity(plain)
    assert not PostgresDialect().refuses_explicit_identity(table)  # BY DEFAULT takes values as given
    always = sa.Table("t", sa.MetaData(), sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True))
    assert PostgresDialect().refuses_explicit_identity(always)
    assert sql(identity_insert_statement(MSSQL, table, True)) == "SET IDENTITY_INSERT dbo.[FACT_ORDER_LIST] ON"
    assert sql(identity_insert_statement(MSSQL, table, False)) == "SET IDENTITY_INSERT dbo.[FACT_ORDER_LIST] OFF"
    archive = archive_table_for(table)
    names, source = _archived_rows(table, [table.c.id], ArchiveTables(archive, archive_batches_for(archive)), "r1", 3)
    insert = sql(sa.insert(table).from_select(names, source))
    assert insert.startswith("INSERT INTO dbo.[FACT_ORDER_LIST] (id, [ORDER_TYPE]) SELECT "
                             "dbo.[FACT_ORDER_LIST__archive].id, ")  # the archived ids go back as they were
    odd = sa.Table("x]; DROP TABLE y; --", sa.MetaData(), sa.Column("id", sa.Integer, sa.Identity()))
    assert sql(identity_insert_statement(MSSQL, odd, True)) == "SET IDENTITY_INSERT [x]]; DROP TABLE y; --] ON"


def test_injection_in_names_stays_inside_brackets():
    evil = sa.Table("t]; DROP TABLE x; --", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), schema="dbo")
    text = sql(delete_statement(MSSQL, evil, evil.c.id > 1, 10))
    assert text == "DELETE TOP (10) FROM dbo.[t]]; DROP TABLE x; --] WHERE dbo.[t]]; DROP TABLE x; --].id > :id_1"


def test_mssql_urls_use_pymssql(tmp_path, monkeypatch):
    from dbsweep.policy import load_policy
    from dbsweep.target import resolve_url

    path = tmp_path / "o.toml"
    path.write_text('[policy]\nname = "o"\n[database]\ndefault_env = "prod"\n'
                    'env.prod = { url_env = "O_URL", protected = true }\n'
                    '[[phase]]\nname = "r"\nkind = "retire"\ntables = ["ORDER_LIST_DELTA"]\n')
    monkeypatch.setenv("O_URL", "mssql://sweeper:S3cret@sqlhost:1433/orders")
    url = resolve_url(load_policy(path), "prod")
    assert url.drivername == "mssql+pymssql"
    assert sa.create_engine(url).dialect.driver == "pymssql"
    assert "S3cret" not in url.render_as_string(hide_password=True)


def test_reset_restore_puts_previous_values_back():
    table = orders_table()
    spec = {"rules": [{"match": "otherwise", "set": {"sync_state": "COMPLETED"}}], "columns": ["sync_state"]}
    step = Step(table="dbo.FACT_ORDER_LIST", walk="key", key=["id"], rows_selected=1, batch_size=500, spec=spec)
    text = sql(reset.put_back_statement(table, previous_table_for(table, spec), step, "r1", 2))
    # one joined UPDATE ... FROM per batch (a correlated subquery per column and row was quadratic)
    assert text.startswith("UPDATE dbo.[FACT_ORDER_LIST] SET sync_state=dbo.[FACT_ORDER_LIST__previous].sync_state "
                           "FROM dbo.[FACT_ORDER_LIST], dbo.[FACT_ORDER_LIST__previous] WHERE ")
    assert "dbo.[FACT_ORDER_LIST__previous].id = dbo.[FACT_ORDER_LIST].id" in text and "SELECT" not in text


def test_phase_lock_is_a_session_applock():
    from dbsweep.dialects.mssql import APPLOCK, RELEASE_APPLOCK

    assert sql(APPLOCK) == ("DECLARE @r int; EXEC @r = sp_getapplock @Resource = :k, @LockMode = 'Exclusive', "
                            "@LockOwner = 'Session', @LockTimeout = 0; SELECT @r")
    assert sql(RELEASE_APPLOCK) == "EXEC sp_releaseapplock @Resource = :k, @LockOwner = 'Session'"


def test_cascade_statements():
    from dbsweep.kinds import cascade

    contacts = sa.Table("contacts", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True),
                        sa.Column("object_type_id", sa.Integer), schema="dbo")
    addresses = sa.Table("addresses", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True),
                         sa.Column("object_type_id", sa.Integer), sa.Column("object_id", sa.BigInteger), schema="dbo")
    spec = {"table": "addresses", "type_column": "object_type_id", "id_column": "object_id", "type_value": 49}
    where = cascade.children_of(addresses, spec, lambda pointer: pointer.in_([11, 12, 13]))
    text = sql(delete_statement(MSSQL, addresses, where, 500))
    assert text == ("DELETE TOP (500) FROM dbo.addresses WHERE dbo.addresses.object_type_id = :object_type_id_1 "
                    "AND dbo.addresses.object_id IN (:object_id_1_1, :object_id_1_2, :object_id_1_3)")
    guard = cascade.childless(addresses, spec, contacts, contacts.c.id)  # what the walker's parent delete adds
    parents = sql(sa.delete(contacts).where(contacts.c.id.in_([11, 12, 13]), guard))
    assert parents.startswith("DELETE FROM dbo.contacts WHERE dbo.contacts.id IN (")
    assert ("NOT (EXISTS (SELECT :param_1 AS anon_1 FROM dbo.addresses WHERE dbo.addresses.object_type_id = "
            ":object_type_id_1 AND dbo.addresses.object_id = dbo.contacts.id))") in " ".join(parents.split())


def test_newest_activity_needs_no_greatest():
    """GREATEST exists only from SQL Server 2022: the newest of several activity columns is the
    MAX over them as rows (NULLs ignored, as PostgreSQL's greatest() does)."""
    from dbsweep.dialects.functions import latest_of

    contacts = sa.Table("contacts", sa.MetaData(), sa.Column("id", sa.BigInteger, primary_key=True),
                        sa.Column("updated_at", sa.DateTime), sa.Column("last login", sa.DateTime), schema="dbo")
    text = " ".join(sql(sa.select(contacts.c.id).where(latest_of(contacts.c.updated_at, contacts.c["last login"])
                                                       < sa.literal(1))).split())
    assert "greatest" not in text.lower()
    assert ("(SELECT max(v) FROM (SELECT dbo.contacts.updated_at AS v UNION ALL "
            "SELECT dbo.contacts.[last login] AS v) AS latest) <") in text


def test_discovery_reads_sql_server_keeps_and_babelfish_lacks():
    """What discover reads only on SQL Server (Babelfish has none of these views and parses
    TABLESAMPLE without sampling): sizes from sys.dm_db_partition_stats, reads and writes from
    sys.dm_db_index_usage_stats of this database, and a page sample; each parses as T-SQL, and
    without the counters none of those views is named."""
    import sqlglot

    from dbsweep.dialects import mssql_discover

    def parsed(stmt) -> str:
        bound = stmt.bindparams(**{name: [1] for name in stmt._bindparams})  # each list: one value
        return sqlglot.parse_one(sql(bound), read="tsql").sql("tsql")

    tables = " ".join(parsed(mssql_discover.tables_statement(True)).split())
    assert "SUM(ps.reserved_page_count), 0) * 8192 FROM sys.dm_db_partition_stats AS ps" in tables
    assert "SUM(u.user_seeks + u.user_scans + u.user_lookups), 0) FROM sys.dm_db_index_usage_stats AS u" in tables
    assert "u.database_id = DB_ID()" in tables and "SUM(u.user_updates)" in tables
    indexes = " ".join(parsed(mssql_discover.indexes_statement(True)).split())
    assert "ps.index_id = i.index_id" in indexes and "u.index_id = i.index_id" in indexes
    for stmt in (mssql_discover.tables_statement(False), mssql_discover.indexes_statement(False)):
        assert "dm_db" not in parsed(stmt)
    sample = sql(mssql_discover.sample_statement(MSSQL, "dbo", "Order List", ["Task Pk", "created_at"], 2.5))
    assert sample == "SELECT [Task Pk], created_at FROM dbo.[Order List] TABLESAMPLE (2.500000 PERCENT) REPEATABLE (42)"
    assert parsed(mssql_discover.sample_statement(MSSQL, "dbo", "Order List", ["id"], 2.5))
