"""The connection itself on a real T-SQL engine (the SQL Server tier): what dbsweep's engine must
keep true whatever the server does with an error."""

import pytest
import sqlalchemy as sa


def test_after_an_error_the_server_rolled_back_the_next_transaction_is_still_one_transaction(ms):
    """Babelfish rolls the whole transaction back for an error it maps to no SQL Server number;
    pymssql's ROLLBACK then fails ("no transaction"), and it opens no new transaction: without the
    engine's care, the hidden first error is lost and every later statement commits on its own."""
    with ms.engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError) as raised:
            conn.execute(sa.text("SELECT * FROM [dbo].[no such table]"))
        assert "no such table" in str(raised.value.orig)  # the first error, not the failed ROLLBACK's
        conn.rollback()
        conn.execute(sa.text("CREATE TABLE [dbo].[Half Done] ([id] int)"))
        conn.execute(sa.text("INSERT INTO [dbo].[Half Done] VALUES (1)"))
        conn.rollback()
        assert conn.execute(sa.text("SELECT OBJECT_ID('dbo.[Half Done]')")).scalar() is None
    with ms.engine.connect() as conn:  # and a pooled connection returned in that state is whole again too
        with pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text("SELECT * FROM [dbo].[no such table]"))
    with ms.engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE [dbo].[Half Done] ([id] int)"))
        conn.rollback()
        assert conn.execute(sa.text("SELECT OBJECT_ID('dbo.[Half Done]')")).scalar() is None


def test_errors_are_read_by_what_they_mean(ms):
    from dbsweep.dialects.errors import TIMEOUT, meaning

    holder = ms.engine.connect()
    with ms.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE [dbo].[Locked Rows] ([id] int PRIMARY KEY, [v] int)"))
        conn.execute(sa.text("INSERT INTO [dbo].[Locked Rows] VALUES (1, 1)"))
    holder.execute(sa.text("UPDATE [dbo].[Locked Rows] SET [v] = 2 WHERE [id] = 1"))
    try:
        with ms.engine.connect() as conn:
            conn.execute(sa.text("SET LOCK_TIMEOUT 200"))
            with pytest.raises(sa.exc.DBAPIError) as raised:
                conn.execute(sa.text("DELETE FROM [dbo].[Locked Rows] WHERE [id] = 1"))
            assert meaning(raised.value) == TIMEOUT  # 1222 on SQL Server, its PostgreSQL message on Babelfish
            conn.rollback()
            with pytest.raises(sa.exc.DBAPIError) as raised:
                conn.execute(sa.text("SELEC 1"))
            assert meaning(raised.value) is None  # a syntax error is no outage: never retried
    finally:
        holder.rollback()
        holder.close()
