"""The peewee databases Heartbeat runs on: SQLite in WAL mode (the embedded default) and a pooled
MySQL/MariaDB connection. :mod:`heartbeat.db.database` wraps one of them as the app's one seam."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import peewee
import pymysql
from playhouse.pool import PooledMySQLDatabase

from heartbeat.config import DbAuth
from heartbeat.private_files import create_private_file, private_dir, private_file

# Our own column type for JSON kept as text, and every text column: LONGTEXT on MySQL, whose TEXT
# holds only 64 KiB, so that large results, error texts and extra-table values fit.
FIELD_TYPES_SQLITE = {"JSONTEXT": "TEXT"}
FIELD_TYPES_MYSQL = {"JSONTEXT": "LONGTEXT", "TEXT": "LONGTEXT", "DOUBLE": "DOUBLE"}
# Image IDs, tokens, names and origins are compared byte for byte, as on SQLite: MySQL's default
# collations would take "aB3" for "Ab3", and their PAD SPACE ones "cam1 " for "cam1".
NO_PAD_BINARY_COLLATIONS = {"mariadb": "utf8mb4_nopad_bin", "mysql": "utf8mb4_0900_bin"}

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 30_000,
    "foreign_keys": 1,
}


def sqlite_database(path: str | Path) -> peewee.SqliteDatabase:
    """An SQLite database in WAL mode whose transactions take the write lock up front.

    ``BEGIN IMMEDIATE`` makes a claim's read and its update one serialised step. The file and its
    folder are this user's alone (0600, 0700); SQLite makes its -wal and -shm files as the database's.
    """
    if str(path) != ":memory:":
        private_dir(Path(path).parent)
        create_private_file(path)
        for companion in ("-wal", "-shm"):
            private_file(f"{path}{companion}")
    return peewee.SqliteDatabase(
        str(path),
        pragmas=SQLITE_PRAGMAS,
        lock_type="IMMEDIATE",
        timeout=30,
        field_types=FIELD_TYPES_SQLITE,
    )


class QuickPooledMySQLDatabase(PooledMySQLDatabase):  # type: ignore[misc]  # peewee has no type hints
    """Peewee's pool, minus a round trip per request: a connection handed back moments ago is handed
    out again without a ping; only one that sat idle for ``PING_AFTER_IDLE_SECONDS`` is pinged first.
    A connection that died in between fails its statement, and ``Database.transaction`` reconnects."""

    PING_AFTER_IDLE_SECONDS = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._returned_at: dict[int, float] = {}

    def _is_closed(self, conn: Any) -> bool:
        key = self.conn_key(conn)
        if time.monotonic() - self._returned_at.get(key, 0.0) < self.PING_AFTER_IDLE_SECONDS:
            closed = not conn.open
        else:
            closed = bool(super()._is_closed(conn))
        if closed:
            self._returned_at.pop(key, None)  # the pool drops it
        return closed

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        if close_conn:
            self._returned_at.pop(self.conn_key(conn), None)
        else:
            self._returned_at[self.conn_key(conn)] = time.monotonic()
        super()._close(conn, close_conn)


def mysql_database(auth: DbAuth, *, max_connections: int = 32) -> peewee.Database:
    """A pooled MySQL/MariaDB connection, one connection per thread at a time."""
    return QuickPooledMySQLDatabase(
        auth.database,
        host=auth.host,
        port=auth.port,
        user=auth.user,
        password=auth.password,
        charset="utf8mb4",
        max_connections=max_connections,
        stale_timeout=300,
        timeout=30,
        field_types=FIELD_TYPES_MYSQL,
    )


# MySQL/MariaDB's "Unknown database" (the database named in db_auth does not exist), and "Access
# denied to database", which is what a user without rights on it is told whether or not it exists.
UNKNOWN_DATABASE_ERROR = 1049
DATABASE_ACCESS_DENIED_ERROR = 1044


def create_database_sql(name: str) -> str:
    """The statement that makes the database ``name`` for Heartbeat (each table sets its own collation)."""
    quoted = name.replace("`", "``")
    return f"CREATE DATABASE IF NOT EXISTS `{quoted}` CHARACTER SET utf8mb4"


def create_mysql_database(auth: DbAuth) -> None:
    """Create ``auth.database`` on its server, as ``auth.user``, when it is missing.

    Raises :class:`pymysql.err.OperationalError` when the user may not (1044, 1045) or the server
    does not answer.
    """
    connection = pymysql.connect(
        host=auth.host, port=auth.port, user=auth.user, password=auth.password, charset="utf8mb4", connect_timeout=30
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(create_database_sql(auth.database))
    finally:
        connection.close()
